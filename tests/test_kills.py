"""SIGKILL at seeded byte counts: build, init and upgrade always finish on the rerun, with nothing corrupt.

Each command is killed once its written-bytes counter (/proc/PID/io wchar)
passes a threshold drawn from a seeded generator, so the kill points are
spread over the whole run and the same on every run. The rerun must finish;
the cache or store must hold only whole, correct blobs under final names.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import AIRLOCK, airlock, assert_blobs_whole, require
from tests.test_install import IGNORE
from tests.upstream import LocalUpstream, free_port

TRIALS = int(os.environ.get("AIRLOCK_KILL_TRIALS", "20"))
SEED = 20261122
FAST = {"init": ("--skip-phases", "images,kubeadm-init,cni"), "upgrade": ("--skip-phases", "images")}


def written_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_and_kill(argv: list[str], threshold: int, env: dict | None = None) -> bool:
    """Run `argv`; SIGKILL it once it has written `threshold` bytes. True if it was killed."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    while process.poll() is None:
        if written_bytes(process.pid) >= threshold:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    return False


def measure(argv: list[str], env: dict | None = None) -> int:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    peak = 0
    while process.poll() is None:
        peak = max(peak, written_bytes(process.pid))
        time.sleep(0.001)
    assert process.returncode == 0
    return peak


@pytest.fixture(scope="module")
def heavy(tmp_path_factory, keys):
    require("docker-registry", "skopeo", "umoci")
    root = tmp_path_factory.mktemp("kills")
    local = LocalUpstream(root / "upstream", versions=("v1.36.4", "v1.36.5"), payload_bytes=3 << 20, extra_images={}).start()
    yield local, root
    local.close()


def build_args(local: LocalUpstream, keys, out: Path, cache: Path, version: str = "v1.36.4", serial: int = 100, *extra) -> list[str]:
    return [AIRLOCK, "build", "-o", str(out), "--kubernetes-version", version, "--sign-key", str(keys["ed25519"] / "airlock.key"),
            "--serial", str(serial), "--cache-dir", str(cache), *local.build_flags(), *extra]


def test_build_survives_kills(heavy, keys):
    local, root = heavy
    total = measure(build_args(local, keys, root / "measure.tar", root / "measure-cache"))
    chooser = random.Random(SEED)
    killed = 0
    for trial in range(TRIALS):
        cache, out = root / f"build-cache-{trial}", root / f"build-{trial}.tar"
        killed += run_and_kill(build_args(local, keys, out, cache), chooser.randrange(1, total))
        assert not out.exists() or airlock("verify", out, "--key", keys["ed25519"] / "airlock.pub").returncode == 0
        subprocess.run(build_args(local, keys, out, cache), check=True, capture_output=True)
        airlock("verify", out, "--key", keys["ed25519"] / "airlock.pub", check=True)
        assert_blobs_whole(cache / "blobs" / "sha256")
        shutil.rmtree(cache)
        out.unlink()
    print(f"build: {killed} kills survived of {TRIALS} tried")
    assert killed >= TRIALS * 3 // 4


def node_args(command: str, bundle: Path, keys, node_root: Path, config: Path) -> list[str]:
    return [AIRLOCK, command, str(bundle), "--key", str(keys["ed25519"] / "airlock.pub"), "--root", str(node_root), "--config", str(config),
            "--ignore-preflight-errors", IGNORE, *FAST[command]]


def check_node(node_root: Path, serial: int) -> None:
    state = json.loads((node_root / "var/lib/airlock/state.json").read_text())
    assert state["installed"]["serial"] == serial and state["run"] is None
    checked = airlock("store", "check", "--root", node_root)
    assert checked.returncode == 0 and ", 0 corrupt" in checked.stdout


@pytest.fixture(scope="module")
def node_bundles(heavy, keys):
    local, root = heavy
    full, delta = root / "full.tar", root / "delta.tar"
    subprocess.run(build_args(local, keys, full, root / "node-cache"), check=True, capture_output=True)
    subprocess.run(build_args(local, keys, delta, root / "node-cache", "v1.36.5", 101, "--base", str(full)), check=True, capture_output=True)
    return full, delta


def test_init_survives_kills(heavy, keys, node_bundles):
    _, root = heavy
    full, _ = node_bundles
    config = root / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
    total = measure(node_args("init", full, keys, root / "measure-node", config))
    chooser = random.Random(SEED + 1)
    killed = 0
    for trial in range(TRIALS):
        node_root = root / f"init-{trial}"
        killed += run_and_kill(node_args("init", full, keys, node_root, config), chooser.randrange(1, total))
        subprocess.run(node_args("init", full, keys, node_root, config), check=True, capture_output=True)
        check_node(node_root, 100)
        shutil.rmtree(node_root)
    print(f"init: {killed} kills survived of {TRIALS} tried")
    assert killed >= TRIALS * 3 // 4


def test_upgrade_survives_kills(heavy, keys, node_bundles):
    _, root = heavy
    full, delta = node_bundles
    config = root / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
    installed = root / "installed"
    subprocess.run(node_args("init", full, keys, installed, config), check=True, capture_output=True)
    probe = root / "upgrade-measure"
    shutil.copytree(installed, probe, symlinks=True)
    total = measure(node_args("upgrade", delta, keys, probe, config))
    chooser = random.Random(SEED + 2)
    killed = 0
    for trial in range(TRIALS):
        node_root = root / f"upgrade-{trial}"
        shutil.copytree(installed, node_root, symlinks=True)
        killed += run_and_kill(node_args("upgrade", delta, keys, node_root, config), chooser.randrange(1, total))
        subprocess.run(node_args("upgrade", delta, keys, node_root, config), check=True, capture_output=True)
        check_node(node_root, 101)
        assert "v1.36.5" in (node_root / "usr/local/bin/kubelet").read_text()
        shutil.rmtree(node_root)
    print(f"upgrade: {killed} kills survived of {TRIALS} tried")
    assert killed >= TRIALS * 3 // 4
