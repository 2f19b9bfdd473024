"""The pod network a data centre needs: flannel's backend, interfaces and pod CIDR from node.yaml, edited as data."""

from __future__ import annotations

import json

import pytest
import yaml

from installer.node import FlannelSettings, NodeConfig, NodeError
from installer.render.flannel import configure
from tests.conftest import airlock_node
from tests.test_install import install, node_config
from tests.upstream import FLANNEL_MANIFEST, free_port


def net_conf(text: str) -> dict:
    config_map = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap")
    return json.loads(config_map["data"]["net-conf.json"])


def flanneld_args(text: str) -> list[str]:
    daemon_set = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "DaemonSet")
    (container,) = [c for c in daemon_set["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-flannel"]
    return container["args"]


def test_init_applies_the_backend_interface_and_pod_cidr_from_node_yaml(node_bundle, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port(), podSubnet="10.32.0.0/16", cni={"flannel": {"backend": "host-gw", "iface": "eth1"}})
    result = install("init", node_bundle, keys, root, config, None, log, "--skip-phases", "images")
    assert result.returncode == 0, result.stderr
    assert "flannel: backend host-gw, pod network 10.32.0.0/16, interface eth1" in result.stderr
    applied = (root / "var/lib/airlock/cni/kube-flannel.yml").read_text()
    assert net_conf(applied) == {"Network": "10.32.0.0/16", "EnableNFTables": False, "Backend": {"Type": "host-gw"}}
    assert flanneld_args(applied) == ["--ip-masq", "--kube-subnet-mgr", "--iface=eth1"]
    assert any(c.startswith("kubectl --kubeconfig") and c.endswith("/var/lib/airlock/cni/kube-flannel.yml") for c in log.read_text().splitlines())
    # kubeadm hands the same pod CIDR to the controller manager, which gives each node its slice of flannel's Network.
    cluster = next(d for d in yaml.safe_load_all((root / "var/lib/airlock/kubeadm/init.yaml").read_text()) if d["kind"] == "ClusterConfiguration")
    assert cluster["networking"]["podSubnet"] == "10.32.0.0/16"


@pytest.mark.parametrize(
    "flannel, field",
    [
        ({"backend": "udp"}, "cni.flannel.backend"),
        ({"backend": ["vxlan"]}, "cni.flannel.backend"),
        ({"iface": "eth1 --kube-api-url=http://evil"}, "cni.flannel.iface"),
        ({"iface": "an-interface-name-too-long"}, "cni.flannel.iface"),
        ({"iface": {"name": "eth1"}}, "cni.flannel.iface"),
        ({"ifaceRegex": "eth[0-9"}, "cni.flannel.ifaceRegex"),
        ({"ifaceRegex": "^eth\n--ip-masq=false"}, "cni.flannel.ifaceRegex"),
        ({"mtu": 1400}, "cni.flannel.mtu"),
    ],
)
def test_bad_flannel_values_are_refused_in_one_line_naming_the_field(node_bundle, keys, tmp_path, flannel, field):
    config = node_config(tmp_path, free_port(), cni={"flannel": flannel})
    result = airlock_node("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "root", "--config", config)
    assert result.returncode == 1 and field in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists()


def test_cni_section_takes_only_known_keys():
    with pytest.raises(NodeError, match="unknown field cni.calico"):
        NodeConfig.from_dict({"cni": {"calico": {}}})
    with pytest.raises(NodeError, match="cni must be a mapping"):
        NodeConfig.from_dict({"cni": "flannel"})
    config = NodeConfig.from_dict({"cni": {"flannel": {"backend": "wireguard", "iface": ["eth1", "10.0.0.5"], "ifaceRegex": "^bond[0-9]+$"}}})
    assert config.flannel == FlannelSettings("wireguard", ("eth1", "10.0.0.5"), ("^bond[0-9]+$",))
    assert NodeConfig.from_dict({}).flannel == FlannelSettings("vxlan", (), ())


def test_the_manifest_is_edited_as_data():
    manifest = FLANNEL_MANIFEST.format(version="v0.25.7")
    # vxlan stays vxlan with its own settings; the node's interface replaces one given in the manifest.
    documents = list(yaml.safe_load_all(manifest))
    config_map = documents[1]
    config_map["data"]["net-conf.json"] = json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 4096}})
    documents[2]["spec"]["template"]["spec"]["containers"][0]["args"].append("--iface=eth0")
    text = configure(yaml.safe_dump_all(documents), "10.50.0.0/16", FlannelSettings("vxlan", (), ("^eth[0-9]+$",)))
    assert net_conf(text) == {"Network": "10.50.0.0/16", "Backend": {"Type": "vxlan", "VNI": 4096}}
    assert flanneld_args(text) == ["--ip-masq", "--kube-subnet-mgr", "--iface-regex=^eth[0-9]+$"]
    # Another backend drops vxlan's settings; every other document is kept as it was.
    text = configure(manifest, "10.244.0.0/16", FlannelSettings("wireguard"))
    assert net_conf(text)["Backend"] == {"Type": "wireguard"}
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["Namespace", "ConfigMap", "DaemonSet"]
    assert json.loads(next(d for d in yaml.safe_load_all(text) if d["kind"] == "ConfigMap")["data"]["cni-conf.json"])["name"] == "cbr0"


def test_a_manifest_that_is_not_flannels_is_refused_by_name():
    with pytest.raises(NodeError, match="has no ConfigMap kube-flannel-cfg"):
        configure("kind: Namespace\napiVersion: v1\nmetadata: {name: x}\n", "10.244.0.0/16", FlannelSettings())
    with pytest.raises(NodeError, match="flannel's Network is an IPv4 pod subnet"):
        configure(FLANNEL_MANIFEST.format(version="v1"), "fd00:10::/56", FlannelSettings())


def test_the_documented_node_yaml_renders_the_documented_manifest():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/multi-node.md").read_text()
    block = text.split("## The pod network (flannel)", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = NodeConfig.from_dict(yaml.safe_load(block), "docs/multi-node.md")
    rendered = configure(FLANNEL_MANIFEST.format(version="v0.25.7"), config.pod_subnet, config.flannel)
    assert net_conf(rendered)["Backend"] == {"Type": "host-gw"} and net_conf(rendered)["Network"] == "10.32.0.0/16"
    assert flanneld_args(rendered)[-1] == "--iface=eth1"
