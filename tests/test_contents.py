"""What is inside: Go build info of real Go programs and real package databases, in the SBOM of a bundle.

The images here are real umoci images with extra layers: this machine's own dpkg status
file (Debian 12's, checked against `dpkg-query --admindir` on a copy), an apk database, and a
Go program built in the test with Debian's Go. The bundle's kubectl is the real kubectl 1.33 of
this machine image, its runc Debian's runc, and its containerd tarball holds Debian's containerd:
all real Go binaries, whose build info is checked against `go version -m`.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.contents import BARE, BlobContents, Contents, Tap, merge_layers, parse_dpkg_status
from tests.conftest import TOOLS, build, require
from tests.goprobe import build_probe, go_version_m
from tests.imagefiles import ALPINE_IMAGE, ALPINE_OS_RELEASE, APK_INSTALLED, DEBIAN_IMAGE
from tests.upstream import DEFAULT_VERSION, LocalUpstream

KUBECTL = Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict[str, Path]:
    require("go")
    return build_probe(tmp_path_factory.mktemp("goprobe"))


@pytest.fixture(scope="module")
def debian_status(tmp_path_factory) -> Path:
    """A copy of this machine's dpkg status (other jobs may install packages meanwhile: the copy is the truth)."""
    admin = tmp_path_factory.mktemp("dpkg-admin")
    shutil.copyfile("/var/lib/dpkg/status", admin / "status")
    return admin / "status"


@pytest.fixture(scope="module")
def contents_upstream(tmp_path_factory, probe, debian_status):
    require(*TOOLS, "go")
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} (the machine image's real kubectl 1.33) is missing")
    upstream = LocalUpstream(
        tmp_path_factory.mktemp("contents-upstream"),
        versions=(DEFAULT_VERSION,),
        labels={"stable": DEFAULT_VERSION},
        extra_images={DEBIAN_IMAGE: ("amd64", "arm64"), ALPINE_IMAGE: ("amd64",)},
        image_files={
            DEBIAN_IMAGE: {
                "/etc/os-release": Path("/etc/os-release").read_bytes(),
                "/var/lib/dpkg/status": debian_status.read_bytes(),
                "/usr/local/bin/probe": probe,
            },
            ALPINE_IMAGE: {"/etc/os-release": ALPINE_OS_RELEASE.encode(), "/lib/apk/db/installed": APK_INSTALLED.encode()},
        },
        release_binaries={"kubectl": KUBECTL, "runc": Path("/usr/sbin/runc"), "containerd": Path("/usr/bin/containerd")},
    ).start()
    yield upstream
    upstream.close()


def sbom_of(bundle: Path) -> dict:
    with tarfile.open(bundle) as archive:
        return json.loads(archive.extractfile("sbom.spdx.json").read())


def contained(sbom: dict, container_name: str) -> dict[str, list[dict]]:
    """The packages an SPDX element named `container_name` CONTAINS, by relationship comment (the platform)."""
    by_id = {package["SPDXID"]: package for package in sbom["packages"]}
    container = next(p["SPDXID"] for p in sbom["packages"] if p["name"] == container_name or p.get("comment") == f"bundle member {container_name}")
    found: dict[str, list[dict]] = {}
    for relation in sbom["relationships"]:
        if relation["spdxElementId"] == container and relation["relationshipType"] == "CONTAINS":
            found.setdefault(relation.get("comment", ""), []).append(by_id[relation["relatedSpdxElement"]])
    return found


def linked(sbom: dict, binary: dict) -> dict[str, str]:
    by_id = {package["SPDXID"]: package for package in sbom["packages"]}
    return {
        by_id[r["relatedSpdxElement"]]["name"]: by_id[r["relatedSpdxElement"]]["versionInfo"]
        for r in sbom["relationships"]
        if r["spdxElementId"] == binary["SPDXID"] and r["relationshipType"] == "STATIC_LINK"
    }


def purl(package: dict) -> str:
    return package["externalRefs"][0]["referenceLocator"] if package.get("externalRefs") else ""


@pytest.fixture(scope="module")
def contents_bundle(contents_upstream, keys, tmp_path_factory):
    work = tmp_path_factory.mktemp("contents-bundle")
    result = build(
        contents_upstream, keys, work / "k8s.tar", DEFAULT_VERSION, work / "cache", "--arch", "amd64,arm64",
        "--image", DEBIAN_IMAGE, "--image", ALPINE_IMAGE, check=True,
    )  # fmt: skip
    return work, result


def test_sbom_names_the_debian_packages_of_an_image_layer_as_dpkg_reads_them(contents_bundle, debian_status):
    require("dpkg-query")
    work, _ = contents_bundle
    sbom = sbom_of(work / "k8s.tar")
    listed = subprocess.run(
        ["dpkg-query", f"--admindir={debian_status.parent}", "-W", "-f", "${db:Status-Status} ${Package} ${Version}\n"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {tuple(line.split(" ")[1:]) for line in listed.splitlines() if line.startswith("installed ")}
    assert len(installed) > 100
    by_platform = contained(sbom, DEBIAN_IMAGE)
    for platform in ("linux/amd64", "linux/arm64"):
        debs = [p for p in by_platform[platform] if purl(p).startswith("pkg:deb/")]
        assert {(p["name"], p["versionInfo"]) for p in debs} == installed
        assert all("distro=debian-12" in purl(p) for p in debs)
        assert all(p["sourceInfo"].startswith("Debian:12;") for p in debs)
    libc = next(p for p in by_platform["linux/amd64"] if p["name"] == "libc6")
    assert purl(libc).startswith(f"pkg:deb/debian/libc6@{libc['versionInfo'].replace('+', '%2B')}?arch=amd64")


def test_sbom_names_the_alpine_packages_of_an_image_layer(contents_bundle):
    work, _ = contents_bundle
    apks = contained(sbom_of(work / "k8s.tar"), ALPINE_IMAGE)["linux/amd64"]
    assert {(p["name"], p["versionInfo"]) for p in apks} == {("musl", "1.2.4_git20230717-r4"), ("busybox", "1.36.1-r15"), ("libcrypto3", "3.1.4-r5")}
    assert purl(next(p for p in apks if p["name"] == "busybox")) == "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=3.19.1"
    assert all(p["sourceInfo"].startswith("Alpine:v3.19;") for p in apks)


def test_sbom_names_the_go_modules_of_a_program_in_an_image_per_platform(contents_bundle, probe):
    work, _ = contents_bundle
    sbom = sbom_of(work / "k8s.tar")
    by_platform = contained(sbom, DEBIAN_IMAGE)
    for arch in ("amd64", "arm64"):
        truth = go_version_m(probe[arch])
        program = next(p for p in by_platform[f"linux/{arch}"] if p["name"] == "probe")
        assert f"/usr/local/bin/probe in {DEBIAN_IMAGE} linux/{arch}, built with {truth['go']} from {truth['path']}" in program["comment"]
        assert linked(sbom, program) == {"stdlib": truth["go"], **truth["deps"]} == {"stdlib": truth["go"], "example.com/greeting": "v1.4.2"}


def test_sbom_names_the_go_modules_of_bundle_binaries_and_of_programs_in_archives(contents_bundle):
    work, _ = contents_bundle
    sbom = sbom_of(work / "k8s.tar")
    truth = go_version_m(KUBECTL)
    kubectl = contained(sbom, "bin/linux-amd64/kubectl")["file"]
    assert [p["name"] for p in kubectl] == ["kubectl"] and kubectl[0]["versionInfo"] == truth["main"][1]
    assert linked(sbom, kubectl[0]) == {"stdlib": truth["go"], truth["main"][0]: truth["main"][1], **truth["deps"]}
    assert len(truth["deps"]) > 50
    runc = contained(sbom, "bin/linux-arm64/runc")["file"]
    assert go_version_m(Path("/usr/sbin/runc"))["path"] in runc[0]["comment"]
    # Whichever containerd release the build picked for this minor: its archive holds Debian's containerd here.
    with tarfile.open(work / "k8s.tar") as bundle:
        member = next(n for n in bundle.getnames() if n.startswith("bin/linux-amd64/containerd-") and n.endswith("-linux-amd64.tar.gz"))
    archive = contained(sbom, member)["file"]
    assert [p["name"] for p in archive] == ["containerd"]
    assert go_version_m(Path("/usr/bin/containerd"))["go"] in archive[0]["comment"]


def test_a_rebuild_reads_contents_from_the_cache_and_a_cache_without_results_is_read_once(contents_upstream, contents_bundle, keys):
    work, first = contents_bundle
    again = build(contents_upstream, keys, work / "again.tar", DEFAULT_VERSION, work / "cache", "--arch", "amd64,arm64",
                  "--image", DEBIAN_IMAGE, "--image", ALPINE_IMAGE, check=True)  # fmt: skip
    line = next(line for line in again.stderr.splitlines() if line.startswith("contents:"))
    assert "re-read" not in line and " 0 B read for them" in line, line
    assert sbom_of(work / "again.tar")["packages"] == sbom_of(work / "k8s.tar")["packages"]
    shutil.rmtree(work / "cache" / "contents")
    third = build(contents_upstream, keys, work / "third.tar", DEFAULT_VERSION, work / "cache", "--arch", "amd64,arm64",
                  "--image", DEBIAN_IMAGE, "--image", ALPINE_IMAGE, check=True)  # fmt: skip
    line = next(line for line in third.stderr.splitlines() if line.startswith("contents:"))
    assert "re-read from the cache: no earlier scan result" in line, line
    assert sbom_of(work / "third.tar")["packages"] == sbom_of(work / "k8s.tar")["packages"]


def test_a_download_cut_half_way_and_resumed_is_still_read_whole(contents_upstream, keys, tmp_path):
    from tests.upstream import Fault

    path = f"/release-server/release/{DEFAULT_VERSION}/bin/linux/amd64/kubectl"
    contents_upstream.server.faults[path] = Fault(cut_at=0.5)
    try:
        result = build(contents_upstream, keys, tmp_path / "k8s.tar", DEFAULT_VERSION, tmp_path / "cache", "--cni", "none", check=True)
        ranges = [record.range for record in contents_upstream.server.requested(path) if record.method == "GET"]
    finally:
        contents_upstream.server.clear()
    assert "retrying" in result.stderr
    assert any(ranges), f"the second request should resume with Range: {ranges} {result.stderr}"
    kubectl = contained(sbom_of(tmp_path / "k8s.tar"), "bin/linux-amd64/kubectl")["file"]
    assert linked(sbom_of(tmp_path / "k8s.tar"), kubectl[0])["stdlib"] == go_version_m(KUBECTL)["go"]


def test_no_scan_lists_files_and_images_only(contents_upstream, keys, tmp_path):
    build(contents_upstream, keys, tmp_path / "k8s.tar", DEFAULT_VERSION, tmp_path / "cache", "--cni", "none", "--image", DEBIAN_IMAGE, "--no-scan", check=True)
    sbom = sbom_of(tmp_path / "k8s.tar")
    assert {r["relationshipType"] for r in sbom["relationships"]} == {"DESCRIBES"}


def _layer(members: dict[str, bytes | None]) -> bytes:
    """A plain tar layer; None makes an empty file (whiteouts)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            archive.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


def _scan(data: bytes, kind: str = "tar", chunk: int = 777) -> BlobContents:
    tap = Tap(kind)
    for start in range(0, len(data), chunk):
        tap.write(data[start : start + chunk])
    return tap.finish()


STATUS = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nArchitecture: amd64\nSource: zlib\n\n"


def test_an_upper_layer_that_deletes_a_database_hides_it():
    lower = _scan(_layer({"var/lib/dpkg/status": STATUS, "etc/os-release": b"ID=debian\nVERSION_ID=12\n"}))
    assert merge_layers([lower])["var/lib/dpkg/status"]["dpkg"][0]["source"] == "zlib"
    deleted = _scan(_layer({"var/lib/dpkg/.wh.status": None}))
    assert "var/lib/dpkg/status" not in merge_layers([lower, deleted])
    opaque = _scan(_layer({"var/lib/dpkg/.wh..wh..opq": None}))
    assert "var/lib/dpkg/status" not in merge_layers([lower, opaque]) and "etc/os-release" in merge_layers([lower, opaque])


def test_distroless_status_d_files_and_long_pax_names_are_read():
    long_dir = "opt/" + "x" * 120
    data = _layer({"var/lib/dpkg/status.d/zlib1g": STATUS, "var/lib/dpkg/status.d/zlib1g.md5sums": b"abc  /x\n", f"{long_dir}/keep": b"not elf"})
    found = _scan(data, chunk=100)
    assert list(found.files) == ["var/lib/dpkg/status.d/zlib1g"]
    import gzip

    # One tar stream compressed as two concatenated gzip members (what parallel compressors write).
    both = _layer({"var/lib/dpkg/status.d/zlib1g": STATUS, "lib/apk/db/installed": APK_INSTALLED.encode()})
    assert _scan(gzip.compress(both[:1000]) + gzip.compress(both[1000:]), "gzip").files.keys() == {"var/lib/dpkg/status.d/zlib1g", "lib/apk/db/installed"}


def test_a_stray_copy_of_the_build_info_magic_is_passed_over(probe):
    """A program that reads build info holds the magic as a string; the real blob after it is still found."""
    real = probe["amd64"].read_bytes()
    decoy = (b"\x7fELF" + b"\x00" * 12 + b"\xff Go buildinf:" + b"\x08\x02" + b"\x00" * 16 + b"\x05nogo!").ljust(128, b"\x00")
    tap = Tap("file", "probe")
    for start in range(0, len(decoy + real), 4096):
        tap.write((decoy + real)[start : start + 4096])
    # The real blob sits at its own offset + len(decoy): aligned only if len(decoy) is a multiple of 16.
    assert len(decoy) % 16 == 0
    assert tap.finish().files[BARE]["go"]["deps"] == [["example.com/greeting", "v1.4.2"]]


def test_dpkg_packages_not_installed_are_left_out():
    text = STATUS.decode() + "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
    assert [p["name"] for p in parse_dpkg_status(text)] == ["zlib1g"]


def test_build_info_split_across_tiny_chunks_is_still_read(probe):
    data = probe["arm64"].read_bytes()
    tap = Tap("file", "probe")
    for start in range(0, len(data), 61):
        tap.write(data[start : start + 61])
    assert tap.finish().files[BARE]["go"]["deps"] == [["example.com/greeting", "v1.4.2"]]


def test_a_file_full_of_stray_magic_is_given_up_on_quickly():
    import time

    hostile = b"\x7fELF" + b"\x00" * 12 + (b"\xff Go buildinf:\x08\x02" + b"\x00" * 16 + b"\x7f" * 16) * 200_000
    started = time.monotonic()
    assert _scan(hostile, "file", 1 << 20).files == {}
    assert time.monotonic() - started < 2


def test_a_scan_result_a_crash_damaged_is_read_again_not_trusted(tmp_path):
    """Results are written without a sync: whatever a crash can leave under the final name must count as no result."""
    from bundle.store import BlobStore

    store = BlobStore(tmp_path / "cache")
    data = b"a bare file"
    digest = store.put_bytes(data)
    contents = Contents(store, tmp_path / "cache")
    with contents.scanning(digest, "file", "bin/linux-amd64/tool") as tap:
        tap.write(data)
    assert contents.known(digest) is not None and contents._path(digest).is_file()
    good = contents._path(digest).read_bytes()
    for damaged in (b"", b"\0" * len(good), good[: len(good) // 2]):
        contents._path(digest).write_bytes(damaged)
        fresh = Contents(store, tmp_path / "cache")
        assert fresh.known(digest) is None
        with fresh.scanning(digest, "file", "bin/linux-amd64/tool") as tap:
            assert tap is not None  # read again
            tap.write(data)
        assert fresh.known(digest) is not None and contents._path(digest).read_bytes() == good


def test_a_layer_that_inflates_a_thousandfold_is_read_in_bounded_memory():
    """1 MiB of a gzip layer can inflate to ~1 GiB: the tap hands the tar walker a bounded step at a time."""
    import gzip
    import tracemalloc

    zeros = 256 << 20
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("var/cache/zeros")
        info.size = zeros
        archive.addfile(info, io.BytesIO(bytes(zeros)))
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(STATUS)
        archive.addfile(info, io.BytesIO(STATUS))
    layer = gzip.compress(buffer.getvalue(), 9)
    del buffer
    assert len(layer) < 1 << 20  # the whole layer arrives in one write
    tap = Tap("gzip")
    tracemalloc.start()
    try:
        tap.write(layer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tap.finish().files["var/lib/dpkg/status"]["dpkg"][0]["name"] == "zlib1g"
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB held while reading {zeros / 2**20:.0f} MiB inflated from {len(layer) / 2**10:.0f} KiB"
