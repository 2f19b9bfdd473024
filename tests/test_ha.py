"""A highly available control plane: node.yaml's virtual IP, kube-vip from the bundle as a static pod on every
control plane, and control planes joining through that address (kubeadm is the stand-in)."""

from __future__ import annotations

import json

import pytest
import yaml

from installer.apiwait import wait_for_virtual_ip
from installer.node import NodeConfig, NodeError
from tests.conftest import build
from tests.test_install import IGNORE, install, node_config
from tests.upstream import free_port

KUBE_VIP = "ghcr.io/kube-vip/kube-vip:v0.8.9"
HA = {"virtualIP": "10.0.0.100", "interface": "eth0"}
JOIN = {"token": "abcdef.0123456789abcdef", "caCertHashes": ["sha256:" + "1" * 64], "certificateKey": "c" * 64}


@pytest.fixture(scope="module")
def ha_bundle(upstream, keys, tmp_path_factory):
    upstream.push(KUBE_VIP, ("amd64",))
    out = tmp_path_factory.mktemp("ha-bundle") / "k8s.tar"
    build(upstream, keys, out, "stable-1.36", tmp_path_factory.mktemp("ha-cache"), "--image", KUBE_VIP,
          "--registry-mirror", f"ghcr.io={upstream.registry.url}", check=True)
    return out


def env_of(pod: dict) -> dict:
    return {entry["name"]: entry.get("value") for entry in pod["spec"]["containers"][0]["env"]}


def test_three_control_planes_share_the_virtual_ip(ha_bundle, keys, tmp_path):
    first, log = tmp_path / "cp1", tmp_path / "cp1.log"
    config = node_config(tmp_path, free_port(), highAvailability=HA)
    result = install("init", ha_bundle, keys, first, config, None, log, "--skip-phases", "images")
    assert result.returncode == 0, result.stderr
    pod = yaml.safe_load((first / "etc/kubernetes/manifests/kube-vip.yaml").read_text())
    assert pod["kind"] == "Pod" and pod["spec"]["hostNetwork"] is True and pod["spec"]["containers"][0]["image"] == KUBE_VIP
    env = env_of(pod)
    assert env["address"] == "10.0.0.100" and env["vip_interface"] == "eth0" and env["port"] == "6443"
    assert env["cp_enable"] == "true" and env["vip_arp"] == "true" and env["vip_leaderelection"] == "true"
    # Once init is through, kube-vip holds admin.conf, not the RBAC-bypassing super-admin.conf it started with.
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/kubernetes/admin.conf"
    # controlPlaneEndpoint is the virtual IP, and the stand-in kubeadm took the configuration holding it.
    cluster = next(d for d in yaml.safe_load_all((first / "var/lib/airlock/kubeadm/init.yaml").read_text()) if d["kind"] == "ClusterConfiguration")
    assert cluster["controlPlaneEndpoint"] == "10.0.0.100:6443"
    # Written after kubeadm's preflight (which wants an empty manifests directory) and before anything uses the endpoint.
    lines = result.stderr.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if key in line) for key in ("init phase preflight", "wrote /etc/kubernetes/manifests/kube-vip.yaml", "init phase certs")}
    assert at["init phase preflight"] < at["wrote /etc/kubernetes/manifests/kube-vip.yaml"] < at["init phase certs"]
    for name in ("cp2", "cp3"):
        root, node_log = tmp_path / name, tmp_path / f"{name}.log"
        joining = node_config(tmp_path, free_port(), nodeName=name, highAvailability=HA, **JOIN)
        joined = install("join", ha_bundle, keys, root, joining, None, node_log, "--control-plane", "--skip-phases", "images")
        assert joined.returncode == 0, joined.stderr
        (join,) = yaml.safe_load_all((root / "var/lib/airlock/kubeadm/join.yaml").read_text())
        assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.0.0.100:6443"
        assert join["controlPlane"]["certificateKey"] == "c" * 64
        assert [c for c in node_log.read_text().splitlines() if c.startswith("kubeadm join")]
        pod = yaml.safe_load((root / "etc/kubernetes/manifests/kube-vip.yaml").read_text())
        assert env_of(pod)["address"] == "10.0.0.100" and pod["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/kubernetes/admin.conf"
    # A worker joins through the address and runs no kube-vip.
    worker = tmp_path / "worker1"
    joined = install("join", ha_bundle, keys, worker, node_config(tmp_path, free_port(), nodeName="worker1", highAvailability=HA, **JOIN), None, tmp_path / "w.log", "--skip-phases", "images")
    assert joined.returncode == 0, joined.stderr
    assert not (worker / "etc/kubernetes/manifests/kube-vip.yaml").exists()


def test_the_first_kube_vip_starts_with_super_admin_conf_and_drops_it_once_the_cluster_is_up(ha_bundle, keys, tmp_path):
    """kubeadm from 1.29 binds admin.conf's rights only during init: until then kube-vip needs super-admin.conf
    (kube-vip issue #684). Kept after init, that break-glass credential would sit in a running pod for good."""
    from tests.conftest import airlock_node

    root, log = tmp_path / "cp1", tmp_path / "cp1.log"
    manifest = root / "etc/kubernetes/manifests/kube-vip.yaml"
    config = node_config(tmp_path, free_port(), highAvailability=HA)
    args = ["init", ha_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE,
            "--skip-phases", "images"]
    # The cluster is not up yet (the CNI's kubectl apply fails): kube-vip keeps super-admin.conf.
    stopped = airlock_node(*args, env={"AIRLOCK_STANDIN_LOG": str(log), "AIRLOCK_STANDIN_FAIL": "apply"})
    assert stopped.returncode == 1 and "phase cni" in stopped.stderr, stopped.stderr
    assert yaml.safe_load(manifest.read_text())["spec"]["volumes"] == [{"name": "kubeconfig", "hostPath": {"path": "/etc/kubernetes/super-admin.conf"}}]
    # The rerun resumes after kubeadm-init, applies the CNI, then points kube-vip at admin.conf, before done.
    resumed = airlock_node(*args, env={"AIRLOCK_STANDIN_LOG": str(log)})
    assert resumed.returncode == 0, resumed.stderr
    pod = yaml.safe_load(manifest.read_text())
    assert pod["spec"]["volumes"] == [{"name": "kubeconfig", "hostPath": {"path": "/etc/kubernetes/admin.conf"}}]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [{"name": "kubeconfig", "mountPath": "/etc/kubernetes/admin.conf"}]
    assert env_of(pod)["address"] == "10.0.0.100" and pod["spec"]["containers"][0]["image"] == KUBE_VIP
    assert oct(manifest.stat().st_mode & 0o777) == "0o600"
    lines = resumed.stderr.splitlines()
    at = {key: next(i for i, line in enumerate(lines) if line.startswith(key)) for key in ("[kubeadm-init] already done", "[cni] done", "[kube-vip] ", "[done] ")}
    assert at["[kubeadm-init] already done"] < at["[cni] done"] < at["[kube-vip] "] < at["[done] "]
    assert any("pointed /etc/kubernetes/manifests/kube-vip.yaml at /etc/kubernetes/admin.conf" in line for line in lines), resumed.stderr
    # A dry run of a node without a virtual IP says the phase is not needed there.
    plain = airlock_node("init", ha_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "plain", "--config",
                         node_config(tmp_path, free_port()), "--dry-run", check=True)
    assert "would not run phase kube-vip: not needed here" in plain.stdout


def test_a_bundle_without_kube_vip_is_refused_before_anything_changes(node_bundle, keys, tmp_path):
    root = tmp_path / "root"
    result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port(), highAvailability=HA), None, tmp_path / "log", "--skip-phases", "images")
    assert result.returncode == 1 and "highAvailability: the bundle carries no kube-vip image" in result.stderr, result.stderr
    assert "--image ghcr.io/kube-vip/kube-vip:VERSION" in result.stderr
    assert not (root / "etc/kubernetes").exists()


@pytest.mark.parametrize(
    "document, message",
    [
        ({"highAvailability": {"virtualIP": "10.0.0.100"}}, "highAvailability needs virtualIP and interface"),
        ({"highAvailability": {**HA, "virtualIP": "127.0.0.1"}}, "highAvailability.virtualIP"),
        ({"highAvailability": {**HA, "interface": "eth0; reboot"}}, "highAvailability.interface"),
        ({"highAvailability": HA, "controlPlaneEndpoint": "10.0.0.10:6443"}, "controlPlaneEndpoint 10.0.0.10:6443 is not highAvailability.virtualIP 10.0.0.100"),
        ({"highAvailability": {**HA, "vip": "x"}}, "unknown field highAvailability.vip"),
    ],
)
def test_bad_high_availability_settings_are_refused(document, message):
    with pytest.raises(NodeError) as refused:
        NodeConfig.from_dict(document)
    assert message in str(refused.value)


def test_the_endpoint_defaults_to_the_virtual_ip():
    assert NodeConfig.from_dict({"highAvailability": HA}).control_plane_endpoint == "10.0.0.100:6443"
    assert NodeConfig.from_dict({"highAvailability": HA, "controlPlaneEndpoint": "10.0.0.100:8443"}).control_plane_endpoint == "10.0.0.100:8443"


def test_the_documented_cp1_yaml_gives_the_virtual_ip_as_endpoint():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs/multi-node.md").read_text()
    section = text.split("## Three control planes behind a virtual IP (kube-vip)", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = NodeConfig.from_dict(yaml.safe_load(block), "docs/multi-node.md")
    assert config.control_plane_endpoint == "10.0.0.100:6443" and config.virtual_ip_interface == "eth0"



@pytest.fixture(scope="module")
def newer_ha_bundle(ha_bundle, upstream, keys, tmp_path_factory):
    """ha_bundle's next serial: what a node installed from ha_bundle upgrades to."""
    from tests.test_install import bundle_manifest

    out = tmp_path_factory.mktemp("ha-bundle-2") / "k8s-2.tar"
    build(upstream, keys, out, "stable-1.36", tmp_path_factory.mktemp("ha-cache-2"), "--image", KUBE_VIP,
          "--registry-mirror", f"ghcr.io={upstream.registry.url}", "--serial", str(bundle_manifest(ha_bundle)["serial"] + 1), check=True)
    return out


def test_an_upgrade_does_not_put_a_virtual_ip_in_front_of_a_cluster_installed_without_one(ha_bundle, newer_ha_bundle, keys, tmp_path):
    """A cluster installed without highAvailability has certificates and kubeconfigs that name its first node's
    address, not a virtual IP: an upgrade whose node.yaml now asks for one is refused in one line, before it changes
    anything, and says what to do."""
    root, log = tmp_path / "cp1", tmp_path / "cp1.log"
    (tmp_path / "plain").mkdir()
    (tmp_path / "ha").mkdir()
    installed = install("init", ha_bundle, keys, root, node_config(tmp_path / "plain", free_port()), None, log, "--skip-phases", "images")
    assert installed.returncode == 0, installed.stderr
    state = json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]
    calls = log.read_text()
    upgraded = install("upgrade", newer_ha_bundle, keys, root, node_config(tmp_path / "ha", free_port(), highAvailability=HA), None, log,
                       "--skip-phases", "images")
    assert upgraded.returncode == 1, upgraded.stderr
    (line,) = [line for line in upgraded.stderr.splitlines() if line.startswith("airlock: error")]
    assert "highAvailability" in line and "installed without a virtual IP" in line and "remove highAvailability" in line, upgraded.stderr
    assert "Traceback" not in upgraded.stderr
    assert not (root / "etc/kubernetes/manifests/kube-vip.yaml").exists()
    # Still the bundle it was installed from; kubeadm and kubectl were never run.
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"] == state and log.read_text() == calls


def test_an_upgrade_of_a_control_plane_behind_the_virtual_ip_waits_for_it_after_kubeadm(ha_bundle, newer_ha_bundle, keys, tmp_path):
    """kubeadm upgrade restarts the API server (and a new kube-vip.yaml restarts kube-vip): the upgrade goes on to the
    kubelet and the uncordon, which go through the virtual IP, once it answers. Under --root nothing answers, and it says so."""
    root, log = tmp_path / "cp1", tmp_path / "cp1.log"
    config = node_config(tmp_path, free_port(), highAvailability=HA)
    installed = install("init", ha_bundle, keys, root, config, None, log, "--skip-phases", "images")
    assert installed.returncode == 0, installed.stderr
    assert "nothing will answer at https://10.0.0.100:6443/readyz; not waiting" in installed.stderr
    manifest = root / "etc/kubernetes/manifests/kube-vip.yaml"
    pod = manifest.read_text()
    image = yaml.safe_load(pod)["spec"]["containers"][0]["image"]
    planned = install("upgrade", newer_ha_bundle, keys, root, config, None, log, "--skip-phases", "images", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert f"kube-vip.yaml unchanged ({image})" in planned.stdout + planned.stderr
    # A control plane whose kube-vip.yaml names another kube-vip (an older bundle's): the upgrade writes this bundle's.
    older = yaml.safe_load(pod)
    older["spec"]["containers"][0]["image"] = image.rsplit(":", 1)[0] + ":v0.1.0-older"
    manifest.write_text(yaml.safe_dump(older))
    upgraded = install("upgrade", newer_ha_bundle, keys, root, config, None, log, "--skip-phases", "images")
    assert upgraded.returncode == 0, upgraded.stderr
    lines = upgraded.stderr.splitlines()
    kubeadm_done = next(i for i, line in enumerate(lines) if line.startswith("[kubeadm-upgrade] done"))
    rewrote = next(i for i, line in enumerate(lines) if f"rewrote /etc/kubernetes/manifests/kube-vip.yaml ({image})" in line)
    waited = next(i for i, line in enumerate(lines) if "nothing will answer at https://10.0.0.100:6443/readyz; not waiting" in line)
    kubelet = next(i for i, line in enumerate(lines) if line.startswith("[kubelet-upgrade]"))
    assert kubeadm_done < rewrote < waited < kubelet, upgraded.stderr
    assert manifest.read_text() == pod and oct(manifest.stat().st_mode & 0o777) == "0o600"


def test_the_wait_for_the_virtual_ip_ends_once_the_api_server_answers_there_and_names_kube_vip_when_it_does_not(tmp_path):
    from tests.test_apiwait import ReadyzServer

    server = ReadyzServer(tmp_path / "pki", not_ready=2)
    try:
        lines = []
        wait_for_virtual_ip("127.0.0.1", server.port, server.ca, "upgrade", timeout=20, interval=0.05, echo=lines.append)
        assert server.answers == [503, 503, 200] and "is healthy after" in lines[-1]
        with pytest.raises(NodeError) as raised:
            wait_for_virtual_ip("127.0.0.1", free_port(), server.ca, "upgrade", timeout=0.0)
    finally:
        server.close()
    message = str(raised.value)
    assert "virtual IP" in message and "kube-vip" in message and "crictl" in message and "rerun airlock-node upgrade" in message
