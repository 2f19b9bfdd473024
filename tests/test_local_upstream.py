"""`python -m tests.upstream DIR`: the README's way to try `airlock build` offline; it stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TOOLS, airlock, require

ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> dict[int, str]:
    """pid -> command name of every process whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(rest[1]) == pid:
            found[int(entry.name)] = name
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_upstream_serves_a_build_then_stops_with_its_registry_on_sigterm(keys, tmp_path):
    require(*TOOLS)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream", str(tmp_path / "upstream")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 300)
        assert ready, "the local upstream printed no build flags within 300 s"
        flags = process.stdout.readline().split()
        assert "--release-url" in flags and "--github-url" in flags and "--registry-mirror" in flags
        registries = [pid for pid, name in children(process.pid).items() if name.startswith("docker-regis")]
        assert len(registries) == 1
        built = airlock(
            "build", "-o", tmp_path / "k8s.tar", "--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key",
            "--cache-dir", tmp_path / "cache", *flags,
        )
        assert built.returncode == 0, built.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        deadline = time.monotonic() + 10
        while alive(registries[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(registries[0]), "docker-registry outlived the local upstream"
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
