"""airlock's kubeadm and kubelet lines for every minor a node may run, against that minor's stand-ins.

init (with kubeadm's preflight, and airlock's own wait for the control plane), join as a worker and as a
control plane, `upgrade apply` / `upgrade node`, and node.yaml kubelet flags the minor no longer has.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from installer import commands, minors
from installer.node import Host, NodeConfig, NodeError, Paths
from installer.phases import Context
from installer.phases import kubeadm as kubeadm_phase
from installer.staging import COMPLETE
from tests.standin import kubeadm_tables
from tests.standin.kubeadm import script
from tests.standin.kubelet import script as kubelet_script
from tests.upstream import components_of_version

VERSIONS = {33: "v1.33.7", 34: "v1.34.4", 35: "v1.35.3", 36: "v1.36.4", 37: "v1.37.2", 38: "v1.38.0"}
assert set(VERSIONS) == set(kubeadm_tables.MINORS)


def node_context(tmp_path: Path, version: str, command: str = "init", start_services: bool = False, **config) -> Context:
    """A node under a scratch root with the stand-ins as its kubeadm and kubelet, as after the unpack phase."""
    paths = Paths(tmp_path / "root")
    for name, text in (("kubeadm", script(version, "amd64", components_of_version(version))), ("kubelet", kubelet_script(version, "amd64"))):
        installed = paths(f"/usr/local/bin/{name}")
        installed.parent.mkdir(parents=True, exist_ok=True)
        installed.write_text(text)
        installed.chmod(0o755)
    context = Context(command=command, bundle=tmp_path / "bundle.tar", keys=[], paths=paths, host=Host(paths, echo=lambda line: None),
                      config=NodeConfig.from_dict({"nodeName": "cp1", "advertiseAddress": "192.0.2.10", **config}), start_services=start_services,
                      arch="amd64", manifest=SimpleNamespace(version=version), manifest_sha256="ab" * 32)
    staging = paths.staging / context.manifest_sha256[:16]
    staging.mkdir(parents=True)
    (staging / COMPLETE).write_text(context.manifest_sha256)
    return context


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.parametrize("minor", kubeadm_tables.MINORS)
def test_init_runs_what_kubeadm_of_the_minor_has(tmp_path, monkeypatch, minor):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIRLOCK_STANDIN_LOG", str(log))
    version = VERSIONS[minor]
    context = node_context(tmp_path, version, start_services=False)
    kubeadm_phase.run_init(context)  # a refused call raises NodeError
    made = [call.split(" --config ")[0] for call in calls(log)]
    ignored = commands.ignore_flag(minors.KUBEADM_IGNORED_CHECKS_CONTROL_PLANE)
    expected = [f"kubeadm init phase preflight {ignored}"] + [
        "kubeadm init phase " + " ".join(step) for step in commands.INIT_STEPS[1:] if step != commands.WAIT
    ]
    assert made == expected
    # Never kubeadm's wait-control-plane, which has no --config (kubeadm would resolve `stable-1` at dl.k8s.io): airlock waits itself.
    assert not any("wait-control-plane" in call for call in calls(log))
    rendered = context.paths("/var/lib/airlock/kubeadm/init.yaml").read_text()
    assert "apiVersion: kubeadm.k8s.io/v1beta4" in rendered and "v1beta3" not in rendered
    # Resumed: kubeadm's preflight passed once and is not run again (it would find its own ports and files).
    log.write_text("")
    kubeadm_phase.run_init(context)
    assert not any("phase preflight" in call for call in calls(log))


@pytest.mark.parametrize("minor", kubeadm_tables.MINORS)
@pytest.mark.parametrize("control_plane", [False, True])
def test_join_as_worker_and_control_plane(tmp_path, monkeypatch, minor, control_plane):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIRLOCK_STANDIN_LOG", str(log))
    context = node_context(tmp_path, VERSIONS[minor], "join", controlPlaneEndpoint="192.0.2.1:6443", token="abcdef.0123456789abcdef",
                           caCertHashes=["sha256:" + "0" * 64], certificateKey="a" * 64)
    context.control_plane = control_plane
    kubeadm_phase.run_join(context)
    checks = minors.KUBEADM_IGNORED_CHECKS_CONTROL_PLANE if control_plane else minors.KUBEADM_IGNORED_CHECKS_WORKER
    assert calls(log) == [f"kubeadm join {commands.ignore_flag(checks)} --config {context.paths('/var/lib/airlock/kubeadm/join.yaml')}"]
    (join,) = yaml.safe_load_all(context.paths("/var/lib/airlock/kubeadm/join.yaml").read_text())
    assert ("controlPlane" in join) == control_plane


@pytest.mark.parametrize("minor", kubeadm_tables.MINORS)
def test_upgrade_lines_exist_in_every_minor(tmp_path, minor):
    version = VERSIONS[minor]
    kubeadm = tmp_path / "kubeadm"
    kubeadm.write_text(script(version, "amd64", components_of_version(version)))
    kubeadm.chmod(0o755)
    previous = f"v1.{minor - 1}.5"
    for line in (commands.kubeadm_upgrade_apply(str(kubeadm), version), commands.kubeadm_upgrade_node(str(kubeadm)), commands.kubeadm_reset(str(kubeadm))):
        result = subprocess.run(line, capture_output=True, text=True, timeout=60, env={"AIRLOCK_STANDIN_SERVER_VERSION": previous, "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, f"{' '.join(line[1:])}: {result.stderr}"


@pytest.mark.parametrize("minor", [34, 35])
def test_a_kubelet_flag_the_minor_no_longer_has_is_refused_before_anything_runs(tmp_path, monkeypatch, minor):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIRLOCK_STANDIN_LOG", str(log))
    pause = {"pod-infra-container-image": "registry.k8s.io/pause:3.10.1"}
    context = node_context(tmp_path, VERSIONS[minor], kubelet={"extraArgs": pause})
    if minor >= 35:
        with pytest.raises(NodeError, match="kubelet 1.35 has no --pod-infra-container-image .* containerd's setting"):
            kubeadm_phase.run_init(context)
        assert not log.exists()
    else:
        kubeadm_phase.run_init(context)
    # What kubeadm hands kubelet (kubeletExtraArgs) is what the kubelet of that minor accepts.
    rendered = list(yaml.safe_load_all(context.paths("/var/lib/airlock/kubeadm/init.yaml").read_text())) if minor < 35 else []
    for document in rendered:
        if document["kind"] == "InitConfiguration":
            args = [f"--{arg['name']}={arg['value']}" for arg in document["nodeRegistration"]["kubeletExtraArgs"]]
            result = subprocess.run([str(context.paths("/usr/local/bin/kubelet")), *args, "--version"], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("minor", kubeadm_tables.MINORS)
def test_every_kubeadm_line_in_the_catalogue_exists(tmp_path, minor):
    version = VERSIONS[minor]
    kubeadm = tmp_path / "kubeadm"
    kubeadm.write_text(script(version, "amd64", components_of_version(version)))
    kubeadm.chmod(0o755)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    join = tmp_path / "join.yaml"
    join.write_text("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n")
    from tests.test_node_day2 import write_admin_conf

    write_admin_conf(tmp_path, "https://192.0.2.10:6443")  # token create reads the cluster's endpoint and CA from it
    admin = tmp_path / "etc/kubernetes/admin.conf"
    lines = commands.catalogue(kubeadm=str(kubeadm), config=str(empty), version=version, kubeconfig=str(admin))["kubeadm"]
    for line in lines:
        if line[1] == "join":
            line = [*line[:-1], str(join)]
        result = subprocess.run(line, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, f"{' '.join(line[1:])}: {result.stderr}"


def test_a_refused_kubeadm_call_stops_the_phase(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOCK_STANDIN_FAIL", "kubelet-start")
    context = node_context(tmp_path, VERSIONS[36])
    with pytest.raises(NodeError, match="kubelet-start fails on request"):
        kubeadm_phase.run_init(context)
    assert json.loads(context.paths("/var/lib/airlock/kubeadm/secrets.json").read_text())["token"]
