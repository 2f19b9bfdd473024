"""An operator installs a node from a bundle, offline, into a scratch root with a real containerd.

kubeadm, kubelet and kubectl in these bundles are STAND-INS (see tests/upstream.py):
they record every call. A stand-in is a test double, never a claim that a
cluster came up; everything else here is real (containerd, runc, the registry).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import airlock, airlock_node, assert_blobs_whole, node_command, python39, require
from tests.containerd import Containerd
from tests.nodenet import NodeNetwork, host_address
from tests.upstream import COMPONENT_IMAGES, free_port

IGNORE = "module-br_netfilter,swap,port-6443,port-2379,port-2380,port-10250,port-10257,port-10259,root,disk-space"


def node_config(tmp_path: Path, port: int, **extra) -> Path:
    config = tmp_path / "node.yaml"
    # The host's own address: kubelet refuses a loopback node IP, and airlock never writes one.
    document = {"nodeName": "cp1", "advertiseAddress": host_address(), "registry": {"listen": f"127.0.0.1:{port}"}, **extra}
    config.write_text(json.dumps(document))
    return config


def install(command: str, bundle: Path, keys, root: Path, config: Path, containerd: Containerd | None, log: Path, *extra: str, python: str | None = None) -> subprocess.CompletedProcess:
    args = [command, bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, *extra]
    if containerd is not None:
        args += ["--containerd-address", containerd.socket]
    return airlock_node(*args, env={"AIRLOCK_STANDIN_LOG": str(log)}, python=python)


def bundle_manifest(bundle: Path) -> dict:
    with tarfile.open(bundle) as archive:
        return json.loads(archive.extractfile("bundle.json").read())


@pytest.mark.parametrize("python", ["system", "3.9"])
def test_init_installs_a_node_whose_images_all_come_from_the_bundle(node_bundle, keys, containerd, tmp_path, python):
    """From airlock-node.pyz under `python -I`: the system Python 3, and the oldest the node installer supports."""
    python = python39() if python == "3.9" else None
    root, log = tmp_path / "root", tmp_path / "standin.log"
    result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), containerd, log, python=python)
    assert result.returncode == 0, result.stderr
    manifest = bundle_manifest(node_bundle)
    expected = {image["reference"]: image["digest"] for image in manifest["images"]}
    assert containerd.image_digests() == expected
    labels = containerd.ctr("images", "ls").stdout
    assert labels.count("io.cri-containerd.pinned=pinned") >= len(expected)
    run = containerd.ctr("run", "--rm", "registry.k8s.io/kube-apiserver:v1.36.4", "probe", "/bin/busybox", "cat", "/etc/airlock-test-image")
    assert run.stdout.strip() == "registry.k8s.io/kube-apiserver:v1.36.4 amd64"
    calls = log.read_text().splitlines()
    kubeadm_calls = [c for c in calls if c.startswith("kubeadm ")]
    from installer.commands import INIT_STEPS, WAIT, ignore_flag
    from installer.minors import KUBEADM_IGNORED_CHECKS_CONTROL_PLANE

    # kubeadm's own preflight first, then its phases; 1.36's wait-control-plane is not run under --root (kubelet is not started).
    assert kubeadm_calls[0].startswith(f"kubeadm init phase preflight {ignore_flag(KUBEADM_IGNORED_CHECKS_CONTROL_PLANE)} --config ")
    assert [c.split(" --config ")[0] for c in kubeadm_calls[1:] if c.startswith("kubeadm init phase")] == [
        "kubeadm init phase " + " ".join(step) for step in INIT_STEPS[1:] if step != WAIT
    ]
    assert "kubelet is not started under --root" in result.stderr
    documents = list(yaml.safe_load_all((root / "var/lib/airlock/kubeadm/init.yaml").read_text()))
    cluster = next(d for d in documents if d["kind"] == "ClusterConfiguration")
    assert cluster["kubernetesVersion"] == "v1.36.4" and cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cluster["imageRepository"] == "registry.k8s.io"
    assert "stable" not in " ".join(calls)
    assert any(c.startswith("kubectl --kubeconfig") and c.endswith("kube-flannel.yml") for c in calls)
    for name in ("kubeadm", "kubelet", "kubectl", "crictl"):
        assert os.access(root / "usr/local/bin" / name, os.X_OK)
    assert (root / "opt/cni/bin/bridge").exists()
    hosts = (root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
    assert "https://registry.k8s.io" not in hosts.split("[host")[0].replace("# ", "")
    assert (root / "etc/systemd/system/multi-user.target.wants/kubelet.service").is_symlink()
    assert (root / "etc/systemd/system/multi-user.target.wants/airlock-registry.service").is_symlink()
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"]["serial"] == manifest["serial"] and state["run"] is None
    # The node registry runs the installed one-file installer, the bundle's signed member, with the system Python.
    pyz = next(entry for entry in manifest["files"] if entry["path"] == "bin/airlock-node.pyz")
    installed = root / "usr/local/lib/airlock/airlock-node.pyz"
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == pyz["sha256"]
    unit = (root / "etc/systemd/system/airlock-registry.service").read_text()
    (exec_start,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    # systemd's quoting of these plain words reads the same as the shell's.
    assert shlex.split(exec_start)[:6] == ["/usr/bin/python3", "-I", "/usr/local/lib/airlock/airlock-node.pyz", "registry", "serve", "--store"]
    # init on an initialised node refuses before it changes anything (kubeadm init would fail half way through).
    before = {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    again = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), containerd, log, python=python)
    assert again.returncode == 1 and f"already initialised at serial {manifest['serial']}" in again.stderr, again.stderr
    assert "use airlock-node upgrade, or airlock-node reset first" in again.stderr
    assert {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"} == before


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def outside_staging(paths: set[str]) -> set[str]:
    allowed = ("var/lib/airlock/staging", "var/lib/airlock/state.json", "var/lib/airlock/.lock")
    return {p for p in paths if not p.startswith(allowed) and p not in ("var", "var/lib", "var/lib/airlock")}


FAST = ("--skip-phases", "images,kubeadm-init,cni")


def test_refused_bundles_write_nothing_outside_staging(node_bundle, upstream, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    # A flipped byte in an image blob: found during unpack, before anything is activated.
    tampered = tmp_path / "tampered.tar"
    data = bytearray(node_bundle.read_bytes())
    with tarfile.open(node_bundle) as archive:
        blob = next(m for m in archive.getmembers() if m.name.startswith("images/blobs/") and m.size > 100000)
    data[blob.offset_data + 1000] ^= 1
    tampered.write_bytes(bytes(data))
    result = install("init", tampered, keys, root, config, None, log, *FAST)
    assert result.returncode == 1 and blob.name in result.stderr
    assert outside_staging(tree(root)) == set()
    # An untrusted key: refused before anything is read.
    result = airlock("init", node_bundle, "--key", keys["ecdsa-p256"] / "airlock.pub", "--root", root, "--config", config, *FAST)
    assert result.returncode == 1 and "trusted key" in result.stderr
    # An expired bundle.
    expired = tmp_path / "expired.tar"
    airlock("build", "-o", expired, "--kubernetes-version", "v1.36.4", "--sign-key", keys["ed25519"] / "airlock.key", "--expires-days", "1",
            "--cache-dir", tmp_path / "cache", *upstream.build_flags(), env={"SOURCE_DATE_EPOCH": "1600000000"}, check=True)
    result = install("init", expired, keys, root, config, None, log, *FAST)
    assert result.returncode == 1 and "expired" in result.stderr
    assert outside_staging(tree(root)) == set()
    # A downgrade: serial 20 installed, serial 10 refused; serial 20 again is nothing to do (exit 0, and says so).
    new, old = tmp_path / "new.tar", tmp_path / "old.tar"
    for out, serial in ((new, "20"), (old, "10")):
        airlock("build", "-o", out, "--kubernetes-version", "v1.36.4", "--sign-key", keys["ed25519"] / "airlock.key", "--serial", serial,
                "--cache-dir", tmp_path / "cache", *upstream.build_flags(), check=True)
    assert install("init", new, keys, root, config, None, log, *FAST).returncode == 0
    before = {p: (root / p).stat().st_mtime_ns for p in tree(root) if (root / p).is_file()}
    result = install("upgrade", old, keys, root, config, None, log, "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade")
    assert result.returncode == 1 and "lower than the installed 20" in result.stderr and "--allow-downgrade" in result.stderr
    assert {p: (root / p).stat().st_mtime_ns for p in tree(root) if (root / p).is_file()} == before
    same = install("upgrade", new, keys, root, config, None, log, "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade")
    assert same.returncode == 0 and "already runs airlock serial 20 (kubernetes v1.36.4); nothing to upgrade" in same.stderr, same.stderr
    assert {p: (root / p).stat().st_mtime_ns for p in tree(root) if (root / p).is_file()} == before


def test_existing_containerd_config_keeps_every_other_setting(node_bundle, keys, tmp_path):
    import tomllib

    root = tmp_path / "root"
    config_toml = root / "etc/containerd/config.toml"
    config_toml.parent.mkdir(parents=True)
    original = (
        'version = 2\nroot = "/data/containerd"\noom_score = -999\n\n[grpc]\n  address = "/run/containerd/containerd.sock"\n  max_recv_message_size = 16777216\n\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  max_container_log_line_size = 262144\n  [plugins."io.containerd.grpc.v1.cri".cni]\n    bin_dir = "/opt/cni/bin"\n'
        '    conf_dir = "/etc/cni/net.d"\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n    BinaryName = "/usr/sbin/runc"\n'
    )
    config_toml.write_text(original)
    result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", *FAST)
    assert result.returncode == 0, result.stderr
    merged = tomllib.loads(config_toml.read_text())
    before = tomllib.loads(original)
    assert merged["root"] == "/data/containerd" and merged["oom_score"] == -999 and merged["grpc"] == before["grpc"]
    cri = merged["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["max_container_log_line_size"] == 262144 and cri["cni"] == before["plugins"]["io.containerd.grpc.v1.cri"]["cni"]
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": True}
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert cri["sandbox_image"] == f"registry.k8s.io/pause:{COMPONENT_IMAGES['pause']}"  # the bundle's pause
    assert (root / "etc/containerd/config.toml.airlock-backup").read_text() == original
    # containerd 2.x layout
    from installer.render.containerd_config import merge

    v3 = merge('version = 3\n[plugins."io.containerd.cri.v1.runtime"]\n  enable_selinux = true\n', "/etc/containerd/certs.d", "registry.k8s.io/pause:3.10", True, "2.1.9")
    parsed = tomllib.loads(v3.config)
    assert parsed["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert parsed["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10"
    assert parsed["plugins"]["io.containerd.cri.v1.runtime"]["enable_selinux"] is True


def test_worker_join_and_reset(node_bundle, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    missing = install("join", node_bundle, keys, root, node_config(tmp_path, free_port()), None, log, "--skip-phases", "images")
    # Checked in preflight, before a single file is written: kubeadm join would fail only after eight phases of them.
    assert missing.returncode == 1 and "phase preflight: join needs controlPlaneEndpoint, token, caCertHashes in --config node.yaml" in missing.stderr
    assert "airlock-node token create" in missing.stderr and outside_staging(tree(root)) == set()
    cp_config = node_config(tmp_path, free_port(), controlPlaneEndpoint="10.0.0.10:6443", token="abcdef.0123456789abcdef", caCertHashes=["sha256:" + "1" * 64])
    no_key = install("join", node_bundle, keys, root, cp_config, None, log, "--control-plane", "--skip-phases", "images")
    assert no_key.returncode == 1 and "join needs certificateKey (a control-plane join)" in no_key.stderr and outside_staging(tree(root)) == set()
    config = node_config(tmp_path, free_port(), controlPlaneEndpoint="10.0.0.10:6443", token="abcdef.0123456789abcdef", caCertHashes=["sha256:" + "1" * 64])
    joined = install("join", node_bundle, keys, root, config, None, log, "--skip-phases", "images")
    assert joined.returncode == 0, joined.stderr
    calls = log.read_text().splitlines()
    ignored = "--ignore-preflight-errors=IsPrivilegedUser,Swap,Port-10250"  # what airlock's own preflight checked on a worker
    assert [c for c in calls if c.startswith("kubeadm join")] == [f"kubeadm join {ignored} --config {root}/var/lib/airlock/kubeadm/join.yaml"]
    (join,) = yaml.safe_load_all((root / "var/lib/airlock/kubeadm/join.yaml").read_text())
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.0.0.10:6443" and join["kind"] == "JoinConfiguration"
    assert oct((root / "var/lib/airlock/kubeadm/join.yaml").stat().st_mode & 0o777) == "0o600"
    reset = airlock_node("reset", "--root", root, env={"AIRLOCK_STANDIN_LOG": str(log)}, check=True)
    assert "kubeadm reset --force" in log.read_text()
    assert not (root / "usr/local/bin/kubeadm").exists() and not (root / "etc/containerd/certs.d").exists()
    assert (root / "var/lib/airlock/store/index.json").exists() and "kept" in reset.stderr
    airlock_node("reset", "--root", root, "--purge", check=True)
    assert not (root / "var/lib/airlock").exists()


def phases_by_command(text: str) -> dict[str, list[str]]:
    """`airlock phases` read back: each command's section, its phases in the order listed (two-space indented names)."""
    found: dict[str, list[str]] = {}
    command = None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            command = line.split(":", 1)[0]
            found[command] = []
        elif line.startswith("  ") and not line.startswith("    "):
            found[command].append(line.split()[0])
    return found


def test_phases_shows_the_init_join_and_upgrade_orders_each_as_it_runs():
    from installer.workflow import phases_for

    text = airlock_node("phases", check=True).stdout
    listing = phases_by_command(text)
    assert list(listing) == ["init", "join", "upgrade"]
    for command, names in listing.items():
        assert names == [phase.name for phase in phases_for(command)]
        assert f"{command}: {' -> '.join(names)}" in text
    assert listing["join"][-2:] == ["kubeadm-join", "done"] and "cni" not in listing["join"] and "kube-vip" not in listing["join"]
    assert listing["upgrade"].index("registry") < listing["upgrade"].index("runtime")


def test_phases_list_and_dry_run_changes_nothing(node_bundle, keys, tmp_path):
    listing = phases_by_command(airlock("phases", check=True).stdout)
    order = ["verify", "preflight", "unpack", "binaries", "runtime", "registry", "kubelet", "images", "kubeadm-init", "cni", "kube-vip", "done"]
    assert listing["init"] == order
    root = tmp_path / "root"
    dry = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would write" in dry.stdout and "would run" in dry.stdout and "kubeadm init phase certs all" in dry.stdout
    assert not root.exists()


def test_a_dry_run_prints_the_whole_plan_and_claims_nothing(node_bundle, keys, tmp_path):
    root = tmp_path / "root"
    # No --ignore-preflight-errors, and the registry's port taken: a failing check, which a dry run reports and goes on past.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        config = node_config(tmp_path, taken.getsockname()[1])
        args = ["init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--dry-run"]
        dry = airlock(*args, env={"AIRLOCK_STANDIN_LOG": str(tmp_path / "log")})
    assert dry.returncode == 0, dry.stderr
    lines = [line.strip() for line in dry.stdout.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("would ")] == []
    assert any(line.startswith("would fail: [ERROR ") for line in lines) and any(line.startswith("would stop here: ") for line in lines)
    for phase in ("verify", "preflight", "unpack", "binaries", "runtime", "registry", "kubelet", "images", "kubeadm-init", "cni", "done"):
        assert f"would run phase {phase}:" in dry.stdout
    assert "would not run phase kube-vip: not needed here" in dry.stdout  # no highAvailability in this node.yaml
    # airlock waits for every control-plane component itself; kubeadm's wait-control-plane phase (no --config) never runs.
    assert any(line.startswith("would wait ") and "/readyz" in line and ":10257/healthz" in line and ":10259/livez" in line for line in lines), dry.stdout
    assert "wait-control-plane" not in dry.stdout
    assert "initialised" not in dry.stdout + dry.stderr and "--token" not in dry.stdout + dry.stderr and "token:" not in dry.stdout
    assert not root.exists() and not (tmp_path / "log").exists()
    reset = airlock("reset", "--root", root, "--dry-run")
    assert reset.returncode == 0 and reset.stdout.strip().startswith("would")


def test_reset_dry_run_says_would_remove(node_bundle, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    assert install("init", node_bundle, keys, root, config, None, log, "--skip-phases", "images,kubeadm-init,cni").returncode == 0
    before = tree(root)
    dry = airlock("reset", "--root", root, "--dry-run", env={"AIRLOCK_STANDIN_LOG": str(log)})
    assert dry.returncode == 0, dry.stderr
    lines = [line.strip() for line in dry.stdout.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("would ")] == []
    assert f"would remove {root / 'usr/local/bin/kubeadm'}" in lines
    assert any(line.startswith("would run ") and line.endswith("kubeadm reset --force") for line in lines)
    assert tree(root) == before
    bad = airlock("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--skip-phases", "nonsense")
    assert bad.returncode == 2 and "no phase nonsense" in bad.stderr  # a usage error


def test_kill_during_images_then_rerun_completes(node_bundle, keys, containerd, tmp_path):
    import signal

    root, log = tmp_path / "root", tmp_path / "standin.log"
    config = node_config(tmp_path, free_port())
    args = ["init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
            "--ignore-preflight-errors", IGNORE, "--containerd-address", containerd.socket]
    from tests.conftest import AIRLOCK

    process = subprocess.Popen([AIRLOCK, *map(str, args)], stderr=subprocess.PIPE, text=True, env={**os.environ, "AIRLOCK_STANDIN_LOG": str(log)})
    for line in process.stderr:
        if "pulled and pinned" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"] is None and "registry" in state["run"]["done"] and "images" not in state["run"]["done"]
    rerun = install("init", node_bundle, keys, root, config, containerd, log)
    assert rerun.returncode == 0, rerun.stderr
    assert "[unpack] already done (resuming)" in rerun.stderr
    expected = {image["reference"]: image["digest"] for image in bundle_manifest(node_bundle)["images"]}
    assert containerd.image_digests() == expected
    check_store(root)


def check_store(root: Path) -> None:
    """Every blob in the node store hashes to its name; nothing partial is left under a final name."""
    assert_blobs_whole(root / "var/lib/airlock/store/blobs/sha256")


def test_offline_node_with_one_address_and_no_route_out(node_bundle, keys, tmp_path):
    """A data-centre node: its own network, one documentation address, no default route; controlPlaneEndpoint on its
    loopback. kubeadm and kubelet get the node's real address, never 127.0.0.1 (kubelet refuses a loopback node IP)."""
    require("ip", "nsenter", "containerd", "ctr", "runc")
    with NodeNetwork() as node:
        assert "default" not in node.routes() and node.address in node.routes()
        daemon = Containerd(Path(f"/tmp/ctd-n{os.getpid()}"), prefix=node.prefix)
        try:
            root, log = tmp_path / "root", tmp_path / "standin.log"
            config = tmp_path / "node.yaml"
            config.write_text(json.dumps({"nodeName": "cp1", "controlPlaneEndpoint": "127.0.0.1:6443", "registry": {"listen": "127.0.0.1:5000"}}))
            args = ["init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
                    "--ignore-preflight-errors", IGNORE, "--containerd-address", daemon.socket]
            result = node.run([*node_command(), *args], check=False, env={**os.environ, "AIRLOCK_STANDIN_LOG": str(log)}, timeout=600)
            assert result.returncode == 0, result.stderr
            assert f"using node address {node.address} (the node's only global IPv4 address)" in result.stderr
            init, cluster, _ = yaml.safe_load_all((root / "var/lib/airlock/kubeadm/init.yaml").read_text())
            assert init["localAPIEndpoint"]["advertiseAddress"] == node.address
            assert {"name": "node-ip", "value": node.address} in init["nodeRegistration"]["kubeletExtraArgs"]
            assert cluster["controlPlaneEndpoint"] == "127.0.0.1:6443"
            expected = {image["reference"]: image["digest"] for image in bundle_manifest(node_bundle)["images"]}
            assert daemon.image_digests() == expected
        finally:
            daemon.close()


def size_of(path: Path) -> int:
    """The size of a file the installer may rename away at any moment (0 once it is gone)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_kill_during_unpack_then_rerun_completes(upstream, keys, tmp_path):
    import signal

    from tests.conftest import AIRLOCK

    big = "registry.k8s.io/airlock-test/big:1"
    upstream.factory.push(upstream.factory.make(big, ("amd64",), payload_bytes=160 << 20), upstream.registry, "airlock-test/big", "1")
    bundle = tmp_path / "big.tar"
    airlock("build", "-o", bundle, "--kubernetes-version", "v1.36.4", "--sign-key", keys["ed25519"] / "airlock.key", "--cni", "none",
            "--image", big, "--cache-dir", tmp_path / "cache", *upstream.build_flags(), check=True)
    root, config = tmp_path / "root", node_config(tmp_path, free_port())
    args = ["init", bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, *FAST]
    process = subprocess.Popen([AIRLOCK, *map(str, args)], stderr=subprocess.DEVNULL)
    staging = root / "var/lib/airlock/staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(size_of(p) > (8 << 20) for p in staging.glob("*/images/.partial/*")):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the install finished before it could be killed mid-unpack"
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["run"]["done"] == ["verify", "preflight"] and state["installed"] is None
    assert not (root / "var/lib/airlock/store/index.json").exists()
    assert not (root / "usr").exists()
    rerun = airlock(*args)
    assert rerun.returncode == 0, rerun.stderr
    check_store(root)
    index = json.loads((root / "var/lib/airlock/store/index.json").read_text())
    assert big in {entry["annotations"]["io.containerd.image.name"] for entry in index["manifests"]}
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["run"] is None


def test_a_second_concurrent_run_is_refused(node_bundle, keys, tmp_path):
    import fcntl

    root = tmp_path / "root"
    lock_file = root / "var/lib/airlock/.lock"
    lock_file.parent.mkdir(parents=True)
    with open(lock_file, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", *FAST)
    assert result.returncode == 1 and "another airlock run holds" in result.stderr
    assert install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", *FAST).returncode == 0
