"""`airlock update-trusted-root`: a newer Sigstore trust root on the connected host, through its TUF repository.

The repository is real TUF metadata (python-tuf's), signed with keys generated here, publishing a
Sigstore trusted_root.json: airlock's shipped public root first, then a private Sigstore's (the
stand-in's), as a repository's operators would publish a new root.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from builder.build import DEFAULT_TRUSTED_ROOT
from tests.conftest import airlock
from tests.standin.sigstore import SigningStandin
from tests.standin.tuf import TufRepository


@pytest.fixture
def repository(tmp_path):
    repo = TufRepository(tmp_path / "tuf-repository").start()
    repo.publish("trusted_root.json", DEFAULT_TRUSTED_ROOT.read_bytes())
    (tmp_path / "root.json").write_bytes(repo.root_json)
    yield repo
    repo.close()


def update(repository: TufRepository, tmp_path: Path, *extra) -> object:
    return airlock("update-trusted-root", "--output", tmp_path / "trusted_root.json", "--tuf-url", repository.url, "--cache-dir", tmp_path / "cache", *extra)


def test_a_trust_root_is_fetched_through_tuf_verified_and_a_newer_one_replaces_it(repository, tmp_path):
    first = update(repository, tmp_path, "--tuf-root", tmp_path / "root.json")
    assert first.returncode == 0, first.stderr
    written = tmp_path / "trusted_root.json"
    assert written.read_bytes() == DEFAULT_TRUSTED_ROOT.read_bytes()
    assert f"sha256 {hashlib.sha256(written.read_bytes()).hexdigest()}" in first.stdout and f"--trusted-root {written}" in first.stdout
    # The operators publish a new root (here: a private Sigstore's). The kept TUF metadata is the start now: no --tuf-root.
    standin = SigningStandin(tmp_path / "standin")
    try:
        repository.publish("trusted_root.json", standin.trusted_root_path.read_bytes())
        second = update(repository, tmp_path)
        assert second.returncode == 0, second.stderr
        assert written.read_bytes() == standin.trusted_root_path.read_bytes()
    finally:
        standin.close()


def test_the_first_update_of_a_private_repository_needs_its_tuf_root(repository, tmp_path):
    refused = update(repository, tmp_path)
    assert refused.returncode == 1 and "no TUF root is kept for this repository yet; give --tuf-root FILE" in refused.stderr
    assert not (tmp_path / "trusted_root.json").exists()


def _tampered(repository: TufRepository) -> None:
    """The target's bytes changed on the server, its signed metadata not."""
    target = repository.directory / "targets" / "trusted_root.json"
    document = json.loads(target.read_bytes())
    document["tlogs"][0]["baseUrl"] = "https://rekor.attacker.example"
    target.write_bytes(json.dumps(document).encode())


def _another_key(repository: TufRepository) -> None:
    """Metadata signed by a key the TUF root does not name for the role."""
    from securesystemslib.signer import CryptoSigner

    repository.signers["targets"] = CryptoSigner.generate_ecdsa()
    repository.publish("trusted_root.json", DEFAULT_TRUSTED_ROOT.read_bytes() + b" ")


CASES = {
    "a target whose bytes are not the signed ones": (_tampered, "TUF update of trusted_root.json failed"),
    "targets metadata signed by another key": (_another_key, "TUF update of trusted_root.json failed"),
    "an expired timestamp": (
        lambda repo: repo.publish("trusted_root.json", DEFAULT_TRUSTED_ROOT.read_bytes(), timestamp_expires=datetime.now(UTC) - timedelta(hours=1)),
        "TUF update of trusted_root.json failed: ExpiredMetadataError",
    ),
    "a signed target that is not a trust root": (
        lambda repo: repo.publish("trusted_root.json", json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}).encode()),
        "not a Sigstore trusted root",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_update_is_refused_in_one_line_and_the_kept_root_stays(repository, tmp_path, case):
    assert update(repository, tmp_path, "--tuf-root", tmp_path / "root.json").returncode == 0
    spoil, message = CASES[case]
    spoil(repository)
    refused = update(repository, tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"airlock: error: {repository.url}") and message in line and "nothing was written" in line, line
    assert (tmp_path / "trusted_root.json").read_bytes() == DEFAULT_TRUSTED_ROOT.read_bytes()


def test_docs_private_sigstore_command_runs_as_written(repository, tmp_path):
    """docs/provenance.md's update from a private Sigstore's TUF repository, its placeholder URL pointed at the test's repository."""
    import os
    import shlex
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[1] / "docs" / "provenance.md").read_text()
    (line,) = [line.strip() for line in text.splitlines() if line.strip().startswith("airlock update-trusted-root --tuf-url ")]
    argv = [word.replace("https://tuf.sigstore.example.internal", repository.url) for word in shlex.split(line)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "trusted_root.json").read_bytes() == DEFAULT_TRUSTED_ROOT.read_bytes()
    assert (tmp_path / "xdg" / "airlock" / "tuf").is_dir()  # the TUF metadata it trusts now, kept for the next update
