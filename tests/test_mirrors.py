"""Every control plane serves the registry; every node's hosts.toml lists them all, in an order of its own.

The pulls go through real containerd (Debian's) and real node registries (`airlock-node registry serve`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from bundle.trust import load_trusted_keys
from bundle.unpack import unpack_images
from installer.node import NodeConfig, NodeError
from tests.conftest import node_command, require
from tests.containerd import Containerd
from tests.test_install import install, node_config
from tests.upstream import free_port

TOKEN = {"controlPlaneEndpoint": "10.0.0.10:6443", "token": "abcdef.0123456789abcdef", "caCertHashes": ["sha256:" + "1" * 64]}


def serve(store: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([*node_command(), "registry", "serve", "--store", store, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"registry on {port} did not start")


def hosts_of(root: Path, registry: str = "registry.k8s.io") -> tuple[str, list[str]]:
    document = tomllib.loads((root / f"etc/containerd/certs.d/{registry}/hosts.toml").read_text())
    return document["server"], list(document["host"])


def test_a_worker_lists_every_control_plane_registry_and_pulls_with_the_first_one_stopped(node_bundle, keys, tmp_path):
    require("containerd", "ctr", "runc")
    store = tmp_path / "store"
    unpack_images(node_bundle, load_trusted_keys([keys["ed25519"] / "airlock.pub"]), store)
    ports = [free_port() for _ in range(3)]
    mirrors = [f"http://127.0.0.1:{port}" for port in ports]
    servers = {mirror: serve(store, port) for mirror, port in zip(mirrors, ports, strict=True)}
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port(), nodeName="worker7", registry={"mirrors": mirrors}, **TOKEN)
    daemon = Containerd(Path(f"/tmp/ctd-mirrors-{os.getpid()}"))
    try:
        joined = install("join", node_bundle, keys, root, config, None, log, "--skip-phases", "images")
        assert joined.returncode == 0, joined.stderr
        server, order = hosts_of(root)
        assert sorted(order) == sorted(mirrors) and server == order[0]
        assert f"from {' then '.join(order)} only" in joined.stderr
        # A worker keeps no copy of the images and runs no registry of its own.
        assert not (root / "etc/systemd/system/airlock-registry.service").exists()
        # (it holds the image indexes it verified, not the images' blobs)
        assert len(list((root / "var/lib/airlock/store/blobs/sha256").glob("*"))) < len(list((store / "blobs/sha256").glob("*")))
        servers[order[0]].terminate()
        servers[order[0]].wait(timeout=30)
        manifest = json.loads(subprocess.run(["tar", "-xOf", node_bundle, "bundle.json"], capture_output=True, check=True).stdout)
        pause = next(image for image in manifest["images"] if "/pause:" in image["reference"])
        result = daemon.ctr("images", "pull", "--hosts-dir", str(root / "etc/containerd/certs.d"), "--platform", "linux/amd64", pause["reference"], check=False)
        assert result.returncode == 0, result.stderr
        assert daemon.image_digests()[pause["reference"]] == pause["digest"]
    finally:
        daemon.close()
        for process in servers.values():
            process.kill()
            process.wait()


def test_each_node_tries_the_registries_in_an_order_of_its_own(node_bundle, keys, tmp_path):
    mirrors = ["https://10.0.0.10:5443", "https://10.0.0.11:5443", "https://10.0.0.12:5443"]
    firsts = {}
    for index in range(5):
        root = tmp_path / f"root{index}"
        config = node_config(tmp_path, free_port(), nodeName=f"worker{index}", registry={"mirrors": mirrors, "ca": "/etc/airlock/pki/ca.crt"}, **TOKEN)
        joined = install("join", node_bundle, keys, root, config, None, tmp_path / "log", "--skip-phases", "images,kubeadm-join,kubelet,done")
        assert joined.returncode == 0, joined.stderr
        server, order = hosts_of(root)
        # The same list, rotated: containerd tries them in that order, then the server (never the internet).
        start = mirrors.index(order[0])
        assert order == mirrors[start:] + mirrors[:start] and server == order[0]
        assert all(entry["ca"] == "/etc/airlock/pki/ca.crt" for entry in tomllib.loads((root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text())["host"].values())
        firsts[f"worker{index}"] = order[0]
    assert len(set(firsts.values())) >= 2, firsts  # the pulls are shared out, not all sent to one control plane


def test_a_control_plane_with_mirrors_serves_its_own_registry(node_bundle, keys, tmp_path):
    port = free_port()
    mirrors = [f"http://127.0.0.1:{port}", "http://10.0.0.11:5000", "http://10.0.0.12:5000"]
    root = tmp_path / "root"
    config = node_config(tmp_path, port, nodeName="cp2", registry={"listen": f"127.0.0.1:{port}", "mirrors": mirrors}, certificateKey="b" * 64, **TOKEN)
    joined = install("join", node_bundle, keys, root, config, None, tmp_path / "log", "--control-plane", "--skip-phases", "images")
    assert joined.returncode == 0, joined.stderr
    assert (root / "etc/systemd/system/airlock-registry.service").exists()
    assert list((root / "var/lib/airlock/store/blobs/sha256").glob("*")), "a control plane keeps the images it serves"
    assert sorted(hosts_of(root)[1]) == sorted(mirrors)
    status = json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]
    assert status["registry"] == f"http://127.0.0.1:{port}" and sorted(status["registries"]) == sorted(mirrors)


@pytest.mark.parametrize(
    "registry, message",
    [
        ({"mirrors": "https://10.0.0.10:5443"}, "registry.mirrors: must be a list"),
        ({"mirrors": []}, "registry.mirrors: list every control plane's registry once"),
        ({"mirrors": ["https://10.0.0.10:5443", "https://10.0.0.10:5443"]}, "registry.mirrors: list every control plane's registry once"),
        ({"mirrors": ["https://10.0.0.10:5443"], "mirror": "https://10.0.0.11:5443"}, "registry.mirror and registry.mirrors: set one"),
        ({"mirrors": ['https://10.0.0.10:5443"]\n[host."http://evil"]']}, "registry.mirrors: [0]"),
    ],
)
def test_bad_mirror_lists_are_refused(registry, message):
    with pytest.raises(NodeError) as refused:
        NodeConfig.from_dict({"registry": registry})
    assert message in str(refused.value)
