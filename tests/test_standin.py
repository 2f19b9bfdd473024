"""The stand-ins refuse what kubeadm and kubelet 1.33-1.38 refuse, minor by minor.

The stand-ins (tests/standin/kubeadm.py with per-minor tables in kubeadm_tables.py, and
tests/standin/kubelet.py) are what every node test runs instead of kubeadm and kubelet; these tests
keep them honest. What airlock itself runs against them is in tests/test_kubeadm_minors.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from installer.node import NodeConfig
from tests.standin import kubeadm_tables
from tests.standin.kubeadm import script
from tests.standin.kubelet import script as kubelet_script
from tests.upstream import COMPONENT_IMAGES

MINORS = kubeadm_tables.MINORS


def version_of(minor: int) -> str:
    return f"v1.{minor}.2"


def v1beta4_init(version: str, address: str = "192.0.2.10") -> str:
    return f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {address}
nodeRegistration:
  name: cp1
  kubeletExtraArgs:
  - name: node-ip
    value: {address}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
"""


def standin(tmp_path: Path, minor: int) -> Path:
    path = tmp_path / f"kubeadm-1.{minor}"
    path.write_text(script(version_of(minor), "amd64", COMPONENT_IMAGES))
    path.chmod(0o755)
    return path


@pytest.fixture
def kubeadm(tmp_path):
    """The newest minor's stand-in, for checks that do not change between minors."""
    return standin(tmp_path, MINORS[-1])


def call(kubeadm: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(kubeadm), *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("minor", MINORS)
def test_init_wait_control_plane_is_hidden_up_to_1_33_and_a_flagless_phase_from_1_34(tmp_path, minor):
    kubeadm = standin(tmp_path, minor)
    result = call(kubeadm, "init", "phase", "wait-control-plane")
    if minor <= 33:
        assert result.returncode == 1 and 'unknown command "wait-control-plane" for "kubeadm init phase"' in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        # No --config on this phase: kubeadm defaults its configuration, and the default version is a label it tries to fetch.
        assert "falling back to the local client version" in result.stderr
        assert call(kubeadm, "init", "phase", "wait-control-plane", "--config", "x.yaml").stderr.startswith("unknown flag: --config")


@pytest.mark.parametrize("minor", MINORS)
def test_join_phases_per_minor(tmp_path, minor):
    kubeadm = standin(tmp_path, minor)
    join_config = config(tmp_path, "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n")
    etcd_phase, gone = ("control-plane-join-etcd", "etcd-join") if minor <= 34 else ("etcd-join", "control-plane-join-etcd")
    assert call(kubeadm, "join", "phase", etcd_phase, "--config", join_config).returncode == 0
    assert f'unknown command "{gone}" for "kubeadm join phase"' in call(kubeadm, "join", "phase", gone).stderr
    subphase = call(kubeadm, "join", "phase", "control-plane-join", "etcd", "--config", join_config)
    assert (subphase.returncode == 0) == (minor <= 34), subphase.stderr
    for phase in ("kubelet-wait-bootstrap", "wait-control-plane"):
        assert call(kubeadm, "join", "phase", phase, "--config", join_config).returncode == 0


@pytest.mark.parametrize("minor", [MINORS[0], MINORS[-1]])  # the same cobra rules in every minor
def test_unknown_commands_and_flags_are_refused(tmp_path, minor):
    kubeadm = standin(tmp_path, minor)
    assert call(kubeadm, "init", "phase", "control-plane", "nonsense").stderr.startswith('unknown command "nonsense" for "kubeadm init phase control-plane"')
    assert call(kubeadm, "bogus").stderr.startswith('unknown command "bogus" for "kubeadm"')
    assert call(kubeadm, "init", "phase", "certs", "all", "--bogus").stderr.startswith("unknown flag: --bogus")
    # A parent phase inherits no flags: kubeadm runs `certs` with its children, but not with --config.
    assert call(kubeadm, "init", "phase", "certs", "--config", "x").stderr.startswith("unknown flag: --config")
    assert call(kubeadm, "init", "phase", "kubelet-start", "--token", "abc").stderr.startswith("unknown flag: --token")
    assert call(kubeadm, "upgrade", "node", "--yes").stderr.startswith("unknown flag: --yes")
    assert call(kubeadm, "reset", "-y").stderr.startswith("unknown shorthand flag: 'y' in -y")
    assert call(kubeadm, "init", "--config").stderr.startswith("flag needs an argument: --config")
    assert "invalid argument" in call(kubeadm, "init", "--dry-run=maybe").stderr
    mixed = call(kubeadm, "init", "--config", config(tmp_path, v1beta4_init(version_of(minor))), "--token", "abcdef.0123456789abcdef")
    assert mixed.returncode == 1 and "can not mix '--config' with arguments [token]" in mixed.stderr
    assert call(kubeadm, "upgrade", "apply", "v1.3.4", "v1.3.5").stderr.startswith("accepts at most 1 arg(s), received 2")
    assert call(kubeadm, "upgrade", "apply", "phase", "post-upgrade").returncode == 0
    assert call(kubeadm, "upgrade", "node", "phase", "post-upgrade").returncode == 0


@pytest.mark.parametrize("minor", MINORS)
def test_v1beta3_is_read_until_1_36_and_refused_from_1_37(tmp_path, minor):
    kubeadm = standin(tmp_path, minor)
    v1beta3 = f"apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: {version_of(minor)}\n"
    result = call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, v1beta3))
    if minor <= 36:
        assert result.returncode == 0 and "kubeadm config migrate" in result.stderr
    else:
        assert result.returncode == 1
        assert "your configuration file uses an old API spec: 'kubeadm.k8s.io/v1beta3'" in result.stderr
        assert "Please use kubeadm v1.36 instead" in result.stderr


@pytest.mark.parametrize("minor", MINORS)
def test_the_comment_chunk_and_loopback_addresses_are_refused(tmp_path, minor):
    """The defects real kubeadm found in airlock's files: a comment-only first chunk, a loopback advertise address."""
    kubeadm = standin(tmp_path, minor)
    version = version_of(minor)

    def result(text: str, *command: str) -> subprocess.CompletedProcess:
        return call(kubeadm, *(command or ("init", "phase", "certs", "all")), "--config", config(tmp_path, text))

    no_kind = "invalid configuration for GroupVersionKind /, Kind=: kind and apiVersion is mandatory information that must be specified"
    assert no_kind in result(f"# Written by airlock for Kubernetes {version}\n---\n" + v1beta4_init(version)).stderr
    assert result(v1beta4_init(version)).returncode == 0
    assert "unable to select an IP from lo network interface" in result(v1beta4_init(version, "127.0.0.1")).stderr
    assert "unable to select an IP from lo network interface" in result(v1beta4_init(version, "::1")).stderr
    assert 'couldn\'t use "10.0.0.300" as "apiserver-advertise-address"' in result(v1beta4_init(version, "10.0.0.300")).stderr
    join = ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 192.0.2.1:6443\n"
            "    token: abcdef.0123456789abcdef\n    caCertHashes: [sha256:" + "0" * 64 + "]\ncontrolPlane:\n  localAPIEndpoint:\n"
            "    advertiseAddress: 127.0.0.1\n")
    assert "unable to select an IP from lo network interface" in result(join, "join").stderr
    assert result(join.replace("127.0.0.1", "192.0.2.11"), "join").returncode == 0


def test_config_files_are_decoded_strictly(kubeadm, tmp_path):
    version = version_of(MINORS[-1])
    init = v1beta4_init(version)

    def refusal(text: str) -> str:
        result = call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, text))
        assert result.returncode == 1, result.stdout
        return result.stderr

    assert 'unknown field "nodeRegistration.nodeIP"' in refusal(init.replace("  name: cp1", "  name: cp1\n  nodeIP: 10.0.0.5"))
    assert 'unknown field "apiServer.timeoutForControlPlane"' in refusal(init + "apiServer:\n  timeoutForControlPlane: 4m\n")
    assert "cannot unmarshal object" in refusal(init.replace("  - name: node-ip\n    value: 192.0.2.10", "    node-ip: 10.0.0.5"))
    assert 'no kind "JoinConfiguration" is registered for version "kubeadm.k8s.io/v1beta5"' in refusal(
        "apiVersion: kubeadm.k8s.io/v1beta5\nkind: JoinConfiguration\n"
    )
    assert "Please use kubeadm v1.22 instead" in refusal("apiVersion: kubeadm.k8s.io/v1beta2\nkind: InitConfiguration\n")
    assert 'key "kind" already set' in refusal(init.replace("kind: InitConfiguration", "kind: InitConfiguration\nkind: InitConfiguration"))
    assert 'unknown field "maxPodz"' in refusal("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPodz: 10\n")
    assert "cannot unmarshal string into Go value of type int32" in refusal(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  bindPort: '6443'\n"
    )
    assert "kubernetesVersion must be exact" in refusal(init.replace(version, "stable-1"))
    assert "unable to read config" in call(kubeadm, "join", "--config", tmp_path / "missing.yaml").stderr
    # Validation after decoding: tokens, subnets, hashes, the control-plane version, the ignore list.
    bad_token = init.replace("kind: InitConfiguration\n", "kind: InitConfiguration\nbootstrapTokens:\n- token: ABCDEF.0123456789abcdef\n")
    assert 'the bootstrap token "ABCDEF.0123456789abcdef" was not of the form' in refusal(bad_token)
    assert "couldn't parse subnet" in refusal(init + "networking:\n  podSubnet: 10.244.0.0/33\n")
    assert "specified service subnet is too large" in refusal(init + "networking:\n  serviceSubnet: 10.0.0.0/8\n")
    assert "subnet is too small" in refusal(init + "networking:\n  serviceSubnet: 10.96.0.0/29\n")
    assert "control plane version >= 1.37.0" in refusal(init.replace(version, "v1.35.4"))
    mixed = call(kubeadm, "init", "phase", "preflight", "--ignore-preflight-errors", "all,Swap", "--config", config(tmp_path, init))
    assert "don't specify individual checks if 'all' is used" in mixed.stderr
    join = ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 192.0.2.1:6443\n"
            "    token: abcdef.0123456789abcdef\n")
    assert "without caCertHashes can be unsafe" in call(kubeadm, "join", "--config", config(tmp_path, join)).stderr
    assert 'invalid hash, expected "format:hex-value"' in call(kubeadm, "join", "--config", config(tmp_path, join + "    caCertHashes: [md5:00]\n")).stderr


@pytest.mark.parametrize(("minor", "gate", "known"), [
    (34, "WaitForAllControlPlaneComponents", True), (35, "WaitForAllControlPlaneComponents", False),
    (36, "PublicKeysECDSA", True), (37, "PublicKeysECDSA", False), (38, "NoSuchGate", False),
])
def test_feature_gates_are_those_of_the_minor(tmp_path, minor, gate, known):
    kubeadm = standin(tmp_path, minor)
    text = v1beta4_init(version_of(minor)) + f"featureGates:\n  {gate}: {'true' if gate != 'PublicKeysECDSA' else 'false'}\n"
    result = call(kubeadm, "init", "phase", "certs", "all", "--config", config(tmp_path, text))
    assert (result.returncode == 0) == known, result.stderr
    if not known:
        assert f"{gate} is not a valid feature name" in result.stderr
    locked = v1beta4_init(version_of(36)) + "featureGates:\n  NodeLocalCRISocket: false\n"
    assert "feature is locked to true" in call(standin(tmp_path, 36), "init", "phase", "certs", "all", "--config", config(tmp_path, locked)).stderr


def test_token_create_prints_the_join_command_in_kubeadms_shape(kubeadm, tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = ca.public_bytes(serialization.Encoding.PEM)
    kubeconfig = config(tmp_path, yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "admin@kubernetes",
        "clusters": [{"name": "kubernetes", "cluster": {"server": "https://192.0.2.10:6443", "certificate-authority-data": base64.b64encode(pem).decode()}}],
        "contexts": [{"name": "admin@kubernetes", "context": {"cluster": "kubernetes", "user": "admin"}}],
        "users": [{"name": "admin", "user": {}}],
    }), "admin.conf")
    pin = "sha256:" + hashlib.sha256(key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    # token.go prints join.go's template on one line: its "\\" line continuations (and tabs) are removed, their indentation stays.
    worker = call(kubeadm, "token", "create", "abcdef.0123456789abcdef", "--print-join-command", "--kubeconfig", kubeconfig)
    assert worker.stdout == f"kubeadm join 192.0.2.10:6443 --token abcdef.0123456789abcdef     --discovery-token-ca-cert-hash {pin} \n"
    plane = call(kubeadm, "token", "create", "--print-join-command", "--kubeconfig", kubeconfig, "--certificate-key", "b" * 64)
    (line,) = plane.stdout.splitlines()
    assert line.startswith("kubeadm join 192.0.2.10:6443 --token ") and line.endswith(f" {pin}     --control-plane --certificate-key {'b' * 64}")
    refused = call(kubeadm, "token", "create", "--kubeconfig", kubeconfig, "--certificate-key", "b" * 64)
    assert refused.returncode == 1 and "cannot use --certificate-key without --print-join-command" in refused.stderr
    assert call(kubeadm, "token", "create").stdout.strip().count(".") == 1
    assert "failed to load admin kubeconfig" in call(kubeadm, "token", "create", "--print-join-command", "--kubeconfig", tmp_path / "none").stderr
    uploaded = call(kubeadm, "init", "phase", "upload-certs", "--upload-certs", "--certificate-key", "c" * 64)
    assert uploaded.stdout.splitlines()[-2:] == ["[upload-certs] Using certificate key:", "c" * 64]


def test_upgrade_apply_refuses_a_newer_minor_than_itself_and_a_skipped_minor(tmp_path):
    kubeadm = standin(tmp_path, 36)
    assert "at least one minor release higher than the kubeadm minor release" in call(kubeadm, "upgrade", "apply", "v1.37.0", "--yes").stderr
    skipped = call(kubeadm, "upgrade", "apply", "v1.36.2", "--yes", env={"AIRLOCK_STANDIN_SERVER_VERSION": "v1.34.5"})
    assert "kubeadm can upgrade only 1 minor version at a time" in skipped.stderr
    assert call(kubeadm, "upgrade", "apply", "v1.36.2", "--yes", env={"AIRLOCK_STANDIN_SERVER_VERSION": "v1.35.5"}).returncode == 0
    assert "version must be exact" in call(kubeadm, "upgrade", "apply", "stable-1.36", "--yes").stderr


def test_images_list_version_log_and_failure_hooks(kubeadm, tmp_path):
    log = tmp_path / "calls.log"
    version = version_of(MINORS[-1])
    listed = call(kubeadm, "config", "images", "list", "--kubernetes-version", version, env={"AIRLOCK_STANDIN_LOG": str(log)})
    assert listed.stdout.splitlines()[-1] == f"registry.k8s.io/etcd:{COMPONENT_IMAGES['etcd']}"
    assert "exact version required" in call(kubeadm, "config", "images", "list", "--kubernetes-version", "stable-1").stderr
    assert call(kubeadm, "version", "-o", "short").stdout.strip() == version
    assert log.read_text() == f"kubeadm config images list --kubernetes-version {version}\n"
    failed = call(kubeadm, "upgrade", "node", env={"AIRLOCK_STANDIN_FAIL": "upgrade"})
    assert failed.returncode == 1 and "fails on request" in failed.stderr


def test_every_document_airlock_writes_is_a_whole_document_to_kubeadm():
    from installer.render import kubeadm_config
    from tests.standin.kubeadm import split_documents

    facts = kubeadm_config.NodeFacts(version="v1.36.2", node_name="cp1", address="192.0.2.10")
    node = NodeConfig.from_dict({"nodeName": "cp1"})
    rendered = kubeadm_config.dump(kubeadm_config.init_documents(node, facts, "abcdef.0123456789abcdef", "a" * 64), "Written by airlock\nfor v1.36.2")
    chunks = split_documents(rendered)
    assert [yaml.safe_load(chunk)["kind"] for chunk in chunks] == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
    assert chunks[0].startswith("---\n# Written by airlock\n# for v1.36.2\n")


@pytest.mark.parametrize("minor", MINORS)
def test_kubelet_refuses_the_flags_its_minor_no_longer_has(tmp_path, minor):
    kubelet = tmp_path / "kubelet"
    kubelet.write_text(kubelet_script(version_of(minor), "amd64"))
    kubelet.chmod(0o755)
    assert call(kubelet, "--version").stdout == f"Kubernetes {version_of(minor)}\n"
    pause = call(kubelet, "--pod-infra-container-image=registry.k8s.io/pause:3.10.1", "--version")
    if minor >= 35:
        assert pause.returncode == 1 and pause.stderr.startswith("unknown flag: --pod-infra-container-image")
    else:
        assert pause.returncode == 0
    assert call(kubelet, "--node-ip", "192.0.2.10", "--config=/var/lib/kubelet/config.yaml").returncode == 0
    assert "nodeIP can't be loopback address" in call(kubelet, "--node-ip=127.0.0.1").stderr
    assert call(kubelet, "--no-such-flag").stderr.startswith("unknown flag: --no-such-flag")
