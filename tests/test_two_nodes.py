"""Two nodes in two network namespaces joined by a veth pair, and nothing else.

The first runs `airlock init` and serves its registry over TLS with the CA
`airlock registry cert` made; the second runs `airlock join`, keeps no copy
of the images, and its containerd pulls every image from the first over TLS.
kubeadm/kubelet/kubectl are stand-ins; containerd, the registry and TLS are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import airlock, node_command, require
from tests.containerd import Containerd
from tests.test_install import IGNORE

SUBNET = "10.203.0"


def netns(name: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", name, *map(str, argv)], capture_output=True, text=True, **kwargs)


@pytest.fixture
def network():
    require("ip")
    tag = f"{os.getpid() % 10000}"
    first, second = f"airlock-a{tag}", f"airlock-b{tag}"
    for name in (first, second):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", f"al{tag}a", "type", "veth", "peer", "name", f"al{tag}b"], check=True)
        for name, end, address in ((first, f"al{tag}a", f"{SUBNET}.1"), (second, f"al{tag}b", f"{SUBNET}.2")):
            subprocess.run(["ip", "link", "set", end, "netns", name], check=True)
            netns(name, "ip", "addr", "add", f"{address}/24", "dev", end, check=True)
            netns(name, "ip", "link", "set", end, "up", check=True)
            netns(name, "ip", "link", "set", "lo", "up", check=True)
        yield first, second
    finally:
        for name in (first, second):
            subprocess.run(["ip", "netns", "delete", name])


def test_second_node_pulls_every_image_from_the_first_over_tls(network, node_bundle, keys, tmp_path):
    require("containerd", "ctr", "runc")
    first, second = network
    for name in (first, second):
        routes = netns(name, "ip", "route", check=True).stdout.strip().splitlines()
        assert routes == [f"{SUBNET}.0/24 dev {routes[0].split(' dev ')[1].split()[0]} proto kernel scope link src {routes[0].split('src ')[1]}"]
    pki = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", pki, "--name", f"{SUBNET}.1", check=True)
    pub = keys["ed25519"] / "airlock.pub"
    env = {**os.environ, "AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log")}
    daemons, server = [], None
    try:
        one = Containerd(Path(f"/tmp/ctd-a{os.getpid()}"), netns=first)
        daemons.append(one)
        config_one = tmp_path / "one.yaml"
        config_one.write_text(json.dumps({
            "nodeName": "cp1", "advertiseAddress": f"{SUBNET}.1",
            "registry": {"listen": f"{SUBNET}.1:5443", "tlsCert": str(pki / "registry.crt"), "tlsKey": str(pki / "registry.key"), "ca": str(pki / "ca.crt")},
        }))
        root_one = tmp_path / "one"
        init = netns(first, *node_command(), "init", node_bundle, "--key", pub, "--root", root_one, "--config", config_one,
                     "--ignore-preflight-errors", IGNORE, "--containerd-address", one.socket, env=env, timeout=600)
        assert init.returncode == 0, init.stderr
        # What airlock-registry.service runs on a real node:
        server = subprocess.Popen(
            ["ip", "netns", "exec", first, *node_command(), "registry", "serve", "--store", str(root_one / "var/lib/airlock/store"),
             "--listen", f"{SUBNET}.1:5443", "--tls-cert", str(pki / "registry.crt"), "--tls-key", str(pki / "registry.key"), "--no-access-log"],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        two = Containerd(Path(f"/tmp/ctd-b{os.getpid()}"), netns=second)
        daemons.append(two)
        config_two = tmp_path / "two.yaml"
        config_two.write_text(json.dumps({
            "nodeName": "worker1", "controlPlaneEndpoint": f"{SUBNET}.1:6443", "token": "abcdef.0123456789abcdef",
            "caCertHashes": ["sha256:" + "1" * 64], "registry": {"mirror": f"https://{SUBNET}.1:5443", "ca": str(pki / "ca.crt")},
        }))
        root_two = tmp_path / "two"
        join = netns(second, *node_command(), "join", node_bundle, "--key", pub, "--root", root_two, "--config", config_two,
                     "--ignore-preflight-errors", IGNORE, "--containerd-address", two.socket, env=env, timeout=600)
        assert join.returncode == 0, join.stderr
        with tarfile.open(node_bundle) as archive:
            expected = {image["reference"]: image["digest"] for image in json.loads(archive.extractfile("bundle.json").read())["images"]}
        assert two.image_digests() == expected
        hosts = (root_two / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
        assert f"https://{SUBNET}.1:5443" in hosts and f'ca = "{pki / "ca.crt"}"' in hosts
        # No copy of the images on the second node: its store holds only the bundle's files.
        index = root_two / "var/lib/airlock/store/index.json"
        assert not index.exists()
        assert not (root_two / "etc/systemd/system/airlock-registry.service").exists()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        for daemon in daemons:
            daemon.close()
