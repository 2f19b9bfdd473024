"""node.yaml `registry.lockdown: true`: containerd pulls from the node registry, and from nowhere else, whatever the image's registry.

Real containerd (Debian's, through ctr with the node's certs.d as --hosts-dir, the same resolver
the CRI plugin uses) against a real node registry (`airlock-node registry serve` from the pyz).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path

from tests.conftest import node_command, require
from tests.nodenet import host_address
from tests.test_install import FAST, bundle_manifest, install
from tests.upstream import free_port


class Outside:
    """A registry address outside the bundle: it only counts who connects (a connection is a pull that reached out)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.sock.close()


def config(tmp_path: Path, port: int, lockdown) -> Path:
    path = tmp_path / f"node-{lockdown}.yaml"
    registry = {"listen": f"127.0.0.1:{port}", **({} if lockdown is None else {"lockdown": lockdown})}
    path.write_text(json.dumps({"nodeName": "cp1", "advertiseAddress": host_address(), "registry": registry}))
    return path


def serve(store: Path, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([*node_command(), "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"], stderr=open(log, "wb"))
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"registry serve did not start: {log.read_text()[-500:]}") from None
            time.sleep(0.1)


def test_lockdown_leaves_containerd_no_registry_but_the_nodes(node_bundle, keys, containerd, tmp_path):
    require("containerd", "ctr")
    outside = Outside()
    try:
        port = free_port()
        root = tmp_path / "locked"
        result = install("init", node_bundle, keys, root, config(tmp_path, port, True), None, tmp_path / "log", *FAST)
        assert result.returncode == 0, result.stderr
        assert f"locked containerd to http://127.0.0.1:{port}" in result.stdout + result.stderr
        certs = root / "etc/containerd/certs.d"
        default = tomllib.loads((certs / "_default/hosts.toml").read_text())
        assert default["server"] == f"http://127.0.0.1:{port}" and list(default["host"]) == [f"http://127.0.0.1:{port}"]
        registry = serve(root / "var/lib/airlock/store", port, tmp_path / "registry.log")
        try:
            # The bundle's images still come from the node registry...
            image = next(i["reference"] for i in bundle_manifest(node_bundle)["images"] if i["reference"].startswith("registry.k8s.io/"))
            containerd.ctr("images", "pull", "--hosts-dir", str(certs), image)
            # ...and an image of a registry the bundle does not carry is asked of the node registry alone, which has none.
            refused = containerd.ctr("images", "pull", "--plain-http", "--hosts-dir", str(certs), f"{outside.host}/other/tool:1.0", check=False)
            assert refused.returncode != 0
            assert outside.connections == 0
            assert f'"HEAD /v2/other/tool/manifests/1.0?ns={outside.host.replace(":", "%3A")}" 404' in (tmp_path / "registry.log").read_text()
        finally:
            registry.terminate()
            registry.wait(15)
        # Without lockdown the same pull reaches out: that is what lockdown stops.
        open_root = tmp_path / "open"
        assert install("init", node_bundle, keys, open_root, config(tmp_path, free_port(), None), None, tmp_path / "log", *FAST).returncode == 0
        assert not (open_root / "etc/containerd/certs.d/_default").exists()
        containerd.ctr("images", "pull", "--plain-http", "--hosts-dir", str(open_root / "etc/containerd/certs.d"), f"{outside.host}/other/tool:1.0", check=False)
        assert outside.connections > 0
    finally:
        outside.close()


def test_lockdown_is_true_or_false_and_a_dry_run_says_what_it_would_lock(node_bundle, keys, tmp_path):
    port = free_port()
    for wrong in ("true", 1, "yes"):
        result = install("init", node_bundle, keys, tmp_path / "root", config(tmp_path, port, wrong), None, tmp_path / "log", "--dry-run")
        assert result.returncode == 1 and f"registry.lockdown: {wrong!r} is not true or false" in result.stderr, result.stderr
    dry = install("init", node_bundle, keys, tmp_path / "root", config(tmp_path, port, True), None, tmp_path / "log", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would lock containerd to http://127.0.0.1:{port}" in dry.stdout and "certs.d/_default/hosts.toml" in dry.stdout
