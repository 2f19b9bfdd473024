"""Verify a bundle in one streaming pass: signature first, then every member.

`verify_bundle` is used by `airlock verify` and by the unpacker alike: the
optional `sink` receives each member's bytes as they are hashed, so unpacking
needs no second read and no temporary copy of the bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from bundle.errors import BundleError
from bundle.manifest import (
    IMAGE_BLOBS,
    IMAGE_INDEX,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    REVIEW_MEMBERS,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    check_member_path,
)
from bundle.parts import locate, open_parts
from bundle.tarstream import MemberSizeError, TarReader
from bundle.trust import TrustedKey, check_dates, verify_signature

READ_BUFFER = 4 << 20
BLOCK_SIZE = 512


class MemberSink(Protocol):
    def write(self, data: bytes) -> object: ...
    def done(self) -> None: ...
    def abort(self) -> None: ...


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    signer: TrustedKey


@contextmanager
def open_bundle(path: Path, keys: list[TrustedKey] | None = None) -> Iterator[BinaryIO]:
    """Open a `.tar` directly, or a `.tar.zst` through the zstd program, as one stream.

    A split bundle's parts list (or its first part) opens as one stream over
    the parts; with `keys`, the parts list's signature is checked first.
    """
    path = Path(path)
    listing = locate(path)
    if listing is not None:
        with open_parts(listing, keys) as stream:
            yield stream
        return
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise BundleError(f"{path}: reading .tar.zst needs the zstd program; install it or pass the .tar")
        process = subprocess.Popen(["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE, bufsize=READ_BUFFER)
        try:
            yield process.stdout
        finally:
            process.stdout.close()
            process.kill()
            process.wait()
    else:
        with open(path, "rb", buffering=READ_BUFFER) as handle:
            yield handle


def read_signed_head(reader: TarReader) -> tuple[bytes, bytes]:
    """Read the first two members, which must be bundle.json and its signature."""
    members = reader.members()
    try:
        first = next(members, None)
    except BundleError as error:
        if reader.offset > BLOCK_SIZE or isinstance(error, MemberSizeError):  # a tar, damaged or forged after its first header's checksum
            raise
        raise BundleError("not an airlock bundle: it does not start with a tar header; a bundle is the .tar or .tar.zst that `airlock build` wrote") from None
    if first is None or first.path != MANIFEST_NAME:
        found = f"its first member is {first.path}" if first else "it holds no members"
        raise BundleError(f"not an airlock bundle: {found}, and a bundle starts with {MANIFEST_NAME}")
    if first.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"is {first.size} bytes, over the {MAX_MANIFEST_BYTES} byte cap", MANIFEST_NAME)
    manifest_bytes = b"".join(reader.content())
    second = next(members, None)
    if second is None or second.path != SIGNATURE_NAME:
        raise BundleError(f"the second member must be {SIGNATURE_NAME}, found {second.path if second else 'nothing'}")
    if second.size > MAX_SIGNATURE_BYTES:
        raise BundleError(f"is {second.size} bytes, over the {MAX_SIGNATURE_BYTES} byte cap", SIGNATURE_NAME)
    return manifest_bytes, b"".join(reader.content())


def verify_stream(
    stream: BinaryIO,
    keys: list[TrustedKey],
    now: datetime | None = None,
    sink: Callable[[FileEntry], MemberSink | None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Verified:
    """Check signature, dates and every member of a bundle stream; raise BundleError/TrustError naming the first bad member."""
    reader = TarReader(stream)
    manifest_bytes, signature = read_signed_head(reader)
    signer = verify_signature(manifest_bytes, signature, keys)
    manifest = Manifest.parse(manifest_bytes)
    check_dates(manifest, now)

    pending = {entry.path: entry for entry in manifest.files if entry.carried}
    in_base = {entry.path for entry in manifest.files if not entry.carried}
    seen: set[str] = set()
    members = reader.members()
    for header in members:
        path = check_member_path(header.path)
        entry = pending.pop(path, None)
        if entry is None:
            problem = "appears twice" if path in seen else "is not listed in bundle.json"
            if path in in_base:
                problem = "is listed as coming from the base bundle, yet the delta carries it"
            raise BundleError(problem, path)
        seen.add(path)
        if header.size != entry.size:
            raise BundleError(f"is {header.size} bytes but bundle.json lists {entry.size}", path)
        target = sink(entry) if sink else None
        digest = hashlib.sha256()
        index = bytearray() if path == IMAGE_INDEX else None
        try:
            for chunk in reader.content():
                digest.update(chunk)
                if index is not None and len(index) <= MAX_MANIFEST_BYTES:
                    index += chunk
                if target is not None:
                    target.write(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
            if digest.hexdigest() != entry.sha256:
                raise BundleError(f"sha256 is {digest.hexdigest()} but bundle.json lists {entry.sha256}", path)
            if index is not None:
                check_index(bytes(index), manifest)
        except BaseException:
            if target is not None:
                target.abort()
            raise
        if target is not None:
            target.done()
    if pending:
        missing = sorted(pending)
        raise BundleError(f"listed in bundle.json but missing from the bundle ({len(missing)} in all)", missing[0])
    return Verified(manifest, manifest_bytes, hashlib.sha256(manifest_bytes).hexdigest(), signer)


def check_index(data: bytes, manifest: Manifest) -> None:
    """The image index may only name blobs the bundle lists (carried, or in its base)."""
    listed = {entry.path[len(IMAGE_BLOBS) :] for entry in manifest.files if entry.path.startswith(IMAGE_BLOBS)}
    try:
        document = json.loads(data)
        descriptors = document["manifests"]
        digests = [descriptor["digest"] for descriptor in descriptors]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BundleError("is not an OCI image index", IMAGE_INDEX) from None
    for digest in digests:
        if not isinstance(digest, str) or not digest.startswith("sha256:") or digest[len("sha256:") :] not in listed:
            raise BundleError(f"points at {digest!r}, which is not a blob of this bundle", IMAGE_INDEX)


def verify_bundle(path: Path, keys: list[TrustedKey], now: datetime | None = None, sink=None, on_bytes=None) -> Verified:
    with open_bundle(path, keys) as stream:
        return verify_stream(stream, keys, now=now, sink=sink, on_bytes=on_bytes)


def read_review(path: Path, keys: list[TrustedKey] | None = None) -> tuple[Manifest, bytes, bytes, dict[str, bytes]]:
    """bundle.json, its signature and the review members (api-versions.json, sbom.spdx.json, vulnerabilities.json),
    each checked against the sha256 bundle.json lists. A bundle file is read by seeking past the other members (their
    headers only); parts and .tar.zst are read through.

    With `keys`, the signature is checked first; without, the caller says the bundle is unverified.
    """
    found: dict[str, bytes] = {}
    with open_bundle(path, keys) as stream:
        reader = TarReader(stream, seek=_seekable(stream))
        manifest_bytes, signature = read_signed_head(reader)
        if keys:
            verify_signature(manifest_bytes, signature, keys)
        manifest = Manifest.parse(manifest_bytes)
        wanted = {entry.path: entry for entry in manifest.files if entry.path in REVIEW_MEMBERS and entry.carried}
        for header in reader.members() if wanted else ():
            entry = wanted.get(header.path)
            if entry is None:
                continue
            if header.size != entry.size or header.size > MAX_MANIFEST_BYTES:
                raise BundleError(f"is {header.size} bytes but bundle.json lists {entry.size}", header.path)
            data = b"".join(reader.content())
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise BundleError(f"sha256 is {hashlib.sha256(data).hexdigest()} but bundle.json lists {entry.sha256}", header.path)
            found[header.path] = data
            if len(found) == len(wanted):
                break
    return manifest, manifest_bytes, signature, found


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def read_manifest_unverified(path: Path) -> tuple[Manifest, bytes, bytes]:
    """bundle.json and its signature without checking them (for `inspect` without a key)."""
    with open_bundle(path) as stream:
        manifest_bytes, signature = read_signed_head(TarReader(stream))
    return Manifest.parse(manifest_bytes), manifest_bytes, signature
