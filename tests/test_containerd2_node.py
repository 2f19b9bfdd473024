"""A node whose runtime is containerd 2.x, for real: the containerd 2.1.9 its bundle carries, with bookworm's runc.

The local upstream's containerd-2.1.9-linux-amd64.tar.gz holds real programs
(Debian sid's 2.1.9 build, tests/debian_sid.py); the node has no runtime, so
the binaries phase installs the bundle's containerd, shim and ctr, and that is
the daemon started. The operator's starting point is that containerd's own
`config default`. The node installer (airlock-node.pyz under `python3 -I`, in a network namespace whose
only address is a documentation address, tests/nodenet.py) merges it as version 3 (the layout 2.1
reads), the daemon is started on exactly that file (only its private paths moved:
root, state, sockets, and config_path to the root's certs.d), and then:

- the CRI plugins load (io.containerd.cri.v1.images/runtime and grpc.v1.cri ok);
- the images phase pulls every bundle image through the hosts.toml airlock wrote,
  from the node registry, with 2.1's ctr (its transfer service) and the digests signed;
- kubelet's own path: CRI PullImage goes through config_path and the same hosts.toml
  to the node registry, and the CRI reports the bundle's pause image pinned
  (pinned_images.sandbox) and nothing else;
- a container runs with runc from an image of the local upstream.
kubeadm and kubelet are STAND-INS (tests/upstream.py); containerd, runc and the registry are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

from tests.conftest import build, node_command, require
from tests.containerd import Containerd, private_config, sid_programs
from tests.cri import Cri
from tests.nodenet import NodeNetwork

IGNORE = "module-br_netfilter,swap,port-6443,port-2379,port-2380,port-10250,port-10257,port-10259,root,disk-space"
BUSYBOX = "docker.io/library/busybox:1.36"


def bundle_manifest(bundle: Path) -> dict:
    with tarfile.open(bundle) as archive:
        return json.loads(archive.extractfile("bundle.json").read())


def wait_for_port(node: NodeNetwork, port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while node.run(["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"], check=False).returncode != 0:
        assert process.poll() is None and time.monotonic() < deadline, "airlock-node registry serve did not start"
        time.sleep(0.2)


def test_a_containerd_2_node_pulls_through_airlocks_hosts_toml_and_runs_a_container(upstream, keys, tmp_path):
    require("ip", "runc", "nsenter")
    programs = sid_programs()
    bundle = tmp_path / "k8s.tar"
    upstream.serve_containerd("2.1.9", "amd64", programs)
    try:
        build(upstream, keys, bundle, "stable", tmp_path / "cache", "--arch", "amd64", "--cni", "none", "--containerd-version", "2.1", "--image", BUSYBOX, check=True)
    finally:
        upstream.serve_containerd("2.1.9", "amd64")
    manifest = bundle_manifest(bundle)
    assert manifest["components"]["containerd"] == "2.1.9" and manifest["components"]["runc"] == "v1.3.6"
    pause = f"registry.k8s.io/pause:{manifest['components']['pause']}"
    expected = {image["reference"]: image["digest"] for image in manifest["images"]}

    root = tmp_path / "root"
    config_toml = root / "etc/containerd/config.toml"
    config_toml.parent.mkdir(parents=True)
    config_toml.write_text(subprocess.run([programs / "containerd", "config", "default"], capture_output=True, text=True, check=True).stdout)
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(json.dumps({"nodeName": "c2", "registry": {"listen": "127.0.0.1:5000"}}))
    # The bundle's containerd, shim and ctr once the binaries phase put them there (its runc is a stand-in: PATH's runs).
    installed = root / "usr/local/bin"
    env = {**os.environ, "PATH": f"{installed}:{os.environ['PATH']}", "AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log")}
    daemon = registry = None
    node = NodeNetwork()  # one 192.0.2.x address, no route out
    install = [*node.prefix, *node_command(), "init", str(bundle), "--key", str(keys["ed25519"] / "airlock.pub"),
               "--root", str(root), "--config", str(node_yaml), "--ignore-preflight-errors", IGNORE]  # fmt: skip
    try:
        # Up to the runtime's configuration; the daemon then starts on what airlock wrote.
        first = subprocess.run([*install, "--skip-phases", "images,kubeadm-init,cni,done"], capture_output=True, text=True, env=env, timeout=600)
        assert first.returncode == 0, first.stderr
        assert f"containerd 2.1.9 from the bundle in {installed}: containerd, containerd-shim-runc-v2, ctr; runc in {root / 'usr/local/sbin'}" in first.stderr
        for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
            assert (installed / name).read_bytes() == (programs / name).read_bytes(), f"{name} is not the one the bundle carries"
        assert "writing containerd config.toml version 3 for containerd 2.1.9 (bundle.json)" in first.stderr
        written = config_toml.read_text()
        parsed = tomllib.loads(written)
        images = parsed["plugins"]["io.containerd.cri.v1.images"]
        assert parsed["version"] == 3 and images["pinned_images"]["sandbox"] == pause
        assert images["registry"]["config_path"] == "/etc/containerd/certs.d" and "sandbox_image" not in written
        hosts = tomllib.loads((root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text())
        assert hosts["server"] == "http://127.0.0.1:5000" and list(hosts["host"]) == ["http://127.0.0.1:5000"]

        daemon_root = Path(f"/tmp/ctd-c2{os.getpid()}")
        daemon = Containerd(daemon_root, prefix=node.prefix, config_text=private_config(written, daemon_root, root / "etc/containerd/certs.d"), programs=installed)
        assert daemon.release.startswith("2.1.")
        for plugin_type, plugin_id in (("io.containerd.cri.v1", "images"), ("io.containerd.cri.v1", "runtime"), ("io.containerd.grpc.v1", "cri")):
            assert daemon.plugin_status(plugin_type, plugin_id) == "ok", daemon.log_text()[-1500:]

        second = subprocess.run([*install, "--containerd-address", str(daemon.socket)], capture_output=True, text=True, env=env, timeout=900)
        assert second.returncode == 0, second.stderr
        assert "[images] already done" not in second.stderr and "[runtime] already done (resuming)" in second.stderr
        assert daemon.image_digests() == expected

        # kubelet's path: the CRI plugin's own pulls, through config_path and airlock's hosts.toml, from the node registry.
        registry = subprocess.Popen([*node.prefix, *node_command(), "registry", "serve", "--store", str(root / "var/lib/airlock/store"),
                                     "--listen", "127.0.0.1:5000", "--workers", "1"], stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_for_port(node, 5000, registry)
        daemon.ctr("images", "rm", pause, BUSYBOX)
        cri = Cri(daemon.socket)
        try:
            for reference in (pause, BUSYBOX):
                assert cri.pull(reference).startswith("sha256:")
            sandbox, other = cri.status(pause), cri.status(BUSYBOX)
        finally:
            cri.close()
        assert sandbox is not None and sandbox.pinned, "the CRI does not hold the bundle's pause image as its pinned sandbox image"
        assert other is not None and not other.pinned
        assert {reference: daemon.image_digests()[reference] for reference in (pause, BUSYBOX)} == {reference: expected[reference] for reference in (pause, BUSYBOX)}
        registry.terminate()
        access = registry.communicate(timeout=30)[1]
        registry = None
        assert "ns=registry.k8s.io" in access and "ns=docker.io" in access, access[-1500:]

        run = daemon.ctr("run", "--rm", BUSYBOX, f"probe-{os.getpid()}", "/bin/busybox", "cat", "/etc/airlock-test-image")
        assert run.stdout.strip() == f"{BUSYBOX} amd64"
    finally:
        if registry is not None:
            registry.terminate()
            registry.wait(30)
        if daemon is not None:
            daemon.close()
        node.close()
