"""The day after init: the node command the docs name, status, new join tokens, the node's trusted keys, and a reset
that undoes exactly what airlock did. Each story runs the node command from the pyz and reads what it prints.

kubeadm, kubelet and kubectl are STAND-INS (tests/upstream.py): they record their calls and answer as the real
ones do; `token create` answers from the admin.conf a test writes where kubeadm would have.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import NODE_PYZ, airlock_node, build, node_command, require
from tests.test_install import IGNORE, install, node_config
from tests.upstream import free_port

FAST = ("--skip-phases", "images,kubeadm-init,cni")


def files_under(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file and link under `root` (not under the `skip` prefixes) with what it holds: the node as a test can compare it."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith(skip):
            continue
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest() + f" {stat.S_IMODE(path.stat().st_mode):o}"
        else:
            found[relative] = "dir"
    return found


def launcher_run(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ROOT/usr/local/bin/airlock-node as a node runs /usr/local/bin/airlock-node: in a mount namespace of its own
    where ROOT/usr/local/lib is /usr/local/lib (the launcher names the installed pyz by its absolute path)."""
    script = 'root=$1; shift; mount --bind "$root/usr/local/lib" /usr/local/lib && exec "$root/usr/local/bin/airlock-node" "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def test_init_installs_the_airlock_node_launcher_which_passes_arguments_word_for_word(node_bundle, keys, tmp_path):
    require("unshare")
    root = tmp_path / "root"
    result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", *FAST)
    assert result.returncode == 0, result.stderr
    launcher = root / "usr/local/bin/airlock-node"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    text = launcher.read_text()
    assert text.startswith("#!/bin/sh\n") and text.rstrip().endswith('-I /usr/local/lib/airlock/airlock-node.pyz "$@"')
    assert (root / "usr/local/lib/airlock/airlock-node.pyz").read_bytes() == NODE_PYZ.read_bytes()
    phases = launcher_run(root, "phases")
    assert phases.returncode == 0 and phases.stdout.startswith("init: verify -> preflight"), phases.stderr
    # Nothing in the arguments is interpreted by a shell: a file name with $(...) is just a name.
    planted = tmp_path / "planted"
    odd = f"$(touch {planted}) `touch {planted}`; touch {planted}"
    refused = launcher_run(root, "verify", odd, "--root", root)
    assert refused.returncode == 1 and not planted.exists(), refused.stderr
    assert odd in refused.stderr
    helped = launcher_run(root, "--help")
    assert helped.stdout.startswith("Usage: airlock-node [OPTIONS] COMMAND"), helped.stdout


def test_status_upgrade_to_the_same_bundle_and_keys_the_node_kept(node_bundle, keys, containerd, tmp_path):
    """After init: status (text and json) says what runs, the registry's health and the images; later commands need no --key."""
    root, log = tmp_path / "root", tmp_path / "standin.log"
    port = free_port()
    config = node_config(tmp_path, port)
    assert install("init", node_bundle, keys, root, config, containerd, log).returncode == 0
    with open(node_bundle, "rb") as handle:
        import tarfile

        with tarfile.open(fileobj=handle) as archive:
            manifest = json.loads(archive.extractfile("bundle.json").read())
    pub = keys["ed25519"] / "airlock.pub"
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER"], capture_output=True, check=True).stdout
    fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
    status = ["status", "--root", root, "--containerd-address", containerd.socket]
    text = airlock_node(*status, check=True).stdout
    assert f"installed    {manifest['name']} serial {manifest['serial']}, kubernetes {manifest['kubernetes']['version']}" in text
    assert "role         first-control-plane (a control plane)" in text and f"signed by    {fingerprint} (ed25519)" in text
    assert f"expires      {manifest['expires']}" in text and "journal      no run in progress" in text
    assert f"registry     http://127.0.0.1:{port}: NOT healthy (not answering" in text  # under --root nothing serves it
    assert f"images       {len(manifest['images'])} of {len(manifest['images'])} in containerd with the bundle's digest, {len(manifest['images'])} pinned" in text
    server = subprocess.Popen([*node_command(), "registry", "serve", "--store", root / "var/lib/airlock/store", "--listen", f"127.0.0.1:{port}",
                               "--no-access-log"], stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 30
        while True:
            document = json.loads(airlock_node(*status, "--output", "json", check=True).stdout)
            if document["registry"]["healthy"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(10)
    assert document["registry"] == {"url": f"http://127.0.0.1:{port}", "healthy": True, "detail": "HTTP 200 ok"}
    assert document["installed"]["signer"] == fingerprint and document["installed"]["serial"] == manifest["serial"]
    assert document["control_plane"] is True and document["journal"] is None
    assert document["images"] == {"expected": len(manifest["images"]), "present": len(manifest["images"]), "pinned": len(manifest["images"]),
                                  "missing": [], "detail": ""}
    # The node kept the key it was given (root-only writable); upgrade and verify need no --key now.
    kept = root / "etc/airlock/trusted-keys" / (fingerprint.split(":")[1] + ".pub")
    assert kept.read_bytes() == pub.read_bytes() and stat.S_IMODE(kept.stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o755
    again = airlock_node("upgrade", node_bundle, "--root", root, "--config", config, "--containerd-address", containerd.socket,
                         env={"AIRLOCK_STANDIN_LOG": str(log)})
    assert again.returncode == 0 and f"already runs {manifest['name']} serial {manifest['serial']}" in again.stderr and "nothing to upgrade" in again.stderr
    verified = airlock_node("verify", node_bundle, "--root", root, check=True)
    assert f"signed by {fingerprint} ({kept})" in verified.stdout
    # A run in progress shows in status: what is done and what comes next.
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    state["run"] = {"command": "upgrade", "bundle_sha256": "ab" * 32, "done": ["verify", "preflight", "unpack"]}
    (root / "var/lib/airlock/state.json").write_text(json.dumps(state))
    journal = json.loads(airlock_node(*status, "--output", "json", check=True).stdout)["journal"]
    assert journal == {"command": "upgrade", "bundle_sha256": "ab" * 32, "done": ["verify", "preflight", "unpack"], "next": "api-versions"}


def test_status_of_a_node_with_nothing_installed(tmp_path):
    result = airlock_node("status", "--root", tmp_path / "empty", check=True)
    assert "installed    nothing" in result.stdout and "journal      no run in progress" in result.stdout
    assert not (tmp_path / "empty").exists(), "status only reads"


def write_admin_conf(root: Path, server: str) -> str:
    """What `kubeadm init phase kubeconfig` writes (the stand-in does not): admin.conf with the cluster CA; its pin is returned."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.now(UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
          .not_valid_before(now).not_valid_after(now + timedelta(days=10)).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    pem = ca.public_bytes(serialization.Encoding.PEM)
    document = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kubernetes-admin@kubernetes",
        "clusters": [{"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": base64.b64encode(pem).decode()}}],
        "contexts": [{"name": "kubernetes-admin@kubernetes", "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}],
        "users": [{"name": "kubernetes-admin", "user": {}}],
    }
    admin = root / "etc/kubernetes/admin.conf"
    admin.parent.mkdir(parents=True, exist_ok=True)
    admin.write_text(yaml.safe_dump(document))
    spki = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def test_token_create_prints_a_join_that_a_new_node_takes_as_written(node_bundle, keys, tmp_path):
    root, log = tmp_path / "cp1", tmp_path / "standin.log"
    initialised = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, log, "--skip-phases", "images,cni")
    assert initialised.returncode == 0, initialised.stderr
    # init's closing hint names the node command as it exists on a joining node, and how to get a fresh token later.
    (hint,) = [line.strip().split("   #")[0] for line in initialised.stderr.splitlines() if line.strip().startswith("python3 airlock-node.pyz join")]
    from tests.test_docs import parse

    parse(shlex.split(hint))
    assert "`airlock-node token create [--control-plane]` here makes fresh ones" in initialised.stderr
    pin = write_admin_conf(root, "https://10.0.0.10:6443")
    env = {"AIRLOCK_STANDIN_LOG": str(log)}
    worker = airlock_node("token", "create", "--root", root, env=env, check=True).stdout
    calls = log.read_text().splitlines()
    assert calls[-1] == f"kubeadm token create --print-join-command --kubeconfig {root}/etc/kubernetes/admin.conf"
    fields = yaml.safe_load(worker)
    assert fields["controlPlaneEndpoint"] == "10.0.0.10:6443" and fields["caCertHashes"] == [pin] and "certificateKey" not in fields
    assert f"# kubeadm join 10.0.0.10:6443 --token {fields['token']} --discovery-token-ca-cert-hash {pin}" in worker
    assert "airlock-node join k8s.tar --key airlock.pub --config node.yaml\n" in worker
    # Its output, with the joining node's own name and registry, is that node's node.yaml: join takes it.
    joining = tmp_path / "worker.yaml"
    joining.write_text(worker + yaml.safe_dump({"nodeName": "worker1", "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
    joined = install("join", node_bundle, keys, tmp_path / "worker", joining, None, log, "--skip-phases", "images")
    assert joined.returncode == 0, joined.stderr
    (join,) = yaml.safe_load_all((tmp_path / "worker/var/lib/airlock/kubeadm/join.yaml").read_text())
    assert join["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "10.0.0.10:6443", "token": fields["token"], "caCertHashes": [pin]}
    # A control plane's: the certificates are uploaded again under a fresh key, which the join command carries.
    control = airlock_node("token", "create", "--control-plane", "--root", root, env=env, check=True).stdout
    fields = yaml.safe_load(control)
    calls = log.read_text().splitlines()
    upload = root / "var/lib/airlock/kubeadm/upload-certs.yaml"
    assert calls[-2] == f"kubeadm init phase upload-certs --upload-certs --config {upload}"
    assert calls[-1] == f"kubeadm token create --print-join-command --kubeconfig {root}/etc/kubernetes/admin.conf --certificate-key {fields['certificateKey']}"
    init = next(d for d in yaml.safe_load_all(upload.read_text()) if d["kind"] == "InitConfiguration")
    assert init["certificateKey"] == fields["certificateKey"] and stat.S_IMODE(upload.stat().st_mode) == 0o600
    assert f"--control-plane --certificate-key {fields['certificateKey']}" in control and "--control-plane\n" in control
    # Not on a node without admin.conf: one line saying where to run it.
    (root / "etc/kubernetes/admin.conf").unlink()
    refused = airlock_node("token", "create", "--root", root, env=env)
    assert refused.returncode == 1 and "admin.conf is missing: run token create on a control plane" in refused.stderr


def test_trusted_keys_rotate_without_passing_keys_again(upstream, node_bundle, keys, tmp_path):
    """docs/keys.md's rotation: trust the new key, install bundles signed by it, remove the old one."""
    root = tmp_path / "root"
    config = node_config(tmp_path, free_port())
    assert install("init", node_bundle, keys, root, config, None, tmp_path / "log", *FAST).returncode == 0
    old_pub, new_pub = keys["ed25519"] / "airlock.pub", keys["ecdsa-p256"] / "airlock.pub"
    from bundle.trust import load_trusted_keys

    old_id, new_id = (load_trusted_keys([key])[0].key_id for key in (old_pub, new_pub))
    listed = airlock_node("trust", "list", "--root", root, check=True).stdout
    assert listed.startswith(f"{old_id}  ed25519")
    newer = tmp_path / "newer.tar"
    build(upstream, keys, newer, "v1.36.4", tmp_path / "cache", "--serial", "9999999999", algorithm="ecdsa-p256", check=True)
    refused = airlock_node("verify", newer, "--root", root)
    assert refused.returncode == 1 and f"signed by key {new_id}, which is not trusted here (trusted: {old_id}" in refused.stderr
    added = airlock_node("trust", "add", new_pub, "--root", root, check=True).stdout
    assert f"now trusting {new_id}" in added
    assert airlock_node("trust", "add", new_pub, "--root", root, check=True).stdout.startswith(f"already trusted {new_id}")
    airlock_node("verify", newer, "--root", root, check=True)
    upgraded = airlock_node("upgrade", newer, "--root", root, "--config", config, "--ignore-preflight-errors", IGNORE,
                            "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    removed = airlock_node("trust", "remove", old_id[:20], "--root", root, check=True).stdout
    assert removed.startswith(f"no longer trusting {old_id}")
    assert airlock_node("trust", "list", "--root", root, check=True).stdout.split()[:2] == [new_id, "ecdsa-p256"]
    assert airlock_node("verify", node_bundle, "--root", root).returncode == 1
    # A trusted-keys directory that others may write is refused, not used: a key planted there would be trusted.
    directory = root / "etc/airlock/trusted-keys"
    directory.chmod(0o777)
    unsafe = airlock_node("verify", newer, "--root", root)
    assert unsafe.returncode == 1 and f"{directory}: writable by group or others (mode 777)" in unsafe.stderr
    directory.chmod(0o755)
    # With no key given and none kept, a usage error that says how to give one.
    none = airlock_node("verify", newer, "--root", tmp_path / "fresh")
    assert none.returncode == 2 and "no trusted key: pass --key PUB" in none.stderr


def test_reset_undoes_what_airlock_installed_and_restores_what_it_replaced(node_bundle, keys, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    # An operator's node before airlock: own containerd config, a hosts.toml for another registry, a CNI plugin of their own.
    operator = {
        "etc/containerd/config.toml": 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
        "etc/containerd/certs.d/harbor.corp.example/hosts.toml": 'server = "https://harbor.corp.example"\n',
        "opt/cni/bin/site-plugin": "#!/bin/sh\n",
        "etc/hosts": "10.0.0.10 cp1\n",
        "usr/local/bin/site-tool": "#!/bin/sh\n",
        "etc/default/kubelet": "KUBELET_EXTRA_ARGS=--v=2\n",
    }
    for name, text in operator.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "etc/containerd/config.toml").chmod(0o600)
    before = files_under(root)
    result = install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, log, *FAST)
    assert result.returncode == 0, result.stderr
    installed = files_under(root)
    # It did install a runtime (no containerd on this node), the launcher and units, and merged the operator's config.
    for name in ("usr/local/bin/containerd", "usr/local/bin/containerd-shim-runc-v2", "usr/local/bin/ctr", "usr/local/sbin/runc",
                 "etc/systemd/system/containerd.service", "usr/local/bin/airlock-node", "opt/cni/bin/bridge",
                 "etc/systemd/system/multi-user.target.wants/containerd.service", "etc/containerd/certs.d/registry.k8s.io/hosts.toml"):
        assert name in installed, name
    assert installed["etc/containerd/config.toml"] != before["etc/containerd/config.toml"]
    reset = airlock_node("reset", "--root", root, env={"AIRLOCK_STANDIN_LOG": str(log)}, check=True)
    assert f"restoring {root}/etc/containerd/config.toml (as it was before airlock)" in reset.stderr
    # Everything outside airlock's own state (the kept store and trusted keys) is exactly as the operator had it.
    assert files_under(root, skip=("var/lib/airlock", "etc/airlock", "var/lib", "var")) == {
        name: value for name, value in before.items() if not name.startswith(("var",))
    }
    assert (root / "var/lib/airlock/store/index.json").exists() and (root / "etc/airlock/trusted-keys").is_dir()
    # docs/node.md's table: kubeadm's configuration, staging, state.json and the ledger are removed; the store and the
    # installed bundle records stay until --purge.
    assert sorted(path.name for path in (root / "var/lib/airlock").iterdir() if path.name != ".lock") == ["bundles", "store"]
    purged = airlock_node("reset", "--root", root, "--purge", check=True)
    assert "reset done" in purged.stderr and not (root / "var/lib/airlock").exists() and not (root / "etc/airlock/trusted-keys").exists()


def test_read_only_commands_as_root_leave_no_pyz_cache_behind(bundle, keys, tmp_path):
    """A reviewer's `verify` as root: the native code goes to a private temporary directory, removed at exit."""
    require("unshare")
    if os.geteuid() != 0:
        pytest.skip("this story is about root")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "AIRLOCK_PYZ_CACHE"}
    env["TMPDIR"] = str(scratch)
    # /var/lib is a fresh, empty tmpfs in a mount namespace of its own: what verify leaves there is seen, the host's is untouched.
    script = 'mount -t tmpfs tmpfs /var/lib && "$@" >/dev/null && ls -A /var/lib'
    for command in (["verify", bundle, "--key", keys["ed25519"] / "airlock.pub"], ["inspect", bundle, "--key", keys["ed25519"] / "airlock.pub"]):
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *node_command(), *map(str, command)],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "", f"{command[0]} left {result.stdout.strip()} in /var/lib"
        assert list(scratch.iterdir()) == [], f"{command[0]} left its temporary cache behind"
