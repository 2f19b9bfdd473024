"""An operator at a terminal: every node command run from airlock-node.pyz under a pseudo-terminal.

The node installer once died on every terminal (it reached for a progress
library the pyz does not carry) while every test ran without one. Here each
command runs as `python3 -I airlock-node.pyz ...` with stdin, stdout and
stderr on a pseudo-terminal, and what it printed is read back. The same
commands run without a terminal in the other tests. kubeadm, kubelet and
kubectl are STAND-INS (tests/upstream.py); containerd is not needed here.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from installer.progress import ProgressLines
from tests.conftest import build, node_command
from tests.nodenet import host_address
from tests.test_install import FAST, IGNORE
from tests.upstream import free_port


def on_terminal(*args, env: dict | None = None, timeout: float = 600) -> tuple[int, str]:
    """Run a node command from the pyz with a pseudo-terminal as its stdin, stdout and stderr; (exit code, output)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*node_command(), *map(str, args)], stdin=terminal, stdout=terminal, stderr=terminal,
                               env={**os.environ, "TERM": "xterm", **(env or {})}, start_new_session=True)
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed the terminal's other side
                break
            if not chunk:
                break
            output += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return code, output.decode("utf-8", "replace")


def ok(code_and_output: tuple[int, str], *expected: str) -> str:
    code, output = code_and_output
    assert "Traceback" not in output and "ModuleNotFoundError" not in output, output
    assert code == 0, output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    return output


@pytest.fixture(scope="module")
def upgrade_bundle(upstream, keys, node_bundle, tmp_path_factory) -> Path:
    """The node bundle's Kubernetes again, one serial later: an upgrade a node can take."""
    with tarfile.open(node_bundle) as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
    out = tmp_path_factory.mktemp("terminal-upgrade") / "k8s-next.tar"
    build(upstream, keys, out, manifest["kubernetes"]["version"], out.parent / "cache", "--serial", str(manifest["serial"] + 1), check=True)
    return out


def test_an_operator_runs_every_node_command_at_a_terminal(node_bundle, upgrade_bundle, keys, tmp_path):
    pub = keys["ed25519"] / "airlock.pub"
    root, worker = tmp_path / "root", tmp_path / "worker"
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "advertiseAddress": host_address(), "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
    env = {"AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log")}

    ok(on_terminal("--help"), "verify", "init", "join", "upgrade", "reset")
    ok(on_terminal("--version"), "airlock")
    ok(on_terminal("phases"), "verify", "unpack", "kubeadm-init")
    ok(on_terminal("verify", node_bundle, "--key", pub), f"OK {node_bundle}")
    ok(on_terminal("inspect", node_bundle), "kubernetes")
    ok(on_terminal("init", node_bundle, "--key", pub, "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, "--dry-run"), "would ")
    ok(on_terminal("init", node_bundle, "--key", pub, "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, *FAST, env=env))
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"] is not None
    ok(on_terminal("store", "check", "--root", root), "0 corrupt")
    ok(on_terminal("upgrade", upgrade_bundle, "--key", pub, "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE,
                   "--skip-phases", "images,kubeadm-upgrade", env=env))
    ok(on_terminal("store", "prune", "--root", root), "removed")
    ok(on_terminal("registry", "cert", "--ca-out", tmp_path / "pki", "--name", "192.0.2.10"))
    assert (tmp_path / "pki/ca.crt").exists()
    joining = tmp_path / "join.yaml"
    joining.write_text(json.dumps({"nodeName": "worker1", "advertiseAddress": host_address(), "controlPlaneEndpoint": "192.0.2.10:6443",
                                   "token": "abcdef.0123456789abcdef", "caCertHashes": ["sha256:" + "1" * 64],
                                   "registry": {"mirror": "http://192.0.2.10:5000"}}))
    ok(on_terminal("join", node_bundle, "--key", pub, "--root", worker, "--config", joining, "--ignore-preflight-errors", IGNORE,
                   "--skip-phases", "images", env=env))
    ok(on_terminal("reset", "--root", worker))
    ok(on_terminal("reset", "--root", root))
    # A failure at a terminal is one line too, not a traceback.
    code, output = on_terminal("verify", tmp_path / "missing.tar", "--key", pub)
    assert code == 1 and "Traceback" not in output and "error:" in output


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_redrawn_on_a_terminal_and_printed_as_lines_in_a_log():
    now = [0.0]

    def run(stream) -> str:
        now[0] = 0.0
        with ProgressLines(4_000_000, "unpack", stream=stream, clock=lambda: now[0]) as advance:
            for _ in range(4):
                now[0] += 3.0
                advance(1_000_000)
        return stream.getvalue()

    log = run(io.StringIO())  # journald, ssh without a TTY: a whole line every 5 s, then a summary
    assert log.splitlines() == [
        "unpack: 2.0 MB of 4.0 MB (50 %), 333.3 KB/s",
        "unpack: 4.0 MB of 4.0 MB (100 %), 333.3 KB/s",
        "unpack: 4.0 MB in 12.0 s (333.3 KB/s)",
    ]
    terminal = run(FakeTerminal())  # one line redrawn in place, ended by a newline
    assert terminal.count("\r") == 5 and terminal.endswith("\n") and "\n" not in terminal[:-1]
    assert "unpack: 1.0 MB of 4.0 MB (25 %)" in terminal
    quiet = io.StringIO()
    with ProgressLines(10, "verify", stream=quiet, quiet=True) as advance:
        assert advance is None
    with ProgressLines(10, "verify", stream=quiet, clock=lambda: 0.0) as advance:
        advance(10)  # over before the first update: nothing at all
    assert quiet.getvalue() == ""
