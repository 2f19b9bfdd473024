"""A platform engineer builds a bundle from a (local) upstream and checks it with other tools."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import airlock, build, require
from tests.upstream import COMPONENT_IMAGES


def extract(bundle: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(into)], check=True)
    return into


def manifest_of(bundle: Path) -> dict:
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        assert names[:2] == ["bundle.json", "bundle.json.sig"]
        return json.loads(archive.extractfile("bundle.json").read())


def test_label_build_carries_every_image_byte_for_byte(upstream, bundle, tmp_path):
    require("skopeo")
    manifest = manifest_of(bundle)
    assert manifest["kubernetes"] == {"requested": "stable-1.36", "version": "v1.36.4"}
    assert manifest["platforms"] == ["linux/amd64", "linux/arm64"]
    assert manifest["components"]["etcd"] == COMPONENT_IMAGES["etcd"]  # what kubeadm v1.36.4 lists
    assert manifest["components"]["pause"] == COMPONENT_IMAGES["pause"]
    references = {image["reference"] for image in manifest["images"]}
    # v1.36.4's list (the upstream also serves the other minors' images) plus flannel's and the extra image.
    listed = {f"registry.k8s.io/{name}:v1.36.4" for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")}
    listed |= {f"registry.k8s.io/coredns/coredns:{COMPONENT_IMAGES['coredns']}", f"registry.k8s.io/pause:{COMPONENT_IMAGES['pause']}",
               f"registry.k8s.io/etcd:{COMPONENT_IMAGES['etcd']}"}
    assert references == listed | {ref for ref in upstream.all_images() if not ref.startswith("registry.k8s.io/")}
    root = extract(bundle, tmp_path / "x")
    for image in manifest["images"]:
        # The digest the upstream registry serves is the digest the bundle keeps.
        assert image["digest"] == upstream.upstream_digest(image["reference"])
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{root / 'images'}:{image['reference']}"], capture_output=True, check=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["digest"]
        for arch in ("amd64", "arm64"):
            info = subprocess.run(
                ["skopeo", "--override-arch", arch, "inspect", f"oci:{root / 'images'}:{image['reference']}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert json.loads(info)["Architecture"] == arch
    files = {entry["path"]: entry for entry in manifest["files"]}
    for arch in ("amd64", "arm64"):
        for name in ("kubeadm", "kubelet", "kubectl", "runc"):
            entry = files[f"bin/linux-{arch}/{name}"]
            assert entry["mode"] == 0o755 and entry["upstream_sha256"] == entry["sha256"]
    assert "manifests/cni/kube-flannel.yml" in files
    sbom = json.loads((root / "sbom.spdx.json").read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    listed = {c["checksumValue"] for p in sbom["packages"] for c in p.get("checksums", [])}
    assert files["bin/linux-arm64/kubeadm"]["sha256"] in listed
    assert {i["digest"].split(":")[1] for i in manifest["images"]} <= listed


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_openssl_alone_verifies_the_signature(upstream, keys, tmp_path, algorithm):
    require("openssl")
    out = tmp_path / "k8s.tar"
    build(upstream, keys, out, "v1.36.4", tmp_path / "cache", "--cni", "none", algorithm=algorithm, check=True)
    root = extract(out, tmp_path / "x")
    pub = keys[algorithm] / "airlock.pub"
    if algorithm == "ed25519":
        command = [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            pub,
            "-rawin",
            "-in",
            root / "bundle.json",
            "-sigfile",
            root / "bundle.json.sig",
        ]
    else:
        command = ["openssl", "dgst", "-sha256", "-verify", pub, "-signature", root / "bundle.json.sig", root / "bundle.json"]
    assert subprocess.run(list(map(str, command)), capture_output=True).returncode == 0
    (root / "bundle.json").write_bytes((root / "bundle.json").read_bytes().replace(b"v1.36.4", b"v1.36.5"))
    assert subprocess.run(list(map(str, command)), capture_output=True).returncode != 0


def test_exact_version_is_never_looked_up(upstream, keys, tmp_path):
    upstream.server.clear()
    out = tmp_path / "k8s.tar"
    build(upstream, keys, out, "1.36.4", tmp_path / "cache", check=True)
    assert manifest_of(out)["kubernetes"] == {"requested": "1.36.4", "version": "v1.36.4"}
    assert not [r for r in upstream.server.requested(".txt")]


def test_warm_rebuild_downloads_nothing_and_is_reproducible(upstream, keys, tmp_path):
    cache = tmp_path / "cache"
    flags = ["--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key", "--cache-dir", cache, *upstream.build_flags()]
    env = {"SOURCE_DATE_EPOCH": "1790000000"}
    airlock("build", "-o", tmp_path / "a.tar", *flags, env=env, check=True)
    upstream.server.clear()
    second = airlock("build", "-o", tmp_path / "b.tar", *flags, env=env, check=True)
    # Only the label is asked again (a label can move, release files cannot), and the signatures this upstream does not
    # publish: an absent signature is looked for on every build, a present one is remembered like the file.
    asked = [r.path for r in upstream.server.requests]
    assert asked[0] == "/release-server/release/stable-1.36.txt"
    assert sorted(asked[1:]) == [f"/release-server/release/v1.36.4/bin/linux/amd64/{name}.sig" for name in ("kubeadm", "kubectl", "kubelet")]
    assert "downloaded 8 B" in second.stdout
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list((cache / ".partial").iterdir())


def test_member_data_starts_on_4k_boundaries_and_plain_tar_reads_it(bundle, tmp_path):
    # Aligned data is what lets the kernel share a cached blob's extents with the bundle (XFS, btrfs).
    with tarfile.open(bundle) as archive:
        members = archive.getmembers()
    streamed = [member for member in members if member.name not in ("bundle.json", "bundle.json.sig")]
    assert len(streamed) > 20
    assert [member.name for member in streamed if member.offset_data % 4096] == []
    listing = subprocess.run(["tar", "-tf", str(bundle)], capture_output=True, text=True, check=True)
    assert listing.stderr == ""
    assert listing.stdout.splitlines() == [member.name for member in members]


def test_single_arch_bundle_carries_only_that_platforms_blobs(upstream, keys, tmp_path, bundle):
    out = tmp_path / "amd64.tar"
    build(upstream, keys, out, "stable-1.36", tmp_path / "cache", "--arch", "amd64", check=True)
    small = {f["path"] for f in manifest_of(out)["files"] if f["path"].startswith("images/blobs/")}
    both = {f["path"] for f in manifest_of(bundle)["files"] if f["path"].startswith("images/blobs/")}
    assert small < both
    assert not any(f["path"].startswith("bin/linux-arm64/") for f in manifest_of(out)["files"])
    for image in manifest_of(out)["images"]:
        assert image["platforms"] == ["linux/amd64"]


@pytest.mark.parametrize("label", ["stable-x", "v1.31", "", "latest-1.36.4", "1.36.4.5", "stable-1.36.x", "v1.36.4/../x"])
def test_bad_labels_fail_before_any_download(upstream, keys, tmp_path, label):
    upstream.server.clear()
    result = build(upstream, keys, tmp_path / "k8s.tar", label, tmp_path / "cache")
    assert result.returncode in (1, 2)
    assert "kubernetes-version" in result.stderr
    assert upstream.server.requests == []
    assert not (tmp_path / "k8s.tar").exists()


def test_label_file_without_a_version_is_refused(upstream, keys, tmp_path):
    (upstream.files_root / "release-server/release/latest-1.35.txt").write_text("<html>not found</html>\n")
    result = build(upstream, keys, tmp_path / "k8s.tar", "latest-1.35", tmp_path / "cache")
    assert result.returncode == 1
    assert "not a version like v1.36.4" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_sha256_fails_naming_url_expected_and_actual(upstream, keys, tmp_path):
    path = upstream.files_root / "release-server/release/v1.36.4/bin/linux/amd64/kubectl"
    checksum = Path(f"{path}.sha256")
    good = checksum.read_text()
    checksum.write_text("0" * 64 + "\n")
    try:
        result = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache")
    finally:
        checksum.write_text(good)
    assert result.returncode == 1
    assert "bin/linux/amd64/kubectl: checksum mismatch" in result.stderr
    assert "expected sha256:" + "0" * 64 in result.stderr
    assert "got sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() in result.stderr
    assert not (tmp_path / "k8s.tar").exists()


def test_wrong_blob_digest_fails_the_build(upstream, keys, tmp_path):
    upstream.push("registry.k8s.io/corrupt/tool:1.0", ("amd64",))
    digest = upstream.upstream_digest("registry.k8s.io/corrupt/tool:1.0")
    manifest = json.loads(upstream.registry.blob_path(digest).read_bytes())
    layer = manifest["layers"][-1]["digest"]  # the layer only this image has
    data = upstream.registry.blob_path(layer)
    data.write_bytes(b"X" + data.read_bytes()[1:])
    result = build(
        upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--image", "registry.k8s.io/corrupt/tool:1.0", "--cni", "none"
    )
    assert result.returncode == 1
    assert f"/v2/corrupt/tool/blobs/{layer}: checksum mismatch: expected {layer}, got sha256:" in result.stderr
    assert not (tmp_path / "k8s.tar").exists()
    assert not (tmp_path / "cache" / "blobs" / "sha256" / layer.split(":")[1]).exists()


def test_build_config_file_sets_flags(upstream, keys, tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(
        "kubernetes-version: v1.36.4\n"
        f"sign-key: {keys['ed25519'] / 'airlock.key'}\n"
        "arch: [arm64]\ncni: none\n"
        f"release-url: {upstream.release_url}\ngithub-url: {upstream.github_url}\n"
        f"registry-mirror:\n  registry.k8s.io: {upstream.registry.url}\n"
        f"cache-dir: {tmp_path / 'cache'}\n"
    )
    airlock("build", "--config", config, "-o", tmp_path / "k8s.tar", check=True)
    manifest = manifest_of(tmp_path / "k8s.tar")
    assert manifest["platforms"] == ["linux/arm64"] and "flannel" not in manifest["components"]
    (tmp_path / "bad.yaml").write_text("kubernetes_version: v1\n")
    result = airlock("build", "--config", tmp_path / "bad.yaml", "-o", tmp_path / "x.tar")
    assert result.returncode == 1 and "unknown keys kubernetes_version" in result.stderr


def test_token_auth_and_blob_redirects_to_another_host(upstream, keys, tmp_path):
    from tests.upstream import TokenAuthRegistry

    front = TokenAuthRegistry(upstream.registry)

    def build_through_front(out: Path, home: Path):
        return airlock(
            "build", "-o", out, "--kubernetes-version", "v1.36.4", "--sign-key", keys["ed25519"] / "airlock.key",
            "--cache-dir", out.with_suffix(".cache"), "--cni", "none", "--release-url", upstream.release_url,
            "--github-url", upstream.github_url, "--registry-mirror", f"registry.k8s.io={front.url}", env={"HOME": str(home)},
        )  # fmt: skip

    try:
        home = tmp_path / "home"
        front.docker_config(home)
        result = build_through_front(tmp_path / "k8s.tar", home)
        assert result.returncode == 0, result.stderr
        manifest = manifest_of(tmp_path / "k8s.tar")
        for image in manifest["images"]:
            assert image["digest"] == upstream.upstream_digest(image["reference"])
        assert "kube-apiserver" in front.tokens_issued and "coredns/coredns" in front.tokens_issued
        assert front.leaked_authorization == []
        # Without credentials the registry refuses, and the build says so.
        denied = build_through_front(tmp_path / "no.tar", tmp_path / "nohome")
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr and "Traceback" not in denied.stderr
    finally:
        front.close()


@pytest.fixture(scope="module")
def later_patch(tmp_path_factory):
    """An upstream whose v1.36.9 kubeadm lists etcd 3.6.10-0 (a patch newer than the table knows), where the built-in 1.36 row says 3.6.9-0."""
    from tests.conftest import TOOLS
    from tests.upstream import LocalUpstream

    require(*TOOLS)
    local = LocalUpstream(
        tmp_path_factory.mktemp("later-patch"),
        versions=("v1.36.9",),
        labels={"stable-1.36": "v1.36.9"},
        extra_images={},
        component_overrides={"v1.36.9": {"etcd": "3.6.10-0"}},
    ).start()
    yield local
    local.close()


def test_a_foreign_arch_bundle_asks_the_hosts_own_kubeadm_of_that_version(later_patch, keys, tmp_path):
    later_patch.server.clear()
    out = tmp_path / "arm64.tar"
    result = build(later_patch, keys, out, "v1.36.9", tmp_path / "cache", "--arch", "arm64", "--cni", "none", check=True)
    manifest = manifest_of(out)
    assert manifest["components"]["etcd"] == "3.6.10-0"  # kubeadm's answer, not the table's 3.6.9-0
    assert "registry.k8s.io/etcd:3.6.10-0" in {image["reference"] for image in manifest["images"]}
    assert not any(f["path"].startswith("bin/linux-amd64/") for f in manifest["files"])
    host_kubeadm = "/release-server/release/v1.36.9/bin/linux/amd64/kubeadm"
    assert later_patch.server.requested(host_kubeadm) and later_patch.server.requested(host_kubeadm + ".sha256")
    assert "fetched into the cache (not the bundle)" in result.stderr


def test_the_image_table_only_on_request_and_with_a_warning(later_patch, keys, tmp_path):
    later_patch.server.clear()
    table = build(later_patch, keys, tmp_path / "table.tar", "v1.36.9", tmp_path / "cache", "--arch", "arm64", "--cni", "none", "--image-list-from-table")
    assert "warning: --image-list-from-table" in table.stderr
    # The table's etcd is not what v1.36.9 uses: the build cannot find it, which is why the table is never the default.
    assert table.returncode == 1 and "etcd/manifests/3.6.9-0: HTTP 404" in table.stderr
    assert not later_patch.server.requested("/bin/linux/amd64/kubeadm")


def test_a_host_kubeadm_with_a_bad_checksum_stops_the_build(later_patch, keys, tmp_path):
    sums = later_patch.files_root / "release-server/release/v1.36.9/bin/linux/amd64/kubeadm.sha256"
    good = sums.read_text()
    sums.write_text("0" * 64 + "\n")
    try:
        result = build(later_patch, keys, tmp_path / "x.tar", "v1.36.9", tmp_path / "cache", "--arch", "arm64", "--cni", "none")
    finally:
        sums.write_text(good)
    assert result.returncode == 1 and "bin/linux/amd64/kubeadm" in result.stderr
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("version", ["v1.33.7", "1.31.4", "stable-1.33", "latest-1.39"])
def test_build_refuses_an_unsupported_minor_before_any_download(upstream, keys, tmp_path, version):
    upstream.server.clear()
    result = build(upstream, keys, tmp_path / "k8s.tar", version, tmp_path / "cache")
    assert result.returncode == 2 and "airlock builds 1.34-1.38" in result.stderr and "--allow-unsupported-version" in result.stderr
    assert upstream.server.requests == [] and not (tmp_path / "k8s.tar").exists()


def test_a_label_outside_the_range_is_refused_once_read(upstream, keys, tmp_path):
    (upstream.files_root / "release-server/release/stable-1.txt").write_text("v1.33.7\n")
    try:
        result = build(upstream, keys, tmp_path / "k8s.tar", "stable-1", tmp_path / "cache")
    finally:
        (upstream.files_root / "release-server/release/stable-1.txt").write_text(upstream.labels["stable-1"] + "\n")
    assert result.returncode == 2 and "Kubernetes v1.33.7 is not supported" in result.stderr


def test_allow_unsupported_version_is_recorded_and_shown(upstream, keys, tmp_path):
    out = tmp_path / "lab.tar"
    build(upstream, keys, out, "v1.33.7", tmp_path / "cache", "--allow-unsupported-version", "--cni", "none", check=True)
    assert manifest_of(out)["kubernetes"] == {"requested": "v1.33.7", "version": "v1.33.7", "unsupported": True}
    assert "UNSUPPORTED: built with --allow-unsupported-version" in airlock("inspect", out, check=True).stdout
    supported = tmp_path / "k8s.tar"
    build(upstream, keys, supported, "v1.34.4", tmp_path / "cache", "--cni", "none", check=True)
    assert "unsupported" not in manifest_of(supported)["kubernetes"]
    assert "UNSUPPORTED" not in airlock("inspect", supported, check=True).stdout
