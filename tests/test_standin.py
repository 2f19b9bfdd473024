"""The stand-in kubeadm refuses what kubeadm v1.31 refuses, and accepts every line airlock runs.

The stand-in (tests/standin/kubeadm.py, tables in kubeadm_v1_31.py) is what every node test runs
instead of kubeadm; these tests keep it honest in both directions.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from installer import commands
from installer.node import Host, NodeConfig, NodeError, Paths
from installer.phases import Context
from installer.phases import kubeadm as kubeadm_phase
from installer.phases.unpack import COMPLETE
from tests.standin.kubeadm import script
from tests.upstream import COMPONENT_IMAGES

V1BETA4_INIT = """apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
  kubeletExtraArgs:
  - name: node-ip
    value: 10.0.0.5
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.4
"""


@pytest.fixture
def kubeadm(tmp_path):
    path = tmp_path / "kubeadm"
    path.write_text(script("v1.31.4", "amd64", COMPONENT_IMAGES))
    path.chmod(0o755)
    return path


def call(kubeadm: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(kubeadm), *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_hidden_wait_control_plane_phase_is_an_unknown_command(kubeadm):
    refused = call(kubeadm, "init", "phase", "wait-control-plane")
    assert refused.returncode == 1
    assert 'unknown command "wait-control-plane" for "kubeadm init phase"' in refused.stderr
    assert call(kubeadm, "init", "phase", "control-plane", "nonsense").stderr.startswith('unknown command "nonsense" for "kubeadm init phase control-plane"')
    assert call(kubeadm, "bogus").stderr.startswith('unknown command "bogus" for "kubeadm"')


def test_unknown_flags_and_flags_of_other_commands_are_refused(kubeadm, tmp_path):
    assert call(kubeadm, "init", "phase", "certs", "all", "--bogus").stderr.startswith("unknown flag: --bogus")
    # A parent phase inherits no flags: kubeadm runs `certs` with its children, but not with --config.
    assert call(kubeadm, "init", "phase", "certs", "--config", "x").stderr.startswith("unknown flag: --config")
    assert call(kubeadm, "init", "phase", "kubelet-start", "--token", "abc").stderr.startswith("unknown flag: --token")
    assert call(kubeadm, "upgrade", "node", "--yes").stderr.startswith("unknown flag: --yes")
    assert call(kubeadm, "reset", "-y").stderr.startswith("unknown shorthand flag: 'y' in -y")
    assert call(kubeadm, "init", "--config").stderr.startswith("flag needs an argument: --config")
    assert "invalid argument" in call(kubeadm, "init", "--dry-run=maybe").stderr
    mixed = call(kubeadm, "init", "--config", config(tmp_path, V1BETA4_INIT), "--token", "abcdef.0123456789abcdef")
    assert mixed.returncode == 1 and "can not mix '--config' with arguments [token]" in mixed.stderr
    assert call(kubeadm, "upgrade", "apply", "v1.31.4", "v1.31.5").stderr.startswith("accepts at most 1 arg(s), received 2")


def test_config_files_are_decoded_strictly(kubeadm, tmp_path):
    def refusal(text: str) -> str:
        result = call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, text))
        assert result.returncode == 1, result.stdout
        return result.stderr

    assert call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, V1BETA4_INIT)).returncode == 0
    assert 'unknown field "nodeRegistration.nodeIP"' in refusal(V1BETA4_INIT.replace("  name: cp1", "  name: cp1\n  nodeIP: 10.0.0.5"))
    assert 'unknown field "apiServer.timeoutForControlPlane"' in refusal(V1BETA4_INIT + "apiServer:\n  timeoutForControlPlane: 4m\n")
    # kubeletExtraArgs is a list of {name, value} in v1beta4, a map in v1beta3.
    assert "cannot unmarshal object" in refusal(V1BETA4_INIT.replace("  - name: node-ip\n    value: 10.0.0.5", "    node-ip: 10.0.0.5"))
    assert 'no kind "ResetConfiguration" is registered for version "kubeadm.k8s.io/v1beta3"' in refusal(
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ResetConfiguration\nforce: true\n"
    )
    assert 'no kind "JoinConfiguration" is registered for version "kubeadm.k8s.io/v1beta5"' in refusal(
        "apiVersion: kubeadm.k8s.io/v1beta5\nkind: JoinConfiguration\n"
    )
    assert "old API spec" in refusal("apiVersion: kubeadm.k8s.io/v1beta2\nkind: InitConfiguration\n")
    assert 'key "kind" already set' in refusal(V1BETA4_INIT.replace("kind: InitConfiguration", "kind: InitConfiguration\nkind: InitConfiguration"))
    assert 'unknown field "maxPodz"' in refusal("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPodz: 10\n")
    assert "cannot unmarshal string into Go value of type int32" in refusal(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  bindPort: '6443'\n"
    )
    assert "kubernetesVersion must be exact" in refusal(V1BETA4_INIT.replace("v1.31.4", "stable-1.31"))
    assert "unable to read config" in call(kubeadm, "join", "--config", tmp_path / "missing.yaml").stderr


def test_config_files_are_split_into_documents_as_kubeadm_splits_them(kubeadm, tmp_path):
    """kubeadm cuts --config at every line starting with `---` and reads each non-empty chunk's apiVersion and kind.

    A comment before the first `---` is a chunk of its own, a document with no kind: the real kubeadm stops there
    (what every file airlock wrote used to begin with).
    """
    def result(text: str) -> subprocess.CompletedProcess:
        return call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, text))

    no_kind = "invalid configuration for GroupVersionKind /, Kind=: kind and apiVersion is mandatory information that must be specified"
    assert no_kind in result("# Written by airlock for Kubernetes v1.31.4\n---\n" + V1BETA4_INIT).stderr
    assert no_kind in result(V1BETA4_INIT + "---\n\n---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n").stderr
    assert no_kind in result(V1BETA4_INIT + "---\n# only a comment\n").stderr
    assert "GroupVersionKind /v1, Kind=ConfigMap: kind and apiVersion is mandatory" in result("apiVersion: v1\nkind: ConfigMap\n").stderr
    assert "invalid Yaml document separator: apiVersion: kubeadm.k8s.io/v1beta4" in result("--- apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n").stderr
    assert 'kind "InitConfiguration" is specified twice' in result(V1BETA4_INIT + "---\n" + V1BETA4_INIT).stderr
    # What kubeadm does accept: a leading `---`, a comment after it or on the separator line, CRLF line ends.
    assert result("---\n# Written by airlock\n" + V1BETA4_INIT.replace("---\n", "--- # next\n")).returncode == 0
    assert result(V1BETA4_INIT.replace("\n", "\r\n")).returncode == 0


def test_every_document_airlock_writes_is_a_whole_document_to_kubeadm(tmp_path):
    from installer import kubeadm_config
    from tests.standin.kubeadm import split_documents

    facts = kubeadm_config.NodeFacts(version="v1.31.4", node_name="cp1", address="192.0.2.10")
    node = NodeConfig.from_dict({"nodeName": "cp1"})
    rendered = kubeadm_config.dump(kubeadm_config.init_documents(node, facts, "abcdef.0123456789abcdef", "a" * 64), "Written by airlock\nfor v1.31.4")
    chunks = split_documents(rendered)
    assert [yaml.safe_load(chunk)["kind"] for chunk in chunks] == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
    assert chunks[0].startswith("---\n# Written by airlock\n# for v1.31.4\n")


def test_a_kubeadm_before_1_31_does_not_know_v1beta4(tmp_path):
    older = tmp_path / "kubeadm-1.30"
    older.write_text(script("v1.30.9", "amd64", COMPONENT_IMAGES))
    older.chmod(0o755)
    refused = call(older, "init", "phase", "certs", "all", "--config", config(tmp_path, V1BETA4_INIT.replace("v1.31.4", "v1.30.9")))
    assert refused.returncode == 1 and 'no kind "InitConfiguration" is registered for version "kubeadm.k8s.io/v1beta4"' in refused.stderr
    v1beta3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.30.9\n"
    assert call(older, "init", "phase", "certs", "all", "--config", config(tmp_path, v1beta3)).returncode == 0


def test_images_list_version_log_and_failure_hooks(kubeadm, tmp_path):
    log = tmp_path / "calls.log"
    listed = call(kubeadm, "config", "images", "list", "--kubernetes-version", "v1.31.4", env={"AIRLOCK_STANDIN_LOG": str(log)})
    assert listed.stdout.splitlines()[-1] == f"registry.k8s.io/etcd:{COMPONENT_IMAGES['etcd']}"
    assert "exact version required" in call(kubeadm, "config", "images", "list", "--kubernetes-version", "stable-1.31").stderr
    assert call(kubeadm, "version", "-o", "short").stdout.strip() == "v1.31.4"
    assert log.read_text() == "kubeadm config images list --kubernetes-version v1.31.4\n"
    failed = call(kubeadm, "upgrade", "node", env={"AIRLOCK_STANDIN_FAIL": "upgrade"})
    assert failed.returncode == 1 and "fails on request" in failed.stderr


def test_every_kubeadm_line_in_the_catalogue_exists(kubeadm, tmp_path):
    """Flags and commands only (the config files are checked below, rendered by airlock itself)."""
    empty = config(tmp_path, "")
    lines = commands.catalogue(kubeadm=str(kubeadm), config=str(empty), version="v1.31.4")["kubeadm"]
    assert any(line[1:4] == ["init", "phase", "addon"] for line in lines)
    for line in lines:
        if line[1] == "join":
            line = [*line[:-1], str(config(tmp_path, "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n"))]
        result = subprocess.run(line, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{' '.join(line[1:])}: {result.stderr}"


def node_context(tmp_path: Path, version: str, command: str = "init", **config) -> Context:
    """A node under a scratch root with the stand-in as its kubeadm, as after the unpack phase."""
    root = tmp_path / "root"
    paths = Paths(root)
    installed = paths("/usr/local/bin/kubeadm")
    installed.parent.mkdir(parents=True)
    installed.write_text(script(version, "amd64", COMPONENT_IMAGES))
    installed.chmod(0o755)
    context = Context(command=command, bundle=tmp_path / "bundle.tar", keys=[], paths=paths, host=Host(paths, echo=lambda line: None),
                      config=NodeConfig.from_dict({"nodeName": "cp1", "advertiseAddress": "10.0.0.5", **config}), start_services=False,
                      arch="amd64", manifest=SimpleNamespace(version=version), manifest_sha256="ab" * 32)
    staging = paths.staging / context.manifest_sha256[:16]
    staging.mkdir(parents=True)
    (staging / COMPLETE).write_text(context.manifest_sha256)
    return context


@pytest.mark.parametrize("version", ["v1.30.9", "v1.31.4"])  # configuration v1beta3, v1beta4
def test_airlock_init_runs_only_what_kubeadm_has_with_a_config_it_decodes(tmp_path, monkeypatch, version):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIRLOCK_STANDIN_LOG", str(log))
    context = node_context(tmp_path, version)
    kubeadm_phase.run_init(context)  # a refused call raises NodeError
    calls = log.read_text().splitlines()
    assert [call.split(" --config ")[0] for call in calls] == [
        "kubeadm init phase " + " ".join(step) for step in commands.INIT_STEPS if step != commands.WAIT
    ]
    assert not any("wait-control-plane" in call for call in calls)
    rendered = (context.paths("/var/lib/airlock/kubeadm/init.yaml")).read_text()
    assert f"kubeadm.k8s.io/{kubeadm_phase.api_version(version)}" in rendered


@pytest.mark.parametrize("version", ["v1.30.9", "v1.31.4"])
@pytest.mark.parametrize("control_plane", [False, True])
def test_airlock_join_config_is_decoded_strictly(tmp_path, monkeypatch, version, control_plane):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIRLOCK_STANDIN_LOG", str(log))
    context = node_context(tmp_path, version, "join", controlPlaneEndpoint="10.0.0.1:6443", token="abcdef.0123456789abcdef",
                           caCertHashes=["sha256:" + "0" * 64], certificateKey="a" * 64)
    context.control_plane = control_plane
    kubeadm_phase.run_join(context)
    assert log.read_text().startswith("kubeadm join --config ")


def test_a_refused_kubeadm_call_stops_the_phase(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLOCK_STANDIN_FAIL", "kubelet-start")
    context = node_context(tmp_path, "v1.31.4")
    with pytest.raises(NodeError, match="kubelet-start fails on request"):
        kubeadm_phase.run_init(context)
    assert json.loads(context.paths("/var/lib/airlock/kubeadm/secrets.json").read_text())["token"]
