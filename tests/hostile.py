"""A corpus of hostile bundles: each one must be refused, with a message naming the problem.

`cases(key)` builds every case from one small valid bundle signed with `key`;
`python -m tests.hostile OUTDIR KEY` writes them out (seeds for `make fuzz`).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from bundle.manifest import MAX_MANIFEST_BYTES, FileEntry, ImageEntry, Manifest

NOW = datetime.now(UTC).replace(microsecond=0)
BLOB = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}).encode()
BLOB_HEX = hashlib.sha256(BLOB).hexdigest()


def good_members() -> dict[str, bytes]:
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{BLOB_HEX}",
                    "size": len(BLOB),
                    "annotations": {"io.containerd.image.name": "registry.k8s.io/pause:3.10"},
                }
            ],
        }
    ).encode()
    return {
        "bin/linux-amd64/kubeadm": b"#!/bin/sh\nexit 0\n",
        f"images/blobs/sha256/{BLOB_HEX}": BLOB,
        "images/index.json": index,
        "images/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
    }


def manifest_for(members: dict[str, bytes], **changes) -> Manifest:
    files = tuple(FileEntry(path, hashlib.sha256(data).hexdigest(), len(data), 0o644) for path, data in sorted(members.items()))
    values = dict(
        name="hostile", serial=5, created=NOW - timedelta(days=1), expires=NOW + timedelta(days=30), requested="v1.36.4",
        version="v1.36.4", platforms=("linux/amd64",), components={"pause": "3.10"}, files=files, images=(),
    )
    values.update(changes)
    return Manifest(**values)


def info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size, member.type, member.linkname, member.mode = size, kind, linkname, 0o644
    return member


def tar_of(parts: list, fmt=tarfile.PAX_FORMAT) -> bytes:
    """`parts`: (name, bytes) regular files, or (TarInfo, bytes|None) for anything else."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for head, data in parts:
            member = head if isinstance(head, tarfile.TarInfo) else info(head, len(data))
            archive.addfile(member, io.BytesIO(data) if data is not None and member.isreg() else None)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # a fragment of the refusal message
    make: Callable[[ed25519.Ed25519PrivateKey], bytes]
    suffix: str = ".tar"
    node_only: bool = False  # refusable only against a node's installed state (init/upgrade), not by verify


def signed(key, manifest_bytes: bytes, rest: list, signature: bytes | None = None) -> bytes:
    return tar_of([("bundle.json", manifest_bytes), ("bundle.json.sig", signature if signature is not None else key.sign(manifest_bytes)), *rest])


def standard(key, members: dict[str, bytes] | None = None, extra: list | None = None, manifest: Manifest | None = None, drop: str | None = None) -> bytes:
    members = members if members is not None else good_members()
    manifest = manifest or manifest_for(members)
    rest = [(path, data) for path, data in sorted(members.items()) if path != drop]
    return signed(key, manifest.to_json(), rest + (extra or []))


def with_listed(path: str, data: bytes, tar_entry=None, listed_size: int | None = None):
    """A bundle whose manifest lists `path` (with `data`) and whose tar holds `tar_entry` for it."""

    def make(key):
        members = good_members()
        members[path] = data
        manifest = manifest_for(members)
        if listed_size is not None:
            files = tuple(FileEntry(e.path, e.sha256, listed_size, e.mode) if e.path == path else e for e in manifest.files)
            manifest = manifest_for(members, files=files)
        rest = [(p, d) for p, d in sorted(members.items()) if p != path]
        rest.append(tar_entry if tar_entry is not None else (path, data))
        return signed(key, manifest.to_json(), rest)

    return make


def truncated(fraction: float):
    def make(key):
        data = standard(key)
        return data[: int(len(data) * fraction)]

    return make


def _truncated_at_end_marker(key) -> bytes:
    # Every member whole, but the end-of-archive marker is gone: the file was cut.
    data = standard(key)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        last = archive.getmembers()[-1]
    return data[: last.offset_data + last.size + (-last.size % 512)]


def zstd_bomb(key) -> bytes:
    # bundle.json's header claims 4 GiB of zeros: the cap refuses it before a byte of it is inflated.
    head = info("bundle.json", 4 << 30).tobuf(tarfile.USTAR_FORMAT)
    zeros = subprocess.run(["zstd", "-q", "-c", "-19"], input=head + b"\x00" * (64 << 20), capture_output=True, check=True).stdout
    return zeros


def zstd_of(make, zeros: int = 256 << 20):
    """`make`'s tar compressed, with `zeros` more bytes after it: a reader that trusts a forged size buffers them all."""

    def compressed(key) -> bytes:
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=make(key) + b"\x00" * zeros, capture_output=True, check=True).stdout

    return compressed


def _pax_traversal(key) -> bytes:
    members = good_members()
    manifest = manifest_for(members)
    member = info("safe-name", 3)
    member.pax_headers = {"path": "../../etc/cron.d/evil"}
    return signed(key, manifest.to_json(), [*sorted(members.items()), (member, b"abc")])


def _gnu_longname(key) -> bytes:
    members = good_members()
    members["bin/" + "x" * 120] = b"abc"
    manifest = manifest_for(members)
    parts = [("bundle.json", manifest.to_json()), ("bundle.json.sig", key.sign(manifest.to_json())), *sorted(members.items())]
    return tar_of(parts, fmt=tarfile.GNU_FORMAT)


def _global_pax(key) -> bytes:
    members = good_members()
    return signed(key, manifest_for(members).to_json(), [(info("pax_global", 0, tarfile.XGLTYPE), None), *sorted(members.items())])


def _corrupt_header(key) -> bytes:
    data = bytearray(standard(key))
    # The third header (first member after the signature) gets a broken checksum field.
    offset = 0
    for _ in range(2):
        size = int(bytes(data[offset + 124 : offset + 136]).strip(b"\x00 ") or b"0", 8)
        offset += 512 + size + (-size % 512)
    data[offset + 148 : offset + 156] = b"9999999\x00"
    return bytes(data)


def _duplicate_keys(key) -> bytes:
    data = manifest_for(good_members()).to_json()
    doubled = data[:-1] + b',"serial":6}'
    return signed(key, doubled, sorted(good_members().items()))


def _oversize_manifest(key) -> bytes:
    big = manifest_for(good_members(), components={"padding": "x" * (MAX_MANIFEST_BYTES + 10)}).to_json()
    return signed(key, big, sorted(good_members().items()))


def _index_outside(key) -> bytes:
    members = good_members()
    index = json.loads(members["images/index.json"])
    index["manifests"][0]["digest"] = "sha256:" + "e" * 64
    members["images/index.json"] = json.dumps(index).encode()
    return standard(key, members)


def _index_traversal(key) -> bytes:
    members = good_members()
    index = json.loads(members["images/index.json"])
    index["manifests"][0]["digest"] = "sha256:../../../../etc/shadow"
    members["images/index.json"] = json.dumps(index).encode()
    return standard(key, members)


def _blob_misnamed(key) -> bytes:
    members = good_members()
    members["images/blobs/sha256/" + "a" * 64] = members.pop(f"images/blobs/sha256/{BLOB_HEX}")
    return standard(key, members)


def _member_before_signature(key) -> bytes:
    members = good_members()
    manifest = manifest_for(members)
    items = sorted(members.items())
    return tar_of([("bundle.json", manifest.to_json()), items[0], ("bundle.json.sig", key.sign(manifest.to_json())), *items[1:]])


def _manifest_not_first(key) -> bytes:
    members = good_members()
    manifest = manifest_for(members)
    items = sorted(members.items())
    return tar_of([items[0], ("bundle.json", manifest.to_json()), ("bundle.json.sig", key.sign(manifest.to_json())), *items[1:]])


def _no_signature(key) -> bytes:
    members = good_members()
    return tar_of([("bundle.json", manifest_for(members).to_json()), *sorted(members.items())])


def _other_key(key) -> bytes:
    return signed(key, manifest_for(good_members()).to_json(), sorted(good_members().items()), ed25519.Ed25519PrivateKey.generate().sign(b"x"))


def _signature_over_other_bytes(key) -> bytes:
    manifest = manifest_for(good_members()).to_json()
    return signed(key, manifest, sorted(good_members().items()), key.sign(manifest.replace(b'"serial":5', b'"serial":6')))


def _tampered_manifest(key) -> bytes:
    manifest = manifest_for(good_members()).to_json()
    return signed(key, manifest.replace(b"v1.36.4", b"v1.36.9"), sorted(good_members().items()), key.sign(manifest))


def _expired(key) -> bytes:
    return standard(key, manifest=manifest_for(good_members(), created=NOW - timedelta(days=60), expires=NOW - timedelta(days=1)))


def _unknown_schema(key) -> bytes:
    return signed(key, manifest_for(good_members()).to_json().replace(b"airlock.bundle/v1", b"airlock.bundle/v2"), sorted(good_members().items()))


def _lower_serial(key) -> bytes:
    return standard(key, manifest=manifest_for(good_members(), serial=1))


def _trailing_garbage(key) -> bytes:
    return standard(key) + b"GARBAGE" * 100


def _wrong_hash(key) -> bytes:
    members = good_members()
    manifest = manifest_for(members)
    members["bin/linux-amd64/kubeadm"] = b"#!/bin/sh\nexit 1\n"
    return signed(key, manifest.to_json(), sorted(members.items()))


def with_checksum(header: bytes) -> bytes:
    """A 512-byte tar header with its checksum field recomputed (so only the field we forged is wrong)."""
    blank = header[:148] + b" " * 8 + header[156:]
    return blank[:148] + b"%06o\x00 " % sum(blank) + blank[156:]


def _manifest_size_base256(value: int):
    # bundle.json's header gives its size in base-256 (GNU), e.g. -1: under the cap, yet no size at all.
    def make(key) -> bytes:
        data = bytearray(standard(key))
        data[124:136] = value.to_bytes(12, "big", signed=True)
        data[124] |= 0x80  # the base-256 marker bit
        data[:512] = with_checksum(bytes(data[:512]))
        return bytes(data)

    return make


def _manifest_size_pax(value: str):
    # A pax `size` record for bundle.json that is negative, signed, spaced or huge.
    def make(key) -> bytes:
        manifest = manifest_for(good_members()).to_json()
        member = info("bundle.json", len(manifest))
        member.pax_headers = {"size": value}
        return tar_of([(member, manifest), ("bundle.json.sig", key.sign(manifest)), *sorted(good_members().items())])

    return make


def _pax_record_length(length: bytes):
    # A pax record whose own length field is not a plain decimal (signed, spaced) or runs past the header.
    def make(key) -> bytes:
        manifest = manifest_for(good_members()).to_json()
        record = b" comment=x\n"
        body = length + record
        pax = info("././@PaxHeader", len(body), tarfile.XHDTYPE).tobuf(tarfile.USTAR_FORMAT)
        pax += body + b"\x00" * (-len(body) % 512)
        rest = tar_of([("bundle.json", manifest), ("bundle.json.sig", key.sign(manifest)), *sorted(good_members().items())])
        return pax + rest

    return make


def _deep_manifest(key) -> bytes:
    # Signed, but bundle.json nests 100000 arrays: the JSON parser must not be what stops it (with a traceback).
    data = manifest_for(good_members()).to_json().replace(b'"components":{"pause":"3.10"}', b'"components":{"pause":' + b"[" * 100000 + b"]" * 100000 + b"}")
    return signed(key, data, sorted(good_members().items()))


def _deep_index(key) -> bytes:
    members = good_members()
    members["images/index.json"] = b'{"manifests":' + b"[" * 100000 + b"]" * 100000 + b"}"
    return standard(key, members)


def _file_under_file(key) -> bytes:
    # bin/x and bin/x/y: one of them would have to be a directory.
    members = good_members()
    members["bin/linux-amd64/kubeadm/x"] = b"abc"
    return standard(key, members)


def _image_reference(reference: str):
    # A signed but sloppy image list: the registry host of a reference becomes a directory (certs.d/{host}/hosts.toml).
    def make(key) -> bytes:
        image = ImageEntry(reference, f"sha256:{BLOB_HEX}", "application/vnd.oci.image.manifest.v1+json", ("linux/amd64",))
        return standard(key, manifest=manifest_for(good_members(), images=(image,)))

    return make


def _not_a_tar(key) -> bytes:
    return b"PK\x03\x04 this is a zip file, not a bundle" + b"\x00" * 2000


def _empty(key) -> bytes:
    return b""


def cases() -> list[Case]:
    data = b"abc"
    return [
        Case("traversal-dotdot", "'..' component", with_listed("bin/../../etc/passwd", data)),
        Case("traversal-absolute", "absolute", with_listed("/etc/passwd", data)),
        Case("traversal-unlisted", "'..' component", lambda k: standard(k, extra=[("../outside", data)])),
        Case("traversal-pax-path", "'..' component", _pax_traversal),
        Case("symlink", "symbolic link", with_listed("bin/link", b"", (info("bin/link", 0, tarfile.SYMTYPE, "/etc/shadow"), None))),
        Case("hardlink", "hard link", with_listed("bin/hard", b"", (info("bin/hard", 0, tarfile.LNKTYPE, "bundle.json"), None))),
        Case("char-device", "character device", with_listed("bin/dev", b"", (info("bin/dev", 0, tarfile.CHRTYPE), None))),
        Case("block-device", "block device", with_listed("bin/blk", b"", (info("bin/blk", 0, tarfile.BLKTYPE), None))),
        Case("fifo", "fifo", with_listed("bin/fifo", b"", (info("bin/fifo", 0, tarfile.FIFOTYPE), None))),
        Case("directory", "directory", lambda k: standard(k, extra=[(info("bin", 0, tarfile.DIRTYPE), None)])),
        Case("gnu-longname", "GNU long name", _gnu_longname),
        Case("pax-global-header", "pax global header", _global_pax),
        Case("duplicate-member", "appears twice", lambda k: standard(k, extra=[("bin/linux-amd64/kubeadm", b"#!/bin/sh\nexit 0\n")])),
        Case("member-before-signature", "second member must be bundle.json.sig", _member_before_signature),
        Case("manifest-not-first", "not an airlock bundle: its first member is", _manifest_not_first),
        Case("unlisted-member", "not listed in bundle.json", lambda k: standard(k, extra=[("bin/extra", data)])),
        Case("missing-member", "missing from the bundle", lambda k: standard(k, drop="bin/linux-amd64/kubeadm")),
        Case("member-longer", "bytes but bundle.json lists", with_listed("bin/tool", b"abcdef", listed_size=3)),
        Case("member-shorter", "bytes but bundle.json lists", with_listed("bin/tool", b"ab", listed_size=3)),
        Case("wrong-hash", "sha256 is", _wrong_hash),
        Case("truncated-in-manifest", "truncated", truncated(0.05)),
        Case("truncated-after-signature", "truncated", truncated(0.4)),
        Case("truncated-mid-member", "truncated", truncated(0.6)),
        Case("truncated-at-end-marker", "truncated", _truncated_at_end_marker),
        Case("trailing-garbage", "data follows the end of the archive", _trailing_garbage),
        Case("corrupt-header", "header is corrupt", _corrupt_header),
        Case("no-signature", "second member must be bundle.json.sig", _no_signature),
        Case("signature-other-key", "trusted key", _other_key),
        Case("signature-other-bytes", "trusted key", _signature_over_other_bytes),
        Case("manifest-altered", "trusted key", _tampered_manifest),
        Case("expired", "expired", _expired),
        Case("lower-serial", "lower than the installed", _lower_serial, node_only=True),
        Case("duplicate-keys", "twice", _duplicate_keys),
        Case("manifest-over-cap", "over the", _oversize_manifest),
        Case("unknown-schema", "schema", _unknown_schema),
        Case("zstd-bomb", "over the", zstd_bomb, suffix=".tar.zst"),
        Case("blob-misnamed", "not named by its sha256", _blob_misnamed),
        Case("index-outside-layout", "not a blob of this bundle", _index_outside),
        Case("index-traversal", "not a blob of this bundle", _index_traversal),
        Case("size-base256-negative", "outside 0..", _manifest_size_base256(-1)),
        Case("size-base256-negative-zst", "outside 0..", zstd_of(_manifest_size_base256(-1)), suffix=".tar.zst"),
        Case("size-base256-huge", "outside 0..", _manifest_size_base256(1 << 62)),
        Case("size-pax-negative", "not a plain decimal", _manifest_size_pax("-1")),
        Case("size-pax-negative-zst", "not a plain decimal", zstd_of(_manifest_size_pax("-1")), suffix=".tar.zst"),
        Case("size-pax-plus", "not a plain decimal", _manifest_size_pax("+12")),
        Case("size-pax-underscore", "not a plain decimal", _manifest_size_pax("1_0")),
        Case("size-pax-huge", "over the", _manifest_size_pax("9" * 20)),
        Case("pax-length-negative", "pax header is corrupt", _pax_record_length(b"-12")),
        Case("pax-length-past-end", "pax header is corrupt", _pax_record_length(b"900")),
        Case("deep-json-manifest", "too deeply", _deep_manifest),
        Case("deep-json-index", "not an OCI image index", _deep_index),
        Case("file-under-file", "cannot also be a directory", _file_under_file),
        Case("image-ref-dotdot-host", "not a registry host", _image_reference("../pause:3.10")),
        Case("image-ref-not-normal", "not in normal form", _image_reference("pause:3.10")),
        Case("not-a-tar", "not an airlock bundle", _not_a_tar),
        Case("empty-file", "not an airlock bundle", _empty),
    ]


def write_corpus(out: Path, key) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases():
        path = out / f"{case.name}{case.suffix}"
        path.write_bytes(case.make(key))
        written.append(path)
    return written


if __name__ == "__main__":
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(Path(sys.argv[2]).read_bytes(), None)
    for path in write_corpus(Path(sys.argv[1]), private):
        print(path)
