"""Offline upgrades: a delta moves only changed blobs, and a node upgrades safely with it.

kubeadm, kubelet and kubectl are STAND-INS (tests/upstream.py) that record their
calls; containerd, the registry and the store are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from bundle.manifest import REVIEW_MEMBERS
from installer.node import NodeError
from installer.upgradecheck import check_skew
from tests.conftest import AIRLOCK, airlock, airlock_node, require
from tests.containerd import Containerd
from tests.test_install import IGNORE, check_store, node_config
from tests.upstream import LocalUpstream, free_port

OLD, NEW = "v1.36.3", "v1.36.4"  # two patches of one minor; the minor boundaries are 1.36 -> 1.37 and 1.33 -> 1.34


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    require("docker-registry", "skopeo", "umoci")
    local = LocalUpstream(
        tmp_path_factory.mktemp("releases"), versions=(OLD, NEW, "v1.37.2", "v1.38.0", "v1.35.3", "v1.33.7", "v1.34.4"), labels={"stable-1.36": NEW},
        extra_images={}
    ).start()
    yield local
    local.close()


@pytest.fixture(scope="module")
def bundles(releases, keys, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("upgrade-bundles")
    cache = out / "cache"
    key = keys["ed25519"] / "airlock.key"

    def build(name: str, version: str, serial: int, *extra) -> Path:
        path = out / f"{name}.tar"
        airlock("build", "-o", path, "--kubernetes-version", version, "--sign-key", key, "--serial", serial, "--cache-dir", cache,
                *releases.build_flags(), *extra, check=True)
        return path

    made = {"full": build("full", OLD, 100)}
    made["delta"] = build("delta", NEW, 101, "--base", made["full"])
    made["full-new"] = build("full-new", NEW, 101)
    made["other-base"] = build("other-base", OLD, 90)
    made["wrong-base-delta"] = build("wrong-base-delta", NEW, 102, "--base", made["other-base"])
    made["skip-minor"] = build("skip-minor", "v1.38.0", 103)
    made["older"] = build("older", "v1.35.3", 104)
    made["next-minor"] = build("next-minor", "v1.37.2", 105)
    # A cluster an earlier airlock installed at 1.33 (now outside the supported range), and the 1.34 bundle that moves it off.
    made["at-1.33"] = build("at-1.33", "v1.33.7", 100, "--allow-unsupported-version")
    made["to-1.34"] = build("to-1.34", "v1.34.4", 101)
    return made


def manifest_of(bundle: Path) -> dict:
    with tarfile.open(bundle) as archive:
        return json.loads(archive.extractfile("bundle.json").read())


def test_a_delta_built_in_its_base_s_second_comes_after_it(bundles, releases, keys, tmp_path):
    """Without --serial the serial is the build time in seconds; a delta built within the second its base was built
    (fast builds, a runbook's two commands) still gets a higher serial than its base, as a node requires."""
    delta = tmp_path / "delta.tar"
    airlock("build", "-o", delta, "--kubernetes-version", NEW, "--sign-key", keys["ed25519"] / "airlock.key", "--base", bundles["full"],
            "--cache-dir", bundles["full"].parent / "cache", *releases.build_flags(), env={"SOURCE_DATE_EPOCH": "100"}, check=True)  # fmt: skip
    assert manifest_of(bundles["full"])["serial"] == 100 and manifest_of(delta)["serial"] == 101


def members(bundle: Path) -> set[str]:
    with tarfile.open(bundle) as archive:
        return {m.name for m in archive.getmembers()}


def node(command: str, bundle: Path, keys, root: Path, config: Path, log: Path, containerd: Containerd | None, *extra, env=None):
    args = [command, bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, *extra]
    if containerd is not None:
        args += ["--containerd-address", containerd.socket]
    return airlock_node(*args, env={"AIRLOCK_STANDIN_LOG": str(log), **(env or {})})


def test_a_delta_carries_only_what_changed(bundles):
    full, delta = manifest_of(bundles["full"]), manifest_of(bundles["delta"])
    assert delta["base"]["serial"] == 100 and delta["kubernetes"]["version"] == NEW
    # It still describes the whole set, so a node can check it has everything.
    assert {f["path"] for f in delta["files"]} == {f["path"] for f in manifest_of(bundles["full-new"])["files"]}
    carried = members(bundles["delta"]) - {"bundle.json", "bundle.json.sig"}
    full_digests = {f["sha256"] for f in full["files"]}
    for entry in delta["files"]:
        # What a reviewer reads first (bundle.manifest.REVIEW_MEMBERS) is always carried: inspect and report read it from the start.
        assert (entry["path"] in carried) == (entry["sha256"] not in full_digests or entry["path"] in REVIEW_MEMBERS), entry["path"]
    carried_files = {p for p in carried if not p.startswith("images/blobs/")}
    assert {p.rsplit("/", 1)[-1] for p in carried_files if p.startswith("bin/")} == {"kubeadm", "kubelet", "kubectl"}
    assert not any(p.startswith(("cni/", "manifests/")) for p in carried_files)
    # Unchanged images (etcd, coredns, pause, flannel) contribute no blob at all.
    unchanged = [i for i in delta["images"] if i["reference"] in {j["reference"] for j in full["images"]}]
    assert {i["reference"].split("/")[-1].split(":")[0] for i in unchanged} >= {"etcd", "coredns", "pause", "flannel"}
    assert bundles["delta"].stat().st_size < bundles["full-new"].stat().st_size / 2


def test_diff_reports_versions_images_and_bytes(bundles):
    result = airlock("diff", bundles["full"], bundles["full-new"], "--output", "json", check=True)
    document = json.loads(result.stdout)
    assert document["old_version"] == OLD and document["new_version"] == NEW
    changed = {change["new"] for change in document["images_changed"]}
    assert changed == {f"registry.k8s.io/{n}:{NEW}" for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")}
    assert document["delta_bytes"] < document["tag_level_bytes"] < document["full_bytes"]
    assert document["delta_bytes"] == sum(f["size"] for f in manifest_of(bundles["delta"])["files"] if f.get("carried", True))
    text = airlock("diff", bundles["full"], bundles["full-new"], check=True).stdout
    assert f"kubernetes  {OLD} -> {NEW}" in text and "tag-level update" in text


def test_verify_counts_the_members_a_delta_carries(bundles, keys):
    delta = manifest_of(bundles["delta"])
    carried = sum(1 for f in delta["files"] if f.get("carried", True))
    assert 0 < carried < len(delta["files"])
    out = airlock("verify", bundles["delta"], "--key", keys["ed25519"] / "airlock.pub", check=True).stdout
    assert f"delta on serial 100: {carried} of {len(delta['files'])} members carried and checked" in out
    full = airlock("verify", bundles["full"], "--key", keys["ed25519"] / "airlock.pub", check=True).stdout
    assert f"{len(manifest_of(bundles['full'])['files'])} members," in full and "delta" not in full


def test_the_upgrades_runbook_runs_as_written(releases, keys, tmp_path):
    """docs/upgrades.md's first block, command by command; builds only gain the mirror flags that point at the local upstream."""
    import re
    import shlex
    import shutil

    text = (Path(__file__).parents[1] / "docs" / "upgrades.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    (tmp_path / "keys").mkdir()
    for name in ("airlock.key", "airlock.pub"):
        shutil.copy(keys["ed25519"] / name, tmp_path / "keys" / name)
    outputs, progress = [], []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "airlock"
        if argv[1] == "build":
            argv += ["--cache-dir", str(tmp_path / "cache"), *releases.build_flags()]
        result = subprocess.run([AIRLOCK, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        outputs.append(result.stdout)
        progress.append(result.stderr.splitlines())
    assert len(outputs) == 4
    assert f"kubernetes  {OLD} -> {NEW}" in outputs[2] and "delta on serial" in outputs[3]
    # The builds' progress names the version: an exact one once; a delta's from its base's version to its own.
    assert f"kubernetes {OLD}" in progress[0] and not [line for line in progress[0] if " -> " in line and line.startswith("kubernetes")]
    base_serial = manifest_of(tmp_path / "k8s-1.36.3.tar")["serial"]
    assert f"kubernetes {OLD} -> {NEW} (delta on serial {base_serial})" in progress[1], progress[1]


def test_skew_rules():
    check_skew("v1.36.3", "v1.36.4", "first-control-plane", None)
    check_skew("v1.36.4", "v1.37.1", "first-control-plane", None)
    check_skew("v1.33.7", "v1.34.4", "first-control-plane", None)
    with pytest.raises(NodeError, match="skips a minor"):
        check_skew("v1.36.4", "v1.38.0", "first-control-plane", None)
    with pytest.raises(NodeError, match="never downgraded"):
        check_skew("v1.36.4", "v1.35.3", "first-control-plane", None)
    with pytest.raises(NodeError, match="newer than the API server"):
        check_skew("v1.36.3", "v1.36.4", "worker", "v1.36.3")
    check_skew("v1.36.3", "v1.36.4", "worker", "v1.36.4")
    # A kubelet may trail the API server by three minors, never more (Kubernetes' version-skew policy).
    with pytest.raises(NodeError, match="more than three minors behind"):
        check_skew("v1.33.7", "v1.33.8", "worker", "v1.37.2")


@pytest.mark.parametrize(("installed", "upgrade", "version"), [("full", "next-minor", "v1.37.2"), ("at-1.33", "to-1.34", "v1.34.4")])
def test_upgrade_across_a_minor_boundary(bundles, keys, tmp_path, installed, upgrade, version):
    """1.36 -> 1.37, and a cluster an earlier airlock installed at 1.33 -> 1.34: each minor's kubeadm runs the upgrade."""
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    assert node("init", bundles[installed], keys, root, config, log, None, "--skip-phases", "images,kubeadm-init,cni").returncode == 0
    before = manifest_of(bundles[installed])["kubernetes"]["version"]
    # The new minor's kubeadm checks the skew itself against the cluster's version (one minor at a time).
    upgraded = node("upgrade", bundles[upgrade], keys, root, config, log, None, "--skip-phases", "images", env={"AIRLOCK_STANDIN_SERVER_VERSION": before})
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"kubeadm upgrade apply {version} --yes" in log.read_text().splitlines()
    for name in ("kubeadm", "kubelet"):
        assert f"STAND-IN for {name} {version}" in (root / "usr/local/bin" / name).read_text()
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["version"] == version


def snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "staging" not in str(p) and p.name != ".lock"}


def test_upgrade_with_the_delta(bundles, keys, containerd, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    assert node("init", bundles["full"], keys, root, config, log, containerd).returncode == 0
    before = snapshot(root)
    for name, message in (
        ("wrong-base-delta", "install that base first"),
        ("skip-minor", "skips a minor version"),
        ("older", "never downgraded"),
    ):
        refused = node("upgrade", bundles[name], keys, root, config, log, containerd)
        assert refused.returncode == 1 and message in refused.stderr, (name, refused.stderr)
        assert {k: v for k, v in snapshot(root).items() if not k.endswith("state.json")} == {k: v for k, v in before.items() if not k.endswith("state.json")}
    upgraded = node("upgrade", bundles["delta"], keys, root, config, log, containerd)
    assert upgraded.returncode == 0, upgraded.stderr
    calls = log.read_text().splitlines()
    assert f"kubeadm upgrade apply {NEW} --yes" in calls
    assert not any("upgrade plan" in c for c in calls)
    assert NEW in (root / "usr/local/bin/kubelet").read_text() and NEW in (root / "usr/local/bin/kubeadm").read_text()
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"]["serial"] == 101 and state["installed"]["version"] == NEW
    images = containerd.image_digests()
    for entry in manifest_of(bundles["delta"])["images"]:
        assert images[entry["reference"]] == entry["digest"]
    # The old images stay in the store until prune.
    index = json.loads((root / "var/lib/airlock/store/index.json").read_text())
    names = {e["annotations"]["io.containerd.image.name"] for e in index["manifests"]}
    assert f"registry.k8s.io/kube-apiserver:{OLD}" in names and f"registry.k8s.io/kube-apiserver:{NEW}" in names
    pruned = airlock("store", "prune", "--root", root, check=True)
    assert "removed" in pruned.stdout and not pruned.stdout.startswith("removed 0 ")
    names = {e["annotations"]["io.containerd.image.name"] for e in json.loads((root / "var/lib/airlock/store/index.json").read_text())["manifests"]}
    assert f"registry.k8s.io/kube-apiserver:{OLD}" not in names and f"registry.k8s.io/kube-apiserver:{NEW}" in names
    checked = airlock("store", "check", "--root", root, check=True)
    assert ", 0 corrupt" in checked.stdout
    check_store(root)
    # A corrupt blob is found and named.
    victim = next((root / "var/lib/airlock/store/blobs/sha256").iterdir())
    victim.write_bytes(victim.read_bytes() + b"x")
    corrupt = airlock("store", "check", "--root", root)
    assert corrupt.returncode == 1 and victim.name in corrupt.stderr


def test_failure_before_upgrade_apply_puts_the_old_kubeadm_back(bundles, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    fast = ("--skip-phases", "images,kubeadm-init,cni")
    assert node("init", bundles["full"], keys, root, config, log, None, *fast).returncode == 0
    # What `kubeadm init phase kubeconfig` writes on a real node (the stand-in writes nothing).
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "etc/kubernetes/admin.conf").write_text("# admin kubeconfig placeholder\n")
    old_kubeadm = (root / "usr/local/bin/kubeadm").read_bytes()
    failed = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--skip-phases", "images", env={"AIRLOCK_STANDIN_FAIL": "drain"})
    assert failed.returncode == 1 and "phase kubeadm-upgrade" in failed.stderr
    assert (root / "usr/local/bin/kubeadm").read_bytes() == old_kubeadm
    assert OLD in (root / "usr/local/bin/kubelet").read_text()
    assert not any(c.startswith("kubeadm upgrade apply") for c in log.read_text().splitlines())
    # Fixed (the drain works now): the rerun resumes and finishes.
    done = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--skip-phases", "images")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert f"kubeadm upgrade apply {NEW} --yes" in calls and any(c.endswith("uncordon cp1") for c in calls)
    admin = root / "etc/kubernetes/admin.conf"
    assert f"kubectl --kubeconfig {admin} drain cp1 --ignore-daemonsets --delete-emptydir-data --timeout=600s" in calls


def test_killed_during_upgrade_then_rerun_finishes(bundles, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    fast = ("--skip-phases", "images,kubeadm-init,cni")
    assert node("init", bundles["full"], keys, root, config, log, None, *fast).returncode == 0
    args = ["upgrade", bundles["delta"], "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
            "--ignore-preflight-errors", IGNORE, "--skip-phases", "images"]
    env = {**os.environ, "AIRLOCK_STANDIN_LOG": str(log), "AIRLOCK_STANDIN_SLEEP": "30"}
    process = subprocess.Popen([AIRLOCK, *map(str, args)], stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "kubeadm upgrade apply" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"]["serial"] == 100 and "kubeadm-upgrade" not in state["run"]["done"]
    rerun = node("upgrade", bundles["delta"], keys, root, config, log, None, "--skip-phases", "images")
    assert rerun.returncode == 0, rerun.stderr
    assert "[unpack] already done (resuming)" in rerun.stderr
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == 101
    check_store(root)


def test_a_worker_is_never_ahead_of_the_api_server(bundles, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port(), controlPlaneEndpoint="10.0.0.10:6443", token="abcdef.0123456789abcdef", caCertHashes=["sha256:" + "1" * 64])
    assert node("join", bundles["full"], keys, root, config, log, None, "--skip-phases", "images").returncode == 0
    refused = node("upgrade", bundles["delta"], keys, root, config, log, None, env={"AIRLOCK_STANDIN_SERVER_VERSION": OLD})
    assert refused.returncode == 1 and "newer than the API server" in refused.stderr and "upgrade the first control plane first" in refused.stderr
    allowed = node("upgrade", bundles["delta"], keys, root, config, log, None, "--skip-phases", "images", env={"AIRLOCK_STANDIN_SERVER_VERSION": NEW})
    assert allowed.returncode == 0, allowed.stderr
    assert "kubeadm upgrade node" in log.read_text().splitlines()


def test_a_worker_drains_only_with_an_admin_kubeconfig(bundles, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port(), nodeName="w1", controlPlaneEndpoint="10.0.0.10:6443", token="abcdef.0123456789abcdef",
                         caCertHashes=["sha256:" + "1" * 64])
    assert node("join", bundles["full"], keys, root, config, log, None, "--skip-phases", "images").returncode == 0
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "etc/kubernetes/kubelet.conf").write_text("# kubelet credentials placeholder\n")
    installed_before = json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]
    kubeadm_before = (root / "usr/local/bin/kubeadm").read_bytes()
    env = {"AIRLOCK_STANDIN_SERVER_VERSION": NEW}
    log.write_text("")
    refused = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--skip-phases", "images", env=env)
    assert refused.returncode == 1 and "needs --kubeconfig" in refused.stderr and "nothing was changed" in refused.stderr
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"] == installed_before and state["run"]["done"] == ["verify"]
    assert not any((root / "var/lib/airlock/staging").iterdir())
    assert (root / "usr/local/bin/kubeadm").read_bytes() == kubeadm_before
    assert not any(" drain " in c or " uncordon " in c for c in log.read_text().splitlines())
    plan = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    planned = [line.strip() for line in plan.stdout.splitlines() if line.strip()]
    assert [line for line in planned if not line.startswith("would ")] == []
    assert any(line.startswith("would stop here: upgrade --drain on this node needs --kubeconfig") for line in planned)
    assert any(line.endswith("drain w1 --ignore-daemonsets --delete-emptydir-data --timeout=600s") for line in planned)
    missing = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--kubeconfig", tmp_path / "nope.conf", env=env)
    assert missing.returncode == 1 and "nope.conf: no such file" in missing.stderr
    admin = tmp_path / "admin.conf"
    admin.write_text("# an admin kubeconfig copied from a control plane\n")
    done = node("upgrade", bundles["delta"], keys, root, config, log, None, "--drain", "--kubeconfig", admin, "--skip-phases", "images", env=env)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert f"kubectl --kubeconfig {admin} drain w1 --ignore-daemonsets --delete-emptydir-data --timeout=600s" in calls
    assert f"kubectl --kubeconfig {admin} uncordon w1" in calls
    assert not any("kubelet.conf" in c and (" drain " in c or " uncordon " in c) for c in calls)


def test_a_delta_refuses_a_store_file_someone_changed(bundles, keys, tmp_path):
    """The store keeps the base's files for the next delta; one rewritten there is re-hashed on its way out and refused."""
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    assert node("init", bundles["full"], keys, root, config, log, None, "--skip-phases", "images,kubeadm-init,cni").returncode == 0
    unchanged = [f for f in manifest_of(bundles["delta"])["files"] if f.get("carried") is False and not f["path"].startswith("images/")]
    victim = next(f for f in unchanged if f["path"].endswith("/runc"))
    stored = root / "var/lib/airlock/store/blobs/sha256" / victim["sha256"]
    assert stored.stat().st_mode & 0o7777 == 0o644 and stored.stat().st_nlink == 1
    stored.write_bytes(b"#!/bin/sh\necho owned\n")
    refused = node("upgrade", bundles["delta"], keys, root, config, log, None, "--skip-phases", "images")
    assert refused.returncode == 1, refused.stderr
    assert f"store blob {stored}" in refused.stderr and "changed since it was stored" in refused.stderr
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == 100
    assert b"owned" not in b"".join(p.read_bytes() for p in (root / "var/lib/airlock/staging").rglob("runc"))


def test_upgrade_a_node_and_afterwards_run_as_written(bundles, keys, containerd, tmp_path):
    """docs/upgrades.md's node blocks on a node that runs the full bundle: no --key (the node kept it), the upgrade,
    the same command again (nothing to do, exit 0), then store check and prune. The test adds only where the node is."""
    import shutil

    from tests.test_docs import ROOT, Shell, blocks

    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    assert node("init", bundles["full"], keys, root, config, log, containerd).returncode == 0
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(bundles["delta"], here / f"k8s-{NEW.lstrip('v')}-delta.tar")
    upgrade_block, afterwards = blocks(ROOT / "docs" / "upgrades.md", "## Upgrade a node")[:2]
    shell = Shell(here, env={"AIRLOCK_STANDIN_LOG": str(log)}, extra={
        "airlock-node upgrade": ["--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, "--containerd-address", containerd.socket],
        "airlock-node store": ["--root", root],
    })
    upgraded, again = (shell.run(line) for line in upgrade_block)
    assert f"kubeadm upgrade apply {NEW} --yes" in log.read_text()
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == 101
    assert "already runs" in again and "nothing to upgrade" in again
    checked, pruned = (shell.run(line) for line in afterwards)
    assert " 0 corrupt" in checked and "removed " in pruned
