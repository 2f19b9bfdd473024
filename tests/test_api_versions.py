"""API versions per release: manifests a bundle carries are checked at build, and a node checks before an upgrade across minors.

kubeadm, kubelet and kubectl on the node are the STAND-INS of tests/upstream.py; the stand-in
kubectl answers `api-versions` as a default cluster of its version does (the real kubectl's
command line is checked in tests/test_kubectl.py).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bundle import apis
from tests.conftest import build
from tests.test_install import node_config
from tests.upstream import LocalUpstream, api_versions, free_port

# The seed's example: an old flannel manifest's RBAC objects at rbac.authorization.k8s.io/v1beta1.
OLD_FLANNEL_RBAC = """---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1beta1
metadata:
  name: flannel
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1beta1
metadata:
  name: flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: flannel
subjects:
- kind: ServiceAccount
  name: flannel
  namespace: kube-system
"""
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site-settings\n  namespace: default\ndata:\n  zone: a\n"
# Deprecated since 1.19 and still served: a warning, never a refusal.
COMPONENT_STATUS = "apiVersion: v1\nkind: ComponentStatus\nmetadata:\n  name: scheduler\n"
FLOWSCHEMA_V1BETA3 = """apiVersion: flowcontrol.apiserver.k8s.io/v1beta3
kind: FlowSchema
metadata:
  name: site-batch
spec:
  priorityLevelConfiguration:
    name: workload-low
  matchingPrecedence: 9000
"""
CRD_AND_USE = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object}}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: one
"""


@pytest.mark.parametrize("minor", apis.TABLE_MINORS)
def test_rbac_v1beta1_is_refused_for_every_supported_minor(minor):
    checked = apis.check_documents([("kube-flannel-old.yml", apis.load_documents(OLD_FLANNEL_RBAC.encode()))], minor)
    assert [(f.level, f.document, f.kind, f.replacement) for f in checked.findings] == [
        ("removed", 1, "ClusterRole", "rbac.authorization.k8s.io/v1"),
        ("removed", 2, "ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ]
    assert "kube-flannel-old.yml document 1 (ClusterRole flannel): rbac.authorization.k8s.io/v1beta1 ClusterRole is not served since 1.22" in (
        checked.findings[0].describe()
    )


def test_the_table_per_minor_names_its_source_and_what_each_minor_serves():
    assert apis.READ_ON and "deprecation-guide" in apis.SOURCE
    for minor in apis.TABLE_MINORS:
        rules = apis.table(minor)
        assert rules.note == ""
        assert {"apps/v1", "v1", "rbac.authorization.k8s.io/v1", "resource.k8s.io/v1"} <= set(rules.served)
        assert "flowcontrol.apiserver.k8s.io/v1beta3" not in rules.served and ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema") in rules.removed
        assert ("v1", "Endpoints") in rules.deprecated
    assert "flowcontrol.apiserver.k8s.io/v1beta3" in apis.table(31).served and ("v1", "Endpoints") not in apis.table(31).deprecated
    assert "checked against 1.38" in apis.table(39).note


def test_a_crd_among_the_manifests_serves_its_own_group_version():
    checked = apis.check_documents([("widgets.yaml", apis.load_documents(CRD_AND_USE.encode()))], 36)
    assert checked.findings == []
    alone = apis.check_documents([("widget.yaml", apis.load_documents(CRD_AND_USE.split("---\n")[1].encode()))], 36)
    assert [f.level for f in alone.findings] == ["unknown"]


def test_what_a_live_cluster_serves_that_the_target_minor_dropped():
    live = api_versions("v1.31.4").split()
    assert apis.live_breaks(live, 31) == []
    (line,) = apis.live_breaks(live, 32)
    assert line.startswith("the cluster serves flowcontrol.apiserver.k8s.io/v1beta3 (FlowSchema, PriorityLevelConfiguration), which 1.32 no longer serves")
    assert apis.live_breaks(api_versions("v1.34.0").split(), 35) == []


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_build_refuses_a_removed_api_naming_file_document_kind_and_replacement(upstream, keys, tmp_path):
    bad = _write(tmp_path, "kube-flannel-old.yml", OLD_FLANNEL_RBAC)
    result = build(upstream, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", "--manifest", bad)
    assert result.returncode == 1 and not (tmp_path / "k8s.tar").exists()
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("airlock: error: Kubernetes 1.") and "does not serve APIs these manifests use" in error
    assert f"{bad} document 1 (ClusterRole flannel): rbac.authorization.k8s.io/v1beta1 ClusterRole is not served since 1.22; use rbac.authorization.k8s.io/v1" in error
    assert f"{bad} document 2 (ClusterRoleBinding flannel)" in error
    assert "Traceback" not in result.stderr


def test_build_carries_extra_manifests_warns_on_deprecated_and_records_findings(upstream, keys, tmp_path):
    site = _write(tmp_path, "site.yaml", CONFIGMAP + "---\n" + COMPONENT_STATUS)
    result = build(upstream, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", "--manifest", site, "--manifest", _write(tmp_path, "w.yaml", CRD_AND_USE))
    assert result.returncode == 0, result.stderr
    assert f"warning: {site} document 2 (ComponentStatus scheduler): v1 ComponentStatus is deprecated since 1.19" in result.stderr
    with tarfile.open(tmp_path / "k8s.tar") as archive:
        names = archive.getnames()
        assert names[:2] == ["bundle.json", "bundle.json.sig"] and names[-3:] == ["api-versions.json", "sbom.spdx.json", "vulnerabilities.json"]
        assert archive.extractfile("manifests/addons/01-site.yaml").read().decode() == site.read_text()
        findings = json.loads(archive.extractfile("api-versions.json").read())
    minor = json.loads(tarfile.open(tmp_path / "k8s.tar").extractfile("bundle.json").read())["kubernetes"]["version"].split(".")[1]
    assert findings["minor"] == f"1.{minor}" and findings["table"]["read"] == apis.READ_ON
    assert [m["member"] for m in findings["manifests"]] == ["manifests/cni/kube-flannel.yml", "manifests/addons/01-site.yaml", "manifests/addons/02-w.yaml"]
    assert [(f["level"], f["kind"], f["file"]) for f in findings["findings"]] == [("deprecated", "ComponentStatus", str(site))]


def test_the_node_applies_extra_manifests_after_the_cni(upstream, keys, tmp_path):
    from tests.conftest import airlock_node
    from tests.test_install import IGNORE

    site = _write(tmp_path, "site.yaml", CONFIGMAP)
    build(upstream, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", "--manifest", site, check=True)
    root, log = tmp_path / "root", tmp_path / "standin.log"
    done = airlock_node(
        "init", tmp_path / "k8s.tar", "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", node_config(tmp_path, free_port()),
        "--ignore-preflight-errors", IGNORE, "--skip-phases", "images", env={"AIRLOCK_STANDIN_LOG": str(log)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    applies = [line.rsplit(" ", 1)[-1] for line in log.read_text().splitlines() if " apply -f " in line]
    assert applies == [str(root / "var/lib/airlock/cni/kube-flannel.yml"), str(root / "var/lib/airlock/addons/01-site.yaml")]
    assert (root / "var/lib/airlock/addons/01-site.yaml").read_text() == CONFIGMAP


@pytest.fixture(scope="module")
def two_minors(tmp_path_factory):
    from tests.conftest import TOOLS, require

    require(*TOOLS)
    local = LocalUpstream(tmp_path_factory.mktemp("two-minors"), versions=("v1.33.7", "v1.34.4"), labels={"stable": "v1.34.4"}, extra_images={}).start()
    yield local
    local.close()


def test_an_upgrade_across_minors_stops_on_what_the_target_no_longer_serves(two_minors, keys, tmp_path):
    """1.33 -> 1.34 (the way onto the supported range). The guide lists no removal for 1.33-1.38, so what would break
    here is what a node installed by an airlock that did not check API versions may hold: a manifest it applied that
    uses flowcontrol.apiserver.k8s.io/v1beta3 (gone since 1.32), and a cluster whose discovery still lists that
    group-version (the stand-in kubectl is told so; its default answer is a default cluster's)."""
    from tests.conftest import airlock_node
    from tests.test_install import IGNORE

    cache = tmp_path / "cache"
    old = build(two_minors, keys, tmp_path / "old.tar", "v1.33.7", cache, "--serial", "100", "--allow-unsupported-version", check=True)
    assert "warning: Kubernetes v1.33.7 is outside the supported" in old.stderr
    refused = build(two_minors, keys, tmp_path / "refused.tar", "v1.34.4", cache, "--manifest", _write(tmp_path, "flow.yaml", FLOWSCHEMA_V1BETA3))
    assert refused.returncode == 1 and "is not served since 1.32; use flowcontrol.apiserver.k8s.io/v1" in refused.stderr
    build(two_minors, keys, tmp_path / "new.tar", "v1.34.4", cache, "--serial", "101", check=True)
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())

    def node(command: str, bundle: str, *extra: str, env: dict | None = None):
        return airlock_node(command, tmp_path / bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
                            "--skip-phases", "images", *extra, env={"AIRLOCK_STANDIN_LOG": str(log), **(env or {})})  # fmt: skip

    assert node("init", "old.tar", "--ignore-preflight-errors", IGNORE).returncode == 0
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "etc/kubernetes/admin.conf").write_text("# admin kubeconfig placeholder\n")
    (root / "var/lib/airlock/addons").mkdir(parents=True, exist_ok=True)
    applied = root / "var/lib/airlock/addons/01-flow.yaml"
    applied.write_text(FLOWSCHEMA_V1BETA3)
    kubeadm = (root / "usr/local/bin/kubeadm").read_bytes()
    old_cluster = {"AIRLOCK_STANDIN_API_VERSIONS": api_versions("v1.33.7") + " flowcontrol.apiserver.k8s.io/v1beta3"}
    stopped = node("upgrade", "new.tar", "--ignore-preflight-errors", IGNORE, env=old_cluster)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, said
    assert "phase api-versions" in stopped.stderr and "upgrading to Kubernetes 1.34 would break 2 thing(s)" in stopped.stderr
    assert "[ERROR api-versions] the cluster serves flowcontrol.apiserver.k8s.io/v1beta3 (FlowSchema, PriorityLevelConfiguration), which 1.34 no longer serves" in said
    assert f"[ERROR api-versions] {applied} document 1 (FlowSchema site-batch): flowcontrol.apiserver.k8s.io/v1beta3 FlowSchema is not served since 1.32" in said
    assert f"kubectl --kubeconfig {root / 'etc/kubernetes/admin.conf'} api-versions" in log.read_text().splitlines()
    assert (root / "usr/local/bin/kubeadm").read_bytes() == kubeadm and json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["version"] == "v1.33.7"
    # Migrated: the old manifest is gone and the cluster is a default one. The rerun goes on and finishes.
    applied.unlink()
    done = node("upgrade", "new.tar", "--ignore-preflight-errors", IGNORE)
    assert done.returncode == 0, done.stderr
    assert "against Kubernetes 1.34" in done.stdout + done.stderr
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["version"] == "v1.34.4"


def test_an_operator_may_accept_what_would_break(two_minors, keys, tmp_path):
    """--ignore-preflight-errors api-versions turns the stop into warnings (a dry run shows them too)."""
    from tests.conftest import airlock_node
    from tests.test_install import IGNORE

    cache = tmp_path / "cache"
    build(two_minors, keys, tmp_path / "old.tar", "v1.33.7", cache, "--serial", "100", "--allow-unsupported-version", check=True)
    build(two_minors, keys, tmp_path / "new.tar", "v1.34.4", cache, "--serial", "101", check=True)
    root = tmp_path / "root"
    config = node_config(tmp_path, free_port())
    common = ("--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--skip-phases", "images")
    env = {"AIRLOCK_STANDIN_LOG": str(tmp_path / "log"), "AIRLOCK_STANDIN_API_VERSIONS": "v1 apps/v1 flowcontrol.apiserver.k8s.io/v1beta3"}
    assert airlock_node("init", tmp_path / "old.tar", *common, "--ignore-preflight-errors", IGNORE, env=env).returncode == 0
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "etc/kubernetes/admin.conf").write_text("# admin kubeconfig placeholder\n")
    done = airlock_node("upgrade", tmp_path / "new.tar", *common, "--ignore-preflight-errors", IGNORE + ",api-versions", env=env)
    assert done.returncode == 0, done.stderr
    assert "[WARNING api-versions] the cluster serves flowcontrol.apiserver.k8s.io/v1beta3" in done.stdout + done.stderr
