"""Every hostile bundle of the corpus is refused by verify, init and upgrade, naming the problem, writing nothing outside staging."""

from __future__ import annotations

import json
import shutil

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import airlock, require
from tests.hostile import cases

CASES = cases()


@pytest.fixture(scope="module")
def corpus(keys, tmp_path_factory):
    require("zstd")
    key = serialization.load_pem_private_key((keys["ed25519"] / "airlock.key").read_bytes(), None)
    out = tmp_path_factory.mktemp("hostile")
    return {case.name: _write(out, case, key) for case in CASES}


def _write(out, case, key):
    path = out / f"{case.name}{case.suffix}"
    path.write_bytes(case.make(key))
    return path


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30 and len({case.name for case in CASES}) == len(CASES)


def installed_root(tmp_path):
    """A node root that has serial 3 (v1.36.3) installed, so init and upgrade get as far as they can."""
    root = tmp_path / "root"
    state = root / "var/lib/airlock/state.json"
    state.parent.mkdir(parents=True)
    installed = {"serial": 3, "sha256": "0" * 64, "version": "v1.36.3", "name": "old", "command": "init", "role": "first-control-plane"}
    state.write_text(json.dumps({"installed": installed, "run": None}))
    return root


def outside_staging(root):
    allowed = ("var/lib/airlock/staging", "var/lib/airlock/state.json", "var/lib/airlock/.lock")
    found = {str(p.relative_to(root)) for p in root.rglob("*")}
    return {p for p in found if not p.startswith(allowed) and p not in ("var", "var/lib", "var/lib/airlock")}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_refused(case, corpus, keys, tmp_path):
    bundle = corpus[case.name]
    pub = keys["ed25519"] / "airlock.pub"
    if not case.node_only:
        result = airlock("verify", bundle, "--key", pub)
        assert result.returncode == 1, result.stdout
        assert case.expect in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # upgrade on a node that has serial 3; init on a fresh node (on an initialised one it refuses before reading further).
    for command in ("init", "upgrade"):
        installed = command == "upgrade" or case.node_only
        root = installed_root(tmp_path / command) if installed else tmp_path / command / "root"
        result = airlock(command, bundle, "--key", pub, "--root", root, "--ignore-preflight-errors", "all", "--skip-phases", "images")
        assert result.returncode == 1, (command, result.stderr)
        expect = ("than the installed" if command == "upgrade" else "already initialised at serial 3") if case.node_only else case.expect
        assert expect in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert outside_staging(root) == set(), command
        if installed:
            assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == 3
        else:
            assert json.loads((root / "var/lib/airlock/state.json").read_text() if (root / "var/lib/airlock/state.json").exists() else "{}").get("installed") is None
        shutil.rmtree(root)
