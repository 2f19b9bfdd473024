"""Verify a bundle from any source in one pass: the signed head once, then every member hashed once.

`verify_stream(source, keys, sink)` is the one verifier: `airlock verify`, `airlock-node verify`, `init`, `join`
and `upgrade` (a file, parts, or `--from` a registry) and push's staging all go through it. The optional `sink`
gives, per member, where its bytes go as they are hashed (the store, staging), so nothing is read or written
twice; a sink is told `done()` only when its member matched bundle.json.

A stream (a bundle file, parts) is read on the caller's thread while two lanes, each a thread of its own, hash
and write what was read: `hashlib` and the write system call release the GIL on large buffers, so reading,
hashing and writing use both cores. Each lane is at most `LANE_DEPTH` chunks behind the reader (bounded memory).
A member's digest is compared on the caller's thread once its hash lane caught up; its sink is told `done()`
(or `abort()`) on the write lane after its last write, so a sink sees its calls in order on one thread.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from bundle.errors import BundleError, JsonObjectError
from bundle.jsonobject import parse_object
from bundle.manifest import (
    IMAGE_BLOBS,
    IMAGE_INDEX,
    MAX_MANIFEST_BYTES,
    REVIEW_MEMBERS,
    FileEntry,
    Manifest,
    check_member_path,
)
from bundle.source import Delivery, Source, TarSource, open_bundle, open_source, read_signed_head
from bundle.store import MAX_LAYOUT_INDEX_BYTES
from bundle.trust import TrustedKey, check_dates, verify_signature

__all__ = ["MemberSink", "Verified", "open_bundle", "read_signed_head", "verify_bundle", "verify_stream"]

# How many chunks (bundle/source.py DELIVERY_CHUNK from a tar stream) a lane may hold that it has not yet hashed or written.
LANE_DEPTH = 4


class MemberSink(Protocol):
    def write(self, data: bytes) -> object: ...
    def done(self) -> None: ...
    def abort(self) -> None: ...


@dataclass(frozen=True)
class Verified:
    """A signed head whose signature and dates checked out: what the rest of the bundle is held to."""

    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    signer: TrustedKey
    signature: bytes = b""


def check_head(manifest_bytes: bytes, signature: bytes, keys: list[TrustedKey], now: datetime | None = None) -> Verified:
    """Signature, then parse, then dates: the signed-head checks, done once per run."""
    signer = verify_signature(manifest_bytes, signature, keys)
    manifest = Manifest.parse(manifest_bytes)
    check_dates(manifest, now)
    return Verified(manifest, manifest_bytes, hashlib.sha256(manifest_bytes).hexdigest(), signer, signature)


class _Member:
    """One member on its way through the verifier: every byte hashed and counted once, then handed to the sink.

    A sink with `held()` (a partial file an interrupted run left) has those bytes hashed first, not written again.
    """

    def __init__(self, entry: FileEntry, target: MemberSink | None, on_bytes: Callable[[int], None] | None):
        self.entry = entry
        self._target = target
        self._on_bytes = on_bytes
        self.reset(keep=True)

    def reset(self, keep: bool = False) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.index = bytearray() if self.entry.path == IMAGE_INDEX else None
        if not keep and self._target is not None:
            self._target.reset()
        held = getattr(self._target, "held", None) if keep else None
        for chunk in held() if held else ():
            self._take(chunk)

    def _take(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.index is not None and len(self.index) <= MAX_MANIFEST_BYTES:
            self.index += data

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.entry.size:
            raise BundleError(f"is more than the {self.entry.size} bytes bundle.json lists", self.entry.path)
        self._take(data)
        if self._target is not None:
            self._target.write(data)
        if self._on_bytes:
            self._on_bytes(len(data))


class _Lane:
    """One thread doing its work in the order it was handed, at most `LANE_DEPTH` items behind the caller.

    The first error a piece of work raises is kept; later work is then skipped, and `put` and `drain` raise it.
    """

    def __init__(self, name: str):
        self._queue: queue.Queue = queue.Queue(LANE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            try:
                if work is None:
                    return
                if self._error is None:
                    work()
            except BaseException as error:  # handed back on the caller's thread by put/drain
                self._error = error
            finally:
                self._queue.task_done()

    def put(self, work: Callable[[], object]) -> None:
        self.check()
        self._queue.put(work)

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait until every piece of work handed so far is done; raise the lane's error, if any."""
        self._queue.join()
        self.check()

    def settle(self) -> None:
        """Wait until every piece of work handed so far is done or skipped, whatever the lane's error."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class _LanedMember(_Member):
    """A member whose bytes are hashed on one lane and written to its sink on another, while the caller reads on."""

    def __init__(self, entry: FileEntry, target: MemberSink | None, on_bytes, hashing: _Lane, writing: _Lane):
        self._hashing, self._writing = hashing, writing
        self.received = 0
        super().__init__(entry, target, on_bytes)  # nothing of this member is on a lane yet

    def reset(self, keep: bool = False) -> None:
        if not keep:
            self._hashing.drain()
            self._writing.drain()
        self.received = 0
        super().reset(keep)

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.entry.size:
            raise BundleError(f"is more than the {self.entry.size} bytes bundle.json lists", self.entry.path)
        self.received += len(data)
        self._hashing.put(lambda: self._take(data))
        if self._target is not None:
            self._writing.put(lambda: self._target.write(data))
        if self._on_bytes:
            self._on_bytes(len(data))

    def hashed(self) -> None:
        """Wait until every byte delivered so far is hashed."""
        self._hashing.drain()


def verify_stream(
    source: Source,
    keys: list[TrustedKey],
    now: datetime | None = None,
    sink: Callable[[FileEntry], MemberSink | None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    admitted: Verified | None = None,
    wanted: list[FileEntry] | None = None,
) -> Verified:
    """Check the signed head and every member a source delivers; raise BundleError/TrustError naming the first bad one.

    `admitted`: the head an earlier check of this run accepted (the verify phase's trust decision); the source's
    head must then be byte for byte the same, and is not checked again. `wanted`: the members to take from a
    source that serves members by digest (default: every member the bundle carries); a stream always yields all.
    """
    manifest_bytes, signature = source.signed_head()
    if admitted is None:
        verified = check_head(manifest_bytes, signature, keys, now)
    elif (manifest_bytes, signature) != (admitted.manifest_bytes, admitted.signature):
        raise BundleError(f"bundle.json changed since it was verified; {source.describe()} is being modified")
    else:
        verified = admitted
    manifest = verified.manifest
    carried = [entry for entry in manifest.files if entry.carried]
    expected = carried if wanted is None or source.streamed else list(wanted)
    pending = {entry.path: entry for entry in expected}
    in_base = {entry.path for entry in manifest.files if not entry.carried}
    seen: set[str] = set()

    def accept(delivery: Delivery) -> FileEntry:
        path = check_member_path(delivery.path)
        entry = pending.pop(path, None)
        if entry is None:
            problem = "appears twice" if path in seen else "is not listed in bundle.json"
            if path in in_base:
                problem = "is listed as coming from the base bundle, yet the delta carries it"
            raise BundleError(problem, path)
        seen.add(path)
        if delivery.size != entry.size:
            raise BundleError(f"is {delivery.size} bytes but bundle.json lists {entry.size}", path)
        return entry

    def check_member(member: _Member, entry: FileEntry) -> None:
        if member.size != entry.size:
            raise BundleError(f"is {member.size} bytes but bundle.json lists {entry.size}", entry.path)
        if member.digest.hexdigest() != entry.sha256:
            raise BundleError(f"sha256 is {member.digest.hexdigest()} but bundle.json lists {entry.sha256}{source.mismatch(entry)}", entry.path)
        if member.index is not None:
            check_index(bytes(member.index), manifest)

    def take_laned(delivery: Delivery, entry: FileEntry, hashing: _Lane, writing: _Lane, committing: _Lane) -> None:
        target = sink(entry) if sink else None
        member = _LanedMember(entry, target, on_bytes, hashing, writing)
        try:
            delivery.fill(member)
            member.hashed()
            check_member(member, entry)
        except BaseException:
            writing.settle()  # the member's last write is behind it, and every earlier member's commit, then
            committing.settle()
            if target is not None:
                target.abort()
            raise
        if target is not None:
            # Committed (fsync, rename) on a lane of its own once its last write is done: the disk takes this member
            # in while the next one is written to the page cache, instead of the write lane waiting on each fsync.
            writing.put(lambda: committing.put(target.done))

    def take(delivery: Delivery, entry: FileEntry) -> None:
        target = sink(entry) if sink else None
        member = _Member(entry, target, on_bytes)
        try:
            delivery.fill(member)
            check_member(member, entry)
        except BaseException:
            if target is not None:
                target.abort()
            raise
        if target is not None:
            target.done()

    deliveries = source.deliveries(expected)
    if source.parallel <= 1:
        hashing, writing, committing = _Lane("member-hash"), _Lane("member-write"), _Lane("member-commit")
        try:
            for delivery in deliveries:
                take_laned(delivery, accept(delivery), hashing, writing, committing)
            writing.drain()
            committing.drain()
        finally:
            hashing.close()
            writing.close()
            committing.close()
    else:
        with ThreadPoolExecutor(source.parallel, thread_name_prefix="member") as pool:
            futures = [pool.submit(take, delivery, accept(delivery)) for delivery in deliveries]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    if pending:
        missing = sorted(pending)
        raise BundleError(f"listed in bundle.json but missing from the bundle ({len(missing)} in all)", missing[0])
    return verified


def check_index(data: bytes, manifest: Manifest) -> None:
    """The image index may only name blobs the bundle lists (carried, or in its base)."""
    listed = {entry.path[len(IMAGE_BLOBS) :] for entry in manifest.files if entry.path.startswith(IMAGE_BLOBS)}
    try:
        descriptors = parse_object(data, IMAGE_INDEX, MAX_LAYOUT_INDEX_BYTES)["manifests"]
        digests = [descriptor["digest"] for descriptor in descriptors]
    except (JsonObjectError, KeyError, TypeError):
        raise BundleError("is not an OCI image index", IMAGE_INDEX) from None
    for digest in digests:
        if not isinstance(digest, str) or not digest.startswith("sha256:") or digest[len("sha256:") :] not in listed:
            raise BundleError(f"points at {digest!r}, which is not a blob of this bundle", IMAGE_INDEX)


def verify_bundle(path: Path, keys: list[TrustedKey], now: datetime | None = None, sink=None, on_bytes=None) -> Verified:
    """`verify_stream` over a bundle file or a split bundle (see bundle/source.py `open_source`)."""
    with open_source(path, keys) as source:
        return verify_stream(source, keys, now=now, sink=sink, on_bytes=on_bytes)


def read_review(path: Path, keys: list[TrustedKey] | None = None) -> tuple[Manifest, bytes, bytes, dict[str, bytes]]:
    """bundle.json, its signature and the review members (api-versions.json, sbom.spdx.json, vulnerabilities.json),
    each checked against the sha256 bundle.json lists: what `inspect` shows. Not `verify_stream`: only these members
    are read, the rest skipped (a bundle file by seeking past them, headers only; parts and .tar.zst read through).

    With `keys`, the signature is checked first; without, the caller says the bundle is unverified.
    """
    found: dict[str, bytes] = {}
    with open_bundle(path, keys) as stream:
        source = TarSource(stream, str(path), seek=_seekable(stream))
        manifest_bytes, signature = source.signed_head()
        if keys:
            verify_signature(manifest_bytes, signature, keys)
        manifest = Manifest.parse(manifest_bytes)
        wanted = {entry.path: entry for entry in manifest.files if entry.path in REVIEW_MEMBERS and entry.carried}
        for delivery in source.deliveries([]) if wanted else ():
            entry = wanted.get(delivery.path)
            if entry is None:
                continue
            if delivery.size != entry.size or delivery.size > MAX_MANIFEST_BYTES:
                raise BundleError(f"is {delivery.size} bytes but bundle.json lists {entry.size}", delivery.path)
            member = _Member(entry, None, None)
            data = bytearray()
            delivery.fill(_Kept(member, data))
            if member.digest.hexdigest() != entry.sha256:
                raise BundleError(f"sha256 is {member.digest.hexdigest()} but bundle.json lists {entry.sha256}", delivery.path)
            found[delivery.path] = bytes(data)
            if len(found) == len(wanted):
                break
    return manifest, manifest_bytes, signature, found


class _Kept:
    """A member's bytes hashed by the verifier's writer and kept in memory (a small review member)."""

    def __init__(self, member: _Member, data: bytearray):
        self._member, self._data = member, data

    @property
    def size(self) -> int:
        return self._member.size

    def write(self, data: bytes) -> None:
        self._member.write(data)
        self._data += data

    def reset(self) -> None:
        self._member.reset()
        self._data.clear()


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def read_manifest_unverified(path: Path) -> tuple[Manifest, bytes, bytes]:
    """bundle.json and its signature without checking them (for `inspect` without a key)."""
    with open_source(path) as source:
        manifest_bytes, signature = source.signed_head()
    return Manifest.parse(manifest_bytes), manifest_bytes, signature
