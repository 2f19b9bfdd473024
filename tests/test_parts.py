"""An operator carries a bundle on media too small for it: split into parts, checked part by part, installed straight from them.

The same inputs built whole and split (same SOURCE_DATE_EPOCH) must give the
same bytes; each hostile change to the parts must be refused naming the part
file, with nothing written outside staging; the sidecars must check out with
nothing but sha256sum and openssl.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from builder import direct
from builder.direct import WriteBehind
from builder.errors import BuildError
from builder.split import SIZE_NAMES, parse_size
from tests.conftest import airlock, assert_blobs_whole, build, require
from tests.test_install import FAST, IGNORE, install, node_config, outside_staging, tree
from tests.upstream import free_port

ODD = 100_003  # not a multiple of 512: cuts members, and headers, in the middle
DOCS = Path(__file__).resolve().parents[1] / "docs" / "sneakernet.md"


@pytest.fixture(scope="module")
def epoch() -> dict:
    return {"SOURCE_DATE_EPOCH": str(int(time.time()) - 60)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("parts-cache")


@pytest.fixture(scope="module")
def whole(upstream, keys, cache, epoch, tmp_path_factory) -> Path:
    """The unsplit bundle every split of the same inputs must equal."""
    out = tmp_path_factory.mktemp("whole") / "k8s.tar"
    build(upstream, keys, out, "stable-1.36", cache, env=epoch, check=True)
    return out


@pytest.fixture(scope="module")
def split_dir(upstream, keys, cache, epoch, tmp_path_factory) -> Path:
    """The same bundle built with --split at an odd size, with sidecars."""
    directory = tmp_path_factory.mktemp("split")
    build(upstream, keys, directory / "k8s.tar", "stable-1.36", cache, "--split", str(ODD), "--sidecars", env=epoch, check=True)
    return directory


def parts_of(directory: Path, bundle: str = "k8s.tar") -> list[Path]:
    return sorted(directory.glob(f"{bundle}.part*"))


def joined(directory: Path) -> bytes:
    return b"".join(part.read_bytes() for part in parts_of(directory))


def listing(directory: Path) -> dict:
    return json.loads((directory / "k8s.parts.json").read_bytes())


def test_size_names_and_units_parse_to_their_documented_values():
    assert parse_size("fat32") == 4095 * 1024 * 1024 < 4 * 1024**3 - 1
    assert parse_size("dvd") == 4_700_372_992 and parse_size("DVD") == parse_size("dvd")
    assert parse_size("bd25") == 25_025_314_816
    assert all(value % 4096 == 0 for value in SIZE_NAMES.values())  # parts keep member data 4 KiB aligned
    assert parse_size("3900M") == 3900 << 20 and parse_size("4G") == 4 << 30 and parse_size("64K") == 65536
    assert parse_size("65536") == 65536 and parse_size("2MiB") == 2 << 20 and parse_size(ODD) == ODD
    for bad in ("", "0", "-5", "4X", "fat16", "1.5G"):
        with pytest.raises(BuildError):
            parse_size(bad)


def test_split_build_is_the_unsplit_bundle_cut_into_parts(whole, split_dir, keys):
    parts = parts_of(split_dir)
    data = whole.read_bytes()
    assert len(parts) == -(-len(data) // ODD) > 5
    assert all(part.stat().st_size == ODD for part in parts[:-1]) and 0 < parts[-1].stat().st_size <= ODD
    assert joined(split_dir) == data
    document = listing(split_dir)
    assert document["size"] == len(data) and document["part_size"] == ODD
    assert [part["name"] for part in document["parts"]] == [part.name for part in parts]
    import hashlib

    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    assert [part["sha256"] for part in document["parts"]] == [hashlib.sha256(part.read_bytes()).hexdigest() for part in parts]
    # Some member's data really is cut by a part boundary.
    with tarfile.open(whole) as archive:
        cut = [m.name for m in archive.getmembers() if m.offset_data // ODD != (m.offset_data + m.size - 1) // ODD]
    assert cut
    # The parts list is canonical JSON, signed like bundle.json: openssl checks it with the public key alone.
    raw = (split_dir / "k8s.parts.json").read_bytes()
    assert raw == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    check = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", keys["ed25519"] / "airlock.pub", "-rawin", "-in", "k8s.parts.json", "-sigfile", "k8s.parts.json.sig"],
        cwd=split_dir, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    # Node commands take the parts list or the first part.
    for given in (split_dir / "k8s.parts.json", parts[0]):
        result = airlock("verify", given, "--key", keys["ed25519"] / "airlock.pub", check=True)
        assert result.stdout.startswith(f"OK {given}")
        shown = airlock("inspect", given, "--key", keys["ed25519"] / "airlock.pub", check=True)
        assert "signature valid" in shown.stdout and "kubernetes  v1.36.4" in shown.stdout
    later = airlock("verify", parts[1], "--key", keys["ed25519"] / "airlock.pub")
    assert later.returncode == 1 and "k8s.tar.part002: is part 2" in later.stderr


def test_the_disk_writes_of_a_bundle_start_while_it_is_still_being_written(tmp_path, monkeypatch):
    """The sync before the rename must not wait for the whole bundle: writes start every WRITE_BEHIND_BYTES."""
    monkeypatch.setattr(direct, "WRITE_BEHIND_BYTES", 1 << 20)
    started: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(direct.os, "fdatasync", lambda descriptor: (started.append(descriptor), real(descriptor))[1])
    with open(tmp_path / "bundle", "wb", buffering=0) as handle, WriteBehind(handle.fileno()) as behind:
        handle.write(b"x" * (3 << 20))
        deadline = time.monotonic() + 30
        while not behind.started and time.monotonic() < deadline:  # counted once the started writes are on disk
            time.sleep(0.01)
        assert started == [handle.fileno()] and behind.started == 1  # nothing more was written: no second start
    assert (tmp_path / "bundle").stat().st_size == 3 << 20


@pytest.mark.parametrize("size", ["fat32", "dvd", "bd25", "4G", "3900M", "256K", "65535"])
def test_every_size_round_trips(whole, upstream, keys, cache, epoch, tmp_path, size):
    """Named sizes larger than the test bundle give one part; small ones give many; all cat back to the same bytes."""
    out = tmp_path / "k8s.tar"
    build(upstream, keys, out, "stable-1.36", cache, "--split", size, env=epoch, check=True)
    parts = parts_of(tmp_path)
    expected = -(-whole.stat().st_size // parse_size(size))
    assert len(parts) == expected and not out.exists()
    assert all(part.stat().st_size <= parse_size(size) for part in parts)
    assert joined(tmp_path) == whole.read_bytes()
    airlock("verify", tmp_path / "k8s.parts.json", "--key", keys["ed25519"] / "airlock.pub", check=True)
    # A later build under the same name with fewer parts leaves none of the old ones behind.
    if len(parts) > 1:
        build(upstream, keys, out, "stable-1.36", cache, "--split", str(parse_size(size) * 2), env=epoch, check=True)
        assert len(parts_of(tmp_path)) == -(-whole.stat().st_size // (parse_size(size) * 2))
        airlock("verify", tmp_path / "k8s.parts.json", "--key", keys["ed25519"] / "airlock.pub", check=True)


def test_split_an_existing_bundle_and_join_it_back(whole, split_dir, keys, tmp_path):
    out = tmp_path / "split"
    result = airlock("split", whole, "--size", str(ODD), "--sign-key", keys["ed25519"] / "airlock.key", "--out-dir", out, "--sidecars", check=True)
    assert "parts list" in result.stdout
    # The same bytes as a split build, and the same signed list.
    assert [p.name for p in parts_of(out)] == [p.name for p in parts_of(split_dir)]
    assert joined(out) == whole.read_bytes()
    assert (out / "k8s.parts.json").read_bytes() == (split_dir / "k8s.parts.json").read_bytes()
    assert (out / "MANIFEST.txt").read_bytes() == (split_dir / "MANIFEST.txt").read_bytes()
    # The node installer it carries is written beside the parts and listed, as a split build does: the same SHA256SUMS.
    assert (out / "airlock-node.pyz").read_bytes() == (split_dir / "airlock-node.pyz").read_bytes()
    assert "  airlock-node.pyz\n" in (out / "SHA256SUMS").read_text()
    assert (out / "SHA256SUMS").read_bytes() == (split_dir / "SHA256SUMS").read_bytes()
    airlock("verify", out / "k8s.tar.part001", "--key", keys["ed25519"] / "airlock.pub", check=True)
    back = tmp_path / "joined" / "k8s.tar"
    joined_result = airlock("join-parts", out / "k8s.parts.json", "-o", back, "--key", keys["ed25519"] / "airlock.pub", check=True)
    assert back.read_bytes() == whole.read_bytes() and "sha256" in joined_result.stdout
    # A key that did not sign the bundle signs no parts list for it.
    other = airlock("split", whole, "--size", str(ODD), "--sign-key", keys["ecdsa-p256"] / "airlock.key", "--out-dir", tmp_path / "other")
    assert other.returncode == 1 and "bundle.json.sig" in other.stderr
    assert not (tmp_path / "other" / "k8s.parts.json").exists() and not parts_of(tmp_path / "other")
    # join-parts checks every part too.
    (out / "k8s.tar.part003").write_bytes(b"\x00" * ODD)
    bad = airlock("join-parts", out / "k8s.parts.json", "-o", tmp_path / "bad.tar")
    assert bad.returncode == 1 and "k8s.tar.part003" in bad.stderr and not (tmp_path / "bad.tar").exists()


def test_unsigned_parts_are_refused_by_nodes_and_too_many_parts_by_the_builder(whole, upstream, keys, cache, epoch, tmp_path):
    unsigned = tmp_path / "unsigned"
    result = airlock("split", whole, "--size", "400K", "--out-dir", unsigned, check=True)
    assert "not signed" in result.stderr and not (unsigned / "k8s.parts.json.sig").exists()
    refused = airlock("verify", unsigned / "k8s.parts.json", "--key", keys["ed25519"] / "airlock.pub")
    assert refused.returncode == 1 and "k8s.parts.json.sig: missing" in refused.stderr
    airlock("join-parts", unsigned / "k8s.tar.part001", "-o", tmp_path / "joined.tar", check=True)
    assert (tmp_path / "joined.tar").read_bytes() == whole.read_bytes()
    # More than 999 parts: refused, and nothing is left behind under any name.
    many = tmp_path / "many"
    tiny = str(whole.stat().st_size // 1000)
    failed = build(upstream, keys, many / "k8s.tar", "stable-1.36", cache, "--split", tiny, env=epoch)
    assert failed.returncode == 1 and "more than 999 parts" in failed.stderr
    assert list(many.iterdir()) == []
    usage = airlock("split", whole, "--size", "lots")
    assert usage.returncode == 1 and "size 'lots'" in usage.stderr


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def member_inside_one_part(whole: Path) -> tuple[str, int]:
    """A member whose data starts and ends in the same (not the first) part: the member check would fire before the part's."""
    with tarfile.open(whole) as archive:
        for member in archive.getmembers():
            first, last = member.offset_data // ODD, (member.offset_data + member.size - 1) // ODD
            if first == last and first >= 2 and member.size > 200 and (first + 1) * ODD - (member.offset_data + member.size) > 1024:
                return member.name, member.offset_data + member.size // 2
    raise AssertionError("no member lies inside one part")


def header_offset_of_a_member(whole: Path) -> int:
    with tarfile.open(whole) as archive:
        member = next(m for m in archive.getmembers() if m.offset // ODD >= 2 and m.offset // ODD == (m.offset + 511) // ODD)
    return member.offset + 10  # inside the name field of its header block


def _swap(directory: Path, last: bool = False) -> None:
    a, b = directory / "k8s.tar.part002", (parts_of(directory)[-1] if last else directory / "k8s.tar.part003")
    a.rename(directory / "swap")
    b.rename(a)
    (directory / "swap").rename(b)


def _resign_with(directory: Path, key_dir: Path) -> None:
    from builder import sign

    data = (directory / "k8s.parts.json").read_bytes()
    (directory / "k8s.parts.json.sig").write_bytes(sign.load(key_dir / "airlock.key").sign(data))


def _alter_listing(directory: Path) -> None:
    document = listing(directory)
    document["parts"][1]["sha256"] = "0" * 64
    (directory / "k8s.parts.json").write_bytes(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())


HOSTILE = {
    # case: (change, the part or file named, words in the message)
    "missing": (lambda d, w, k: (d / "k8s.tar.part003").unlink(), "k8s.tar.part003", "missing"),
    "swapped": (lambda d, w, k: _swap(d), "k8s.tar.part002", "holds the bytes of k8s.tar.part003"),
    # The last part is shorter: a swap with it changes both sizes, and is still called a swap.
    "swapped with the last": (lambda d, w, k: _swap(d, last=True), "k8s.tar.part002", "(parts swapped or renamed)"),
    "truncated": (lambda d, w, k: os.truncate(d / "k8s.tar.part004", ODD - 100), "k8s.tar.part004", "truncated"),
    "altered in a member": (
        lambda d, w, k: flip(d / f"k8s.tar.part{member_inside_one_part(w)[1] // ODD + 1:03d}", member_inside_one_part(w)[1] % ODD),
        None,
        "altered",
    ),
    "altered in a header": (
        lambda d, w, k: flip(d / f"k8s.tar.part{header_offset_of_a_member(w) // ODD + 1:03d}", header_offset_of_a_member(w) % ODD),
        None,
        "altered",
    ),
    "extra part": (
        lambda d, w, k: shutil.copy(d / "k8s.tar.part001", d / f"k8s.tar.part{len(parts_of(d)) + 1:03d}"),
        "extra",
        "is not in the signed parts list",
    ),
    "signed by another key": (lambda d, w, k: _resign_with(d, k["ecdsa-p256"]), "k8s.parts.json.sig", "signature does not match k8s.parts.json"),
    "list altered": (lambda d, w, k: _alter_listing(d), "k8s.parts.json.sig", "signature does not match"),
}


def expected_name(case: str, directory: Path, whole: Path) -> str:
    named = HOSTILE[case][1]
    if case == "altered in a member":
        return f"k8s.tar.part{member_inside_one_part(whole)[1] // ODD + 1:03d}"
    if case == "altered in a header":
        return f"k8s.tar.part{header_offset_of_a_member(whole) // ODD + 1:03d}"
    if named == "extra":
        return f"k8s.tar.part{len(listing(directory)['parts']) + 1:03d}"
    return named


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_parts_are_refused_by_name_with_nothing_written_outside_staging(case, whole, split_dir, keys, tmp_path):
    directory = tmp_path / "media"
    directory.mkdir()
    for part in [*parts_of(split_dir), split_dir / "k8s.parts.json", split_dir / "k8s.parts.json.sig"]:
        shutil.copy(part, directory / part.name)
    change, _, words = HOSTILE[case]
    change(directory, whole, keys)
    name = expected_name(case, directory, whole)
    verified = airlock("verify", directory / "k8s.parts.json", "--key", keys["ed25519"] / "airlock.pub")
    assert verified.returncode == 1, verified.stdout
    message = verified.stderr.strip()
    assert message.startswith(f"airlock: error: {name}: ") and words in message, message
    assert len(message.splitlines()) == 1
    root = tmp_path / "root"
    result = install("init", directory / "k8s.tar.part001", keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", *FAST)
    assert result.returncode == 1 and f"{name}: " in result.stderr and words in result.stderr, result.stderr
    assert outside_staging(tree(root)) == set()


def _hostile_file(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "/dev/zero":
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # the same device as /dev/zero
    elif kind == "fifo":
        os.mkfifo(path)  # nobody ever writes to it
    elif kind == "3 GiB":
        with open(path, "wb") as handle:
            handle.truncate(3 << 30)  # sparse: no disk used
    else:
        path.symlink_to(path.with_name("k8s.tar.part001"))


def _small_memory() -> None:
    # 2 GiB of address space: a node command that tried to read a 3 GiB file (or /dev/zero) whole would fail.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "3 GiB", "symlink"])
@pytest.mark.parametrize("which", ["k8s.parts.json", "k8s.parts.json.sig"])
def test_a_hostile_parts_list_or_signature_is_refused_in_one_line_before_it_is_read(which, kind, split_dir, keys, tmp_path):
    """Read bounded, before the signature check: regular files only, never through a link, at most the cap + 1 bytes."""
    from tests.conftest import node_command

    media = tmp_path / "media"
    media.mkdir()
    for part in [*parts_of(split_dir), split_dir / "k8s.parts.json", split_dir / "k8s.parts.json.sig"]:
        shutil.copy(part, media / part.name)
    _hostile_file(media / which, kind)
    what = "parts list" if which == "k8s.parts.json" else "signature"
    expected = {
        "/dev/zero": f"is not a regular file (a FIFO, device or directory); copy the {what} itself beside the parts",
        "fifo": f"is not a regular file (a FIFO, device or directory); copy the {what} itself beside the parts",
        "3 GiB": f"is {3 << 30} bytes, over the {(1 << 20) if what == 'parts list' else 1024} byte cap of a {what}",
        "symlink": f"is a symbolic link; copy the {what} itself beside the parts",
    }[kind]
    for given in (media / "k8s.parts.json", media / "k8s.tar.part001"):
        result = subprocess.run([*node_command(), "verify", str(given), "--key", str(keys["ed25519"] / "airlock.pub")],
                                capture_output=True, text=True, timeout=60, preexec_fn=_small_memory)  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert result.stderr.splitlines() == [f"airlock: error: {which}: {expected}"], result.stderr


def test_sidecars_check_out_with_sha256sum_and_openssl(split_dir, whole, keys, upstream, cache, epoch, tmp_path):
    require("openssl")
    sums = (split_dir / "SHA256SUMS").read_text().splitlines()
    named = [line.split("  ", 1)[1] for line in sums]
    assert named[: len(parts_of(split_dir))] == [part.name for part in parts_of(split_dir)]
    assert {"k8s.parts.json", "k8s.parts.json.sig", "MANIFEST.txt", "sbom.spdx.json", "airlock-node.pyz"} <= set(named)
    # The node installer beside the parts runs as root before it verifies anything: it is listed, with its signed member's sha256.
    with tarfile.open(whole) as archive:
        signed = {entry["path"]: entry["sha256"] for entry in json.loads(archive.extractfile("bundle.json").read())["files"]}
    assert f"{signed['bin/airlock-node.pyz']}  airlock-node.pyz" in sums
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+", line) for line in sums)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=split_dir, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(sums), check.stdout + check.stderr
    pub = keys["ed25519"] / "airlock.pub"
    openssl = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"]
    assert subprocess.run(openssl, cwd=split_dir, capture_output=True).returncode == 0
    # A changed part fails sha256sum; a changed SHA256SUMS fails openssl.
    altered = tmp_path / "altered"
    shutil.copytree(split_dir, altered)
    flip(altered / "k8s.tar.part002", 7)
    flip(altered / "airlock-node.pyz", 1000)
    failed = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=altered, capture_output=True, text=True)
    assert failed.returncode != 0 and "k8s.tar.part002: FAILED" in failed.stdout and "airlock-node.pyz: FAILED" in failed.stdout
    (altered / "SHA256SUMS").write_text((altered / "SHA256SUMS").read_text().replace(sums[1][:8], "00000000"))
    assert subprocess.run(openssl, cwd=altered, capture_output=True).returncode != 0
    # The SBOM is the bundle's member byte for byte; MANIFEST.txt lists every component and image with its licence.
    with tarfile.open(whole) as archive:
        assert (split_dir / "sbom.spdx.json").read_bytes() == archive.extractfile("sbom.spdx.json").read()
        manifest = json.loads(archive.extractfile("bundle.json").read())
    text = (split_dir / "MANIFEST.txt").read_text()
    for entry in manifest["files"]:
        if not entry["path"].startswith("images/blobs/"):
            line = next(line for line in text.splitlines() if line.startswith(entry["path"] + "  "))
            assert entry["sha256"] in line and f"  {entry['size']}  " in line and (entry["source"] or "generated-by-airlock") in line
    for image in manifest["images"]:
        line = next(line for line in text.splitlines() if line.startswith(image["reference"] + "  "))
        assert image["digest"].split(":", 1)[1] in line and "amd64" in line
    assert re.search(r"^bin/linux-amd64/kubeadm  kubernetes  v1\.36\.4  amd64  .*  Apache-2\.0$", text, re.M)
    assert re.search(r"^registry\.k8s\.io/etcd:\S+  etcd  .*  Apache-2\.0$", text, re.M)
    assert re.search(r"^images/index\.json  airlock  .*  NOASSERTION$", text, re.M)
    # ECDSA P-256: a whole bundle with sidecars, checked with openssl dgst.
    ecdsa = tmp_path / "ecdsa"
    build(upstream, keys, ecdsa / "k8s.tar", "stable-1.36", cache, "--sidecars", algorithm="ecdsa-p256", env=epoch, check=True)
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=ecdsa, capture_output=True).returncode == 0
    assert (ecdsa / "SHA256SUMS").read_text().startswith(f"{__import__('hashlib').sha256((ecdsa / 'k8s.tar').read_bytes()).hexdigest()}  k8s.tar\n")
    dgst = ["openssl", "dgst", "-sha256", "-verify", keys["ecdsa-p256"] / "airlock.pub", "-signature", "SHA256SUMS.sig", "SHA256SUMS"]
    assert subprocess.run(dgst, cwd=ecdsa, capture_output=True).returncode == 0


def doc_blocks(marker: str) -> list[str]:
    """Fenced ```sh blocks of docs/sneakernet.md whose first line is `marker`."""
    blocks = re.findall(r"```sh\n(.*?)```", DOCS.read_text(), re.S)
    return [block for block in blocks if block.startswith(marker)]


def test_the_reviewers_commands_in_the_docs_run_as_written(split_dir, upstream, keys, cache, epoch, tmp_path):
    require("openssl", "tar")
    blocks = doc_blocks("# reviewer, Ed25519")
    assert blocks, "docs/sneakernet.md has no reviewer block"
    media = tmp_path / "media"
    shutil.copytree(split_dir, media)
    shutil.copy(keys["ed25519"] / "airlock.pub", media / "airlock.pub")
    for block in blocks:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=media, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Signature Verified Successfully" in result.stdout
    # The same commands fail on altered media.
    flip(media / "k8s.tar.part002", 3)
    assert subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0]], cwd=media, capture_output=True).returncode != 0
    ecdsa_blocks = doc_blocks("# reviewer, ECDSA")
    assert ecdsa_blocks
    ecdsa = tmp_path / "ecdsa"
    build(upstream, keys, ecdsa / "k8s.tar", "stable-1.36", cache, "--split", "300K", "--sidecars", algorithm="ecdsa-p256", env=epoch, check=True)
    shutil.copy(keys["ecdsa-p256"] / "airlock.pub", ecdsa / "airlock.pub")
    for block in ecdsa_blocks:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ecdsa, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


PYZ_CHECKS = {"one file": "# pyz check, one file", "parts": "# pyz check, parts", "sidecars": "# pyz check, sidecars"}


@pytest.mark.parametrize("layout", ["one file", "parts", "parts with sidecars", "one file with sidecars"])
def test_the_documented_pyz_checks_pass_on_the_signed_pyz_and_fail_on_another(layout, split_dir, upstream, keys, cache, epoch, tmp_path):
    """Each pyz check in docs/sneakernet.md, as written, where it applies: the pyz runs as root before it verifies anything."""
    require("openssl", "tar", "sha256sum")
    media = tmp_path / "media"
    if layout.startswith("parts"):
        shutil.copytree(split_dir, media)
    else:
        build(upstream, keys, media / "k8s.tar", "stable-1.36", cache, *(["--sidecars"] if "sidecars" in layout else []), env=epoch, check=True)
    shutil.copy(keys["ed25519"] / "airlock.pub", media / "airlock.pub")
    (block,) = doc_blocks(PYZ_CHECKS["sidecars" if "sidecars" in layout else layout])
    checked = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=media, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Signature Verified Successfully" in checked.stdout and "airlock-node.pyz: OK" in checked.stdout
    flip(media / "airlock-node.pyz", 5000)
    refused = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=media, capture_output=True, text=True)
    assert refused.returncode != 0 and "airlock-node.pyz: FAILED" in refused.stdout, refused.stdout + refused.stderr


def test_init_from_parts_loads_every_image_into_containerd(split_dir, whole, keys, containerd, tmp_path):
    root, log = tmp_path / "root", tmp_path / "standin.log"
    result = install("init", split_dir / "k8s.parts.json", keys, root, node_config(tmp_path, free_port()), containerd, log)
    assert result.returncode == 0, result.stderr
    with tarfile.open(whole) as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
    assert containerd.image_digests() == {image["reference"]: image["digest"] for image in manifest["images"]}
    assert_blobs_whole(root / "var/lib/airlock/store/blobs/sha256")
    state = json.loads((root / "var/lib/airlock/state.json").read_text())
    assert state["installed"]["serial"] == manifest["serial"]


def test_a_killed_install_from_parts_resumes(split_dir, keys, tmp_path):
    from tests.conftest import AIRLOCK
    from tests.test_kills import measure, run_and_kill

    root = tmp_path / "root"
    config = node_config(tmp_path, free_port())
    argv = [AIRLOCK, "init", str(split_dir / "k8s.tar.part001"), "--key", str(keys["ed25519"] / "airlock.pub"), "--root", str(root),
            "--config", str(config), "--ignore-preflight-errors", IGNORE, *FAST]  # fmt: skip
    peak = measure([*argv[:6], str(tmp_path / "probe"), *argv[7:]])
    killed = 0
    for fraction in (0.3, 0.6):
        killed += run_and_kill(argv, int(peak * fraction))
    assert killed
    finished = subprocess.run(argv, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert_blobs_whole(root / "var/lib/airlock/store/blobs/sha256")


def test_join_upgrade_and_push_take_the_parts_list(split_dir, whole, bundle, upstream, keys, cache, epoch, tmp_path):
    from tests.upstream import DockerRegistry

    pub = keys["ed25519"] / "airlock.pub"
    # join (planned only): the verify phase reads the bundle through the parts.
    config = node_config(tmp_path, free_port(), controlPlaneEndpoint="127.0.0.1:6443", token="abcdef.0123456789abcdef",
                         caCertHashes=["sha256:" + "0" * 64])  # fmt: skip
    planned = airlock("join", split_dir / "k8s.tar.part001", "--key", pub, "--root", tmp_path / "plan", "--config", config, "--dry-run",
                      "--ignore-preflight-errors", IGNORE)  # fmt: skip
    assert planned.returncode == 0 and "would record serial" in planned.stdout + planned.stderr, planned.stderr
    # upgrade: a node installed from one file takes a newer bundle as parts.
    root = tmp_path / "root"
    assert install("init", whole, keys, root, config, None, tmp_path / "log", *FAST).returncode == 0
    serial = json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"]
    newer = tmp_path / "newer"
    build(upstream, keys, newer / "k8s.tar", "stable-1.36", cache, "--split", "200K", "--serial", str(serial + 1), env=epoch, check=True)
    upgraded = install("upgrade", newer / "k8s.parts.json", keys, root, config, None, tmp_path / "log", "--skip-phases", "images")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == serial + 1
    # push: every image into an existing registry, digests unchanged (the two-architecture session bundle, split).
    media = tmp_path / "media"
    airlock("split", bundle, "--size", "300K", "--sign-key", keys["ed25519"] / "airlock.key", "--out-dir", media, check=True)
    target = DockerRegistry(tmp_path / "target")
    try:
        airlock("push", media / "k8s.parts.json", "--to", f"{target.host}/site", "--insecure", "--key", pub, "--work-dir", tmp_path / "work", check=True)
        with tarfile.open(bundle) as archive:
            images = json.loads(archive.extractfile("bundle.json").read())["images"]
        for image in images:
            name, tag = image["reference"].rsplit(":", 1)
            assert target.manifest_digest("site/" + name.split("/", 1)[1], tag) == image["digest"]
    finally:
        target.close()
