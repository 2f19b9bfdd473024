"""Write a bundle: bundle.json, its signature, then every member from the store.

Streams each member from the content store straight into the tar (memory
does not grow with the bundle), writes to a temporary name and renames it
into place, so an interrupted build never leaves a half-written bundle under
the requested name. With a part size, the same stream fills numbered parts
instead (builder/split.py), hashed while they are written.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from builder.direct import bundle_writer
from builder.progress import Progress
from builder.sign import SigningKey
from builder.split import BUNDLE_MODE, RollingFile, Written
from bundle.atomic import AtomicFile
from bundle.errors import NO_SPACE, no_space
from bundle.manifest import MANIFEST_NAME, REVIEW_MEMBERS, SBOM, SIGNATURE_NAME, VULNERABILITIES, Manifest
from bundle.store import BlobStore
from bundle.tarstream import ALIGN, BLOCK, TarWriter


@dataclass(frozen=True)
class Packed:
    manifest_bytes: bytes
    written: Written | None  # file names, sizes and sha256s when the bundle was hashed while written


def write_bundle(
    output: Path, manifest: Manifest, key: SigningKey, store: BlobStore, progress: Progress, wait_for_blob: Callable[[str], None] | None = None
) -> bytes:
    """Sign `manifest` and write the bundle to `output`; return the bundle.json bytes.

    `wait_for_blob(digest)` blocks until a member still being downloaded is
    in the store, so packing can start before every download has finished.
    """
    return pack(output, manifest, key, store, progress, wait_for_blob).manifest_bytes


def pack(
    output: Path,
    manifest: Manifest,
    key: SigningKey,
    store: BlobStore,
    progress: Progress,
    wait_for_blob: Callable[[str], None] | None = None,
    split: int | None = None,
    hashed: bool = False,
) -> Packed:
    """write_bundle, and: with `split`, write parts of at most that many bytes (`output.part001`, …) instead of
    `output`; with `hashed` (implied by `split`), also hash what is written, for a parts list or sidecars."""
    try:
        return _pack(output, manifest, key, store, progress, wait_for_blob, split, hashed)
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        # The partial bundle (or its parts) is already removed; say where and how much it needs.
        raise no_space(output.parent, manifest.carried_size) from None


def _pack(output, manifest, key, store, progress, wait_for_blob, split, hashed) -> Packed:
    manifest_bytes = manifest.to_json()
    signature = key.sign(manifest_bytes)
    if split is None and not hashed:
        with AtomicFile(output, BUNDLE_MODE, buffering=0) as handle:
            sink = bundle_writer(handle.fileno(), output.parent, store.root)
            try:
                _write_members(TarWriter(sink, mtime=0), manifest, manifest_bytes, signature, store, progress, wait_for_blob)
                sink.close()
            except BaseException:
                sink.abort()
                raise
        return Packed(manifest_bytes, None)
    rolling = RollingFile(output, split)
    try:
        _write_members(TarWriter(rolling, mtime=0), manifest, manifest_bytes, signature, store, progress, wait_for_blob)
        written = rolling.finish()
    except BaseException:
        rolling.abort()
        raise
    return Packed(manifest_bytes, written)


def head_room(manifest: Manifest) -> int:
    """The bytes kept at the start of a bundle for bundle.json and its signature (a multiple of ALIGN).

    Sized from the manifest with its late members (the SBOM, the vulnerabilities) at the longest size a member
    can have, so a build that packs before it knows them and one that packs after lay out the same bytes.
    """
    late = (SBOM, VULNERABILITIES)
    widest = [replace(e, sha256="0" * 64, size=10**13 - 1) if e.path in late else e for e in manifest.files]
    length = len(replace(manifest, files=tuple(widest)).to_json())
    room = _padded(length) + 4 * BLOCK + _padded(MAX_SIGNATURE) + BLOCK
    return room + (-room % ALIGN)


def _write_members(writer: TarWriter, manifest: Manifest, manifest_bytes: bytes, signature: bytes, store: BlobStore, progress, wait_for_blob) -> None:
    writer.add_head(MANIFEST_NAME, manifest_bytes, SIGNATURE_NAME, signature, head_room(manifest))
    for entry in manifest.files:
        if not entry.carried:
            continue
        if wait_for_blob:
            wait_for_blob("sha256:" + entry.sha256)
        with store.open("sha256:" + entry.sha256) as source:
            writer.add_stream(entry.path, entry.size, entry.mode, source, on_chunk=lambda n: progress.advance(n, network=False))
    writer.close()


# Room for bundle.json's signature: Ed25519 is 64 bytes, ECDSA P-256 in DER at most 72.
MAX_SIGNATURE = 72


def _padded(size: int) -> int:
    return size + (-size % BLOCK)


class DeferredPack:
    """A bundle whose last members (the review members: what is inside the images, the vulnerabilities found)
    are known only after every blob has arrived: everything else is packed while downloads go on.

    The body is written from `room` on, where `room` holds bundle.json and its signature: bundle.json is
    written last, into exactly that room (its first header padded with a pax comment, as aligned members
    are). The room is sized from a provisional manifest whose review entries have the longest sizes a
    member can have, so the final bundle.json (same entries, real sizes and digests) always fits.
    """

    def __init__(self, output: Path, provisional: Manifest, key: SigningKey, store: BlobStore, progress: Progress, wait_for_blob):
        self._output, self._key, self._store, self._progress, self._wait = output, key, store, progress, wait_for_blob
        self.room = head_room(provisional)
        output.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = output.with_name(f".{output.name}.partial")
        self._temporary.unlink(missing_ok=True)
        # Never through a link someone planted, and with the bundle's own mode from the first byte.
        descriptor = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, BUNDLE_MODE)
        self._descriptor = descriptor
        try:
            self._sink = bundle_writer(descriptor, output.parent, store.root, offset=self.room)
        except BaseException:
            os.close(descriptor)
            self._temporary.unlink(missing_ok=True)
            raise
        self._writer = TarWriter(self._sink, mtime=0)
        self._writer.written = self.room
        self._stop = threading.Event()
        self._error: BaseException | None = None
        body = [entry for entry in provisional.files if entry.carried and entry.path not in REVIEW_MEMBERS]
        self._thread = threading.Thread(target=self._body, args=(body,), name="pack", daemon=True)
        self._thread.start()

    def _body(self, entries: list) -> None:
        try:
            for entry in entries:
                if self._stop.is_set():
                    return
                if self._wait:
                    self._wait("sha256:" + entry.sha256)
                with self._store.open("sha256:" + entry.sha256) as source:
                    self._writer.add_stream(entry.path, entry.size, entry.mode, source, on_chunk=lambda n: self._progress.advance(n, network=False))
        except BaseException as error:  # handed to finish()
            self._error = error

    def finish(self, manifest: Manifest, review: dict[str, bytes]) -> bytes:
        """Append the review members, write bundle.json and its signature into the room, rename into place."""
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            for entry in manifest.files:
                if entry.path in REVIEW_MEMBERS and entry.carried:
                    self._writer.add_stream(entry.path, entry.size, entry.mode, io.BytesIO(review[entry.path]))
            self._writer.close()
            manifest_bytes = manifest.to_json()
            signature = self._key.sign(manifest_bytes)
            buffer = io.BytesIO()
            TarWriter(buffer, mtime=0).add_head(MANIFEST_NAME, manifest_bytes, SIGNATURE_NAME, signature, self.room)
            head = buffer.getvalue()
            if len(head) != self.room:
                raise AssertionError(f"bundle.json's room is {self.room} bytes, its members {len(head)}")
            self._sink.close()
            os.pwrite(self._descriptor, head, 0)
            os.fsync(self._descriptor)
            os.close(self._descriptor)
            self._descriptor = None
            os.replace(self._temporary, self._output)
            return manifest_bytes
        except BaseException as error:
            self.abort()
            if isinstance(error, OSError) and error.errno in NO_SPACE:
                # The partial bundle is already removed; say where and how much it needs.
                raise no_space(self._output.parent, self.room + manifest.carried_size) from None
            raise

    def abort(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._sink.abort()
        finally:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None
            self._temporary.unlink(missing_ok=True)
