"""The node as an attack surface: forged tar headers, sloppy signed manifests, the store, modes and umask.

Each test is a proof from the security review: it failed before the fix it names.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from bundle.errors import BundleError
from bundle.tarstream import MAX_MEMBER_BYTES, TarReader
from tests.hostile import with_checksum
from tests.upstream import COMPONENT_IMAGES

PAUSE_TAG = COMPONENT_IMAGES["pause"]
PAUSE = f"registry.k8s.io/pause:{PAUSE_TAG}"  # what the test bundles' kubeadm lists


class CountingStream(io.RawIOBase):
    """A stream that counts what the reader took from it (the proof that it stopped early)."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.taken += len(data)
        return data


def header(name: str, size: int) -> bytes:
    member = tarfile.TarInfo(name)
    member.size = size
    return member.tobuf(tarfile.USTAR_FORMAT)


def base256(block: bytes, value: int) -> bytes:
    field = bytearray(value.to_bytes(12, "big", signed=True))
    field[0] |= 0x80
    return with_checksum(block[:124] + bytes(field) + block[136:])


def read_all(data: bytes) -> None:
    reader = TarReader(io.BytesIO(data))
    for _member in reader.members():
        for _chunk in reader.content():
            pass


TAIL = b"\x00" * (8 << 20)  # what a reader trusting a forged size would swallow


@pytest.mark.parametrize("size", [-1, -(1 << 60), MAX_MEMBER_BYTES + 1, 1 << 87])
def test_a_base256_size_out_of_range_is_refused_before_any_content_is_read(size):
    counted = CountingStream(base256(header("bundle.json", 0), size) + TAIL)
    reader = TarReader(counted)
    with pytest.raises(BundleError, match="outside 0"):
        next(reader.members())
    assert counted.taken == 512


@pytest.mark.parametrize("value", [b"-1", b"+1", b" 1", b"1_0", b"0x10", b"\xd9\xa1", b"", b"9" * 21])
def test_a_pax_size_that_is_not_plain_decimal_is_refused(value):
    record = b" size=" + value + b"\n"
    record = str(len(record) + len(str(len(record) + 2))).encode() + record
    pax = header("././@PaxHeader", len(record))
    pax = pax[:156] + b"x" + pax[157:]
    data = with_checksum(pax) + record + b"\x00" * (-len(record) % 512) + header("bundle.json", 0) + TAIL
    with pytest.raises(BundleError):
        read_all(data)


def test_a_huge_pax_size_is_refused():
    record = b" size=" + str(MAX_MEMBER_BYTES + 1).encode() + b"\n"
    record = str(len(record) + 2).encode() + record
    pax = header("././@PaxHeader", len(record))
    pax = with_checksum(pax[:156] + b"x" + pax[157:])
    with pytest.raises(BundleError, match="over the"):
        read_all(pax + record + b"\x00" * (-len(record) % 512) + header("bundle.json", 0) + TAIL)


# --- Someone else's registry on the node's port -------------------------------------------------------------------


@pytest.fixture
def hostile_registry(upstream, tmp_path):
    """A real registry (CNCF distribution) holding every image of the upstream, but a different pause image under the same tag."""
    import shutil

    from tests.upstream import DockerRegistry

    root = tmp_path / "hostile"
    shutil.copytree(upstream.registry.root / "data", root / "data")
    registry = DockerRegistry(root)
    upstream.factory.push(upstream.factory.make("someone else's pause", ("amd64",)), registry, "pause", PAUSE_TAG)
    yield registry
    registry.close()


def test_a_foreign_listener_on_registry_listen_is_refused_before_any_pull(node_bundle, keys, containerd, hostile_registry, tmp_path):
    from tests.conftest import airlock
    from tests.test_install import IGNORE, node_config

    # The port was free at preflight (or it is a resume): the registry service is down and someone else took the port.
    config = node_config(tmp_path, hostile_registry.port)
    result = airlock("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "root", "--config", config,
                     "--ignore-preflight-errors", f"{IGNORE},port-{hostile_registry.port}", "--containerd-address", containerd.socket,
                     env={"AIRLOCK_STANDIN_LOG": str(tmp_path / "log")})
    assert result.returncode == 1, result.stderr
    assert f"registry.listen 127.0.0.1:{hostile_registry.port} is held by pid {hostile_registry.process.pid} (docker-registry" in result.stderr
    assert "Traceback" not in result.stderr
    assert containerd.image_digests() == {}


def test_an_image_with_another_digest_than_bundle_json_is_refused_and_removed(node_bundle, keys, containerd, hostile_registry, tmp_path):
    from tests.test_install import bundle_manifest, install, node_config

    expected = {image["reference"]: image["digest"] for image in bundle_manifest(node_bundle)["images"]}
    hostile = hostile_registry.manifest_digest("pause", PAUSE_TAG)
    config = node_config(tmp_path, 1, registry={"mirror": hostile_registry.url})
    result = install("init", node_bundle, keys, tmp_path / "root", config, containerd, tmp_path / "log")
    assert result.returncode == 1, result.stderr
    want = expected[PAUSE]
    assert f"image {PAUSE}: bundle.json names {want} but containerd got {hostile} from {hostile_registry.url}" in result.stderr
    held = containerd.image_digests()
    assert PAUSE not in held
    assert all(expected[name] == digest for name, digest in held.items())


def test_listeners_are_found_with_their_process(tmp_path):
    import os
    import socket

    from installer.node import NodeError
    from installer.phases.images import check_listeners
    from installer.registry.listeners import listeners_on

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listen = f"127.0.0.1:{server.getsockname()[1]}"
        found = listeners_on(listen)
        assert [(f.pid, f.uid) for f in found] == [(os.getpid(), os.getuid())]
        check_listeners(listen, found, os.getpid())  # the service's own process
        check_listeners(listen, found, os.getppid())  # a child of the service
        with pytest.raises(NodeError, match=f"held by pid {os.getpid()}"):
            check_listeners(listen, found, None)
        with pytest.raises(NodeError, match="not by airlock"):
            check_listeners(listen, found, 1 << 22)
    assert listeners_on(listen) == []


# --- Modes, the store and the umask --------------------------------------------------------------------------------


def world_or_group_writable(root) -> list[str]:
    import os
    import stat

    found = []
    for path in [root, *root.rglob("*")]:
        info = os.lstat(path)
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
            found.append(f"{path.relative_to(root)} {stat.filemode(info.st_mode)}")
    return found


def test_an_install_under_umask_000_leaves_nothing_group_or_world_writable(node_bundle, keys, containerd, tmp_path):
    import os
    import subprocess

    from tests.conftest import AIRLOCK
    from tests.test_install import IGNORE, node_config
    from tests.upstream import free_port

    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    args = ["init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", node_config(tmp_path, free_port()),
            "--ignore-preflight-errors", IGNORE, "--containerd-address", containerd.socket]
    result = subprocess.run([AIRLOCK, *map(str, args)], capture_output=True, text=True, timeout=600, preexec_fn=lambda: os.umask(0),
                            env={**os.environ, "AIRLOCK_STANDIN_LOG": str(tmp_path / "log")})
    assert result.returncode == 0, result.stderr
    assert world_or_group_writable(root) == []
    assert (root / "var/lib/airlock/staging").stat().st_mode & 0o777 == 0o700


def modes_bundle(key, mode: int) -> bytes:
    from tests.hostile import good_members, manifest_for, signed

    members = good_members()
    manifest = manifest_for(members)
    files = tuple(type(e)(e.path, e.sha256, e.size, mode if e.path.endswith("kubeadm") else e.mode) for e in manifest.files)
    manifest = manifest_for(members, files=files)
    return signed(key, manifest.to_json(), sorted(members.items()))


ONLY_UNPACK = ("--skip-phases", "binaries,runtime,registry,kubelet,images,kubeadm-init,cni,done", "--ignore-preflight-errors", "all")


def test_modes_from_bundle_json_are_normalised_and_the_store_holds_copies(keys, tmp_path):
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from tests.conftest import airlock
    from tests.hostile import good_members

    key = serialization.load_pem_private_key((keys["ed25519"] / "airlock.key").read_bytes(), None)
    bundle = tmp_path / "modes.tar"
    bundle.write_bytes(modes_bundle(key, 0o777))
    root = tmp_path / "root"
    result = airlock("init", bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, *ONLY_UNPACK)
    assert result.returncode == 0, result.stderr
    # Written once, into the store by digest (no staged copy by path): a blob of its own, 0644 whatever bundle.json says.
    assert not list((root / "var/lib/airlock/staging").glob("*/bin/linux-amd64/kubeadm"))
    kubeadm = hashlib.sha256(good_members()["bin/linux-amd64/kubeadm"]).hexdigest()
    stored = root / "var/lib/airlock/store/blobs/sha256" / kubeadm
    assert stored.stat().st_mode & 0o7777 == 0o644
    assert stored.stat().st_nlink == 1
    assert world_or_group_writable(root) == []


def test_a_blob_that_is_a_symlink_is_never_followed(tmp_path):
    from bundle.errors import StoreError
    from bundle.store import BlobStore, sha256_digest

    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    store = BlobStore(tmp_path / "store")
    store.blobs.mkdir(parents=True)
    digest = sha256_digest(b"not yours")
    store.path(digest).symlink_to(outside)
    assert not store.exists(digest)
    with pytest.raises(StoreError, match="symbolic link"):
        store.open(digest)
    with pytest.raises(StoreError, match="symbolic link"):
        store.read(digest)
    from installer.storecare import check_store

    assert check_store(store.root) == (1, [str(store.path(digest))])


def staged_context(tmp_path, members: dict[str, bytes]):
    """A node context after unpack: `members` in the node store and listed in a manifest (no bundle, no phases before)."""
    from bundle.store import BlobStore
    from installer.node import Host, NodeConfig, Paths
    from installer.phases import Context
    from installer.staging import COMPLETE, staging_dir
    from tests.hostile import manifest_for

    paths = Paths(tmp_path / "root")
    context = Context("init", tmp_path / "none.tar", [], paths, Host(paths, echo=lambda line: None), NodeConfig(), arch="amd64")
    context.manifest, context.manifest_sha256 = manifest_for(members), "f" * 64
    staging = staging_dir(context)
    staging.mkdir(parents=True)
    for data in members.values():
        BlobStore(paths.store).put_bytes(data)
    for directory in (paths.state_dir, paths.staging, staging):
        directory.chmod(0o700)
    (staging / COMPLETE).write_text(context.manifest_sha256)
    return context


def tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o755
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_release_archives_only_put_their_own_programs_on_the_node(tmp_path):
    from installer.phases.binaries import CNI_PLUGINS, CONTAINERD_PROGRAMS, install_from_archive

    shadows = {f"bin/{name}": b"#!/bin/sh\necho owned\n" for name in ("systemctl", "iptables", "modprobe")}
    members = {
        "bin/linux-amd64/containerd-1.7.22-linux-amd64.tar.gz": tgz({"bin/containerd": b"c", "bin/ctr": b"c", **shadows}),
        "cni/linux-amd64/cni.tgz": tgz({"./bridge": b"b", "./loopback": b"l", "./LICENSE": b"text", "./iptables": b"x"}),
    }
    context = staged_context(tmp_path, members)
    assert sorted(install_from_archive(context, next(iter(members)), "/usr/local/bin", CONTAINERD_PROGRAMS)) == ["containerd", "ctr"]
    assert sorted(install_from_archive(context, "cni/linux-amd64/cni.tgz", "/opt/cni/bin", CNI_PLUGINS)) == ["bridge", "loopback"]
    installed = {p.name for p in (tmp_path / "root").rglob("*") if p.parent.name == "bin" and "staging" not in str(p)}
    assert installed == {"containerd", "ctr", "bridge", "loopback"}


@pytest.mark.parametrize("opened", ["blob", "blobs directory", "store"])
def test_a_member_another_user_could_have_changed_since_unpack_is_never_installed(tmp_path, opened):
    """A blob is trusted by how the store is written (hashed once, while written), so only while no one but root
    could have changed it: a blob, or a directory above it, that others may write is refused, never installed."""
    import hashlib

    from installer.node import BIN
    from installer.staging import install_staged

    members = {"bin/linux-amd64/kubeadm": b"#!/bin/sh\nexit 0\n"}
    context = staged_context(tmp_path, members)
    blob = context.paths.store / "blobs/sha256" / hashlib.sha256(members["bin/linux-amd64/kubeadm"]).hexdigest()
    {"blob": blob, "blobs directory": blob.parent, "store": context.paths.store}[opened].chmod(0o666 if opened == "blob" else 0o777)
    target = context.paths(f"{BIN}/kubeadm")
    with pytest.raises(BundleError, match="could be changed by another user"):
        install_staged(context, "bin/linux-amd64/kubeadm", target)
    assert not target.exists()


# --- The flannel manifest: pinned by sha256, parsed with limits ----------------------------------------------------

ALIAS_BOMB = b"""a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_in_an_addon_manifest_is_refused_at_once():
    import time

    from builder.errors import BuildError
    from builder.images import images_in_manifest

    assert len(ALIAS_BOMB) < 400
    started = time.monotonic()
    with pytest.raises(BuildError, match="alias"):
        images_in_manifest(ALIAS_BOMB, "kube-flannel.yml")
    assert time.monotonic() - started < 1.0
    with pytest.raises(BuildError, match="deeply|nodes"):
        images_in_manifest(b"[" * 100000 + b"]" * 100000, "kube-flannel.yml")
    from bundle.errors import JsonObjectError
    from bundle.jsonobject import parse_object

    with pytest.raises(JsonObjectError, match="^an upstream manifest: nests JSON arrays or objects too deeply$"):
        parse_object(b"[" * 100000 + b"]" * 100000, "an upstream manifest", 1 << 20)
    plain = b"kind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n      - image: docker.io/flannel/flannel:v0.25.7\n"
    assert images_in_manifest(plain, "kube-flannel.yml") == ["docker.io/flannel/flannel:v0.25.7"]


def test_flannel_without_a_pin_builds_unpinned_and_says_so_and_require_pinned_refuses_it(upstream, keys, tmp_path):
    import json

    from tests.conftest import airlock
    from tests.test_build import manifest_of

    flags = [flag for flag in upstream.build_flags()]
    at = flags.index("--flannel-sha256")
    pin = flags[at + 1]
    unpinned = flags[:at] + flags[at + 2 :]
    common = ["build", "-o", tmp_path / "b.tar", "--kubernetes-version", "v1.36.4", "--sign-key", keys["ed25519"] / "airlock.key", "--cache-dir", tmp_path / "cache"]
    built = airlock(*common, *unpinned, check=True)
    # Loud: the warning names the file, says only TLS vouched for it, and gives the flag with the sum it saw.
    assert "warning: manifests/cni/kube-flannel.yml is UNPINNED" in built.stderr and f"--flannel-sha256 {pin}" in built.stderr
    assert "provenance: " in built.stdout and ", 1 unpinned" in built.stdout
    flannel = next(f for f in manifest_of(tmp_path / "b.tar")["files"] if f["path"] == "manifests/cni/kube-flannel.yml")
    assert flannel["provenance"]["kind"] == "unpinned" and flannel["sha256"] == pin
    shown = airlock("inspect", tmp_path / "b.tar", check=True).stdout
    assert "unpinned (only TLS vouched for these):\n  manifests/cni/kube-flannel.yml: TLS only: " in shown
    # A strict site: --require pinned refuses it by name and writes nothing; with the pin the same build passes.
    (tmp_path / "b.tar").unlink()
    refused = airlock(*common, *unpinned, "--require", "pinned")
    assert refused.returncode == 1 and "--require pinned: 1 of " in refused.stderr and "manifests/cni/kube-flannel.yml (unpinned)" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "b.tar").exists()
    airlock(*common, *unpinned, "--require", "pinned", "--flannel-sha256", pin, check=True)
    pinned = next(f for f in manifest_of(tmp_path / "b.tar")["files"] if f["path"] == "manifests/cni/kube-flannel.yml")
    assert pinned["provenance"] == {"kind": "pinned", "detail": "--flannel-sha256"}
    assert json.loads(airlock("inspect", tmp_path / "b.tar", "--output", "json", check=True).stdout)["provenance"]["require"] == "pinned"
    # A pin that the download does not match is still a hard failure, and so is a malformed one.
    (tmp_path / "b.tar").unlink()
    wrong = airlock(*common, *unpinned, "--flannel-sha256", "0" * 64)
    assert wrong.returncode == 1 and "0" * 64 in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr
    assert not (tmp_path / "b.tar").exists()
    bad_flag = airlock(*common, *unpinned, "--flannel-sha256", "xyz")
    assert bad_flag.returncode == 1 and "64 lowercase hex" in bad_flag.stderr
    bad_level = airlock(*common, *unpinned, "--require", "mostly")
    assert bad_level.returncode == 2 and "--require 'mostly': choose from signed, pinned, any" in bad_level.stderr
