"""The node's address without a default route, and the kernel settings a node needs.

The netns tests give a namespace one address and no default route (an
air-gapped node), run the real `airlock init` in it with a node.yaml that has
no advertiseAddress, and read what kubeadm and kubelet would be given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from installer.address import AmbiguousAddress, choose
from installer.kernel import MODULES_FILE, SYSCTL_FILE, SYSCTLS
from installer.node import NodeConfig, NodeError
from tests.conftest import AIRLOCK, require
from tests.nodenet import NodeNetwork
from tests.test_install import IGNORE

SUBNET = "192.0.2"  # RFC 5737 documentation addresses, each node in a namespace of its own


def fixed(routes=None, addresses=(), resolve=None):
    return {
        "routes": lambda destination: (routes or {}).get(destination),
        "addresses": lambda: list(addresses),
        "resolve": resolve or (lambda endpoint: [endpoint.rsplit(":", 1)[0]]),
    }


def test_the_address_is_chosen_in_a_fixed_order():
    both = ["10.0.0.5", "fd00::5"]
    assert choose(NodeConfig(advertise_address="10.0.0.9"), **fixed(addresses=both)).address == "10.0.0.9"
    endpoint = NodeConfig(control_plane_endpoint="10.1.0.1:6443")
    assert choose(endpoint, **fixed({"10.1.0.1": "10.0.0.7"}, ["10.0.0.5", "10.0.0.7"])).address == "10.0.0.7"
    assert choose(endpoint, **fixed({}, both)).address == "10.0.0.5"  # no route to the endpoint: the single global address
    assert choose(NodeConfig(), **fixed(addresses=["fd00::5"])).address == "fd00::5"
    with pytest.raises(AmbiguousAddress, match="several global IPv4 addresses"):
        choose(NodeConfig(), **fixed(addresses=["10.0.0.5", "10.0.0.6"]))
    with pytest.raises(AmbiguousAddress, match="no global"):
        choose(NodeConfig(), **fixed())


def test_a_loopback_address_is_never_chosen():
    """kubeadm cannot advertise loopback and kubelet refuses it as --node-ip: an endpoint on this node's loopback
    (route source 127.0.0.1) says nothing about the node's address, so the node's own address is taken."""
    on_loopback = NodeConfig(control_plane_endpoint="127.0.0.1:6443")
    assert choose(on_loopback, **fixed({"127.0.0.1": "127.0.0.1"}, ["192.0.2.10"])).address == "192.0.2.10"
    named = NodeConfig(control_plane_endpoint="localhost:6443")
    assert choose(named, **fixed({"127.0.0.1": "127.0.0.1", "::1": "::1"}, ["192.0.2.10"], lambda e: ["127.0.0.1", "::1"])).address == "192.0.2.10"
    with pytest.raises(AmbiguousAddress, match="no global"):
        choose(on_loopback, **fixed({"127.0.0.1": "127.0.0.1"}, []))
    for address, reason in (("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.0.9", "link-local"), ("0.0.0.0", "all-zeros"), ("239.0.0.1", "multicast")):
        with pytest.raises(NodeError, match=f"advertiseAddress: {address} is (a|the) {reason}"):
            NodeConfig.from_dict({"advertiseAddress": address})


@pytest.fixture
def isolated():
    """A node's namespace: one address (192.0.2.2/24), loopback up, and no default route."""
    require("ip", "nsenter")
    with NodeNetwork(f"{SUBNET}.2") as node:
        yield node


def init_in(node: NodeNetwork, bundle: Path, keys, root: Path, document: dict, log: Path) -> subprocess.CompletedProcess:
    config = root.parent / "node.yaml"
    config.write_text(json.dumps(document))
    env = {**os.environ, "AIRLOCK_STANDIN_LOG": str(log)}
    return node.run([AIRLOCK, "init", bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
                 "--ignore-preflight-errors", IGNORE, "--skip-phases", "images"], check=False, env=env, timeout=600)


def test_a_node_without_default_route_takes_its_only_address(isolated, node_bundle, keys, tmp_path):
    node = isolated
    assert "default" not in node.routes()
    root = tmp_path / "root"
    result = init_in(node, node_bundle, keys, root, {"nodeName": "cp1", "registry": {"listen": "127.0.0.1:5000"}}, tmp_path / "log")
    assert result.returncode == 0, result.stderr
    address = f"{SUBNET}.2"
    assert f"node address {address} (the node's only global IPv4 address)" in result.stderr + result.stdout
    init, cluster, _ = yaml.safe_load_all((root / "var/lib/airlock/kubeadm/init.yaml").read_text())
    assert init["localAPIEndpoint"] == {"bindPort": 6443, "advertiseAddress": address}
    assert {"name": "node-ip", "value": address} in init["nodeRegistration"]["kubeletExtraArgs"]
    assert cluster["controlPlaneEndpoint"] == f"{address}:6443"
    # With --root the kernel settings are written, not applied.
    assert (root / MODULES_FILE.lstrip("/")).read_text().split("\n")[1:3] == ["overlay", "br_netfilter"]
    sysctls = (root / SYSCTL_FILE.lstrip("/")).read_text()
    assert all(f"{key} = {value}" in sysctls for key, value in SYSCTLS.items())
    # The route to controlPlaneEndpoint decides over the addresses; a second address makes a node without it ambiguous.
    node.add_address(f"{SUBNET}.3")
    again = tmp_path / "again"
    routed = init_in(node, node_bundle, keys, again, {"nodeName": "cp1", "controlPlaneEndpoint": f"{SUBNET}.1:6443"}, tmp_path / "log2")
    assert routed.returncode == 0, routed.stderr
    (routed_init, *_) = yaml.safe_load_all((again / "var/lib/airlock/kubeadm/init.yaml").read_text())
    assert routed_init["localAPIEndpoint"]["advertiseAddress"] == f"{SUBNET}.2"
    refused = init_in(node, node_bundle, keys, tmp_path / "third", {"nodeName": "cp1"}, tmp_path / "log3")
    assert refused.returncode == 1 and "advertiseAddress" in refused.stderr and "advertise-address" in refused.stderr
    assert not (tmp_path / "third/var/lib/airlock/kubeadm").exists()


def test_kernel_settings_are_applied_on_a_real_root(isolated):
    """Applied inside the namespace, whose sysctls are its own: ip_forward and the bridge settings change there only."""
    node = isolated
    for key in SYSCTLS:
        node.run(["sysctl", "-w", f"{key}=0"])
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    code = "from installer.node import Host, Paths; from installer.kernel import apply_kernel_settings; apply_kernel_settings(Host(Paths('/')))"
    result = node.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    for key, value in SYSCTLS.items():
        assert node.run(["sysctl", "-n", key]).stdout.strip() == value, key
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before
