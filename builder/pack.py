"""Write a bundle: bundle.json, its signature, then every member from the store.

Streams each member from the content store straight into the tar (memory
does not grow with the bundle), writes to a temporary name and renames it
into place, so an interrupted build never leaves a half-written bundle under
the requested name. With a part size, the same stream fills numbered parts
instead (builder/split.py), hashed while they are written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.progress import Progress
from builder.sign import SigningKey
from builder.split import BUNDLE_MODE, RollingFile, Written
from bundle.atomic import AtomicFile
from bundle.errors import NO_SPACE, no_space
from bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from bundle.store import BlobStore
from bundle.tarstream import TarWriter

WRITE_BUFFER = 4 << 20


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
        with AtomicFile(output, BUNDLE_MODE, buffering=WRITE_BUFFER) as handle:
            _write_members(TarWriter(handle, mtime=0), manifest, manifest_bytes, signature, store, progress, wait_for_blob)
        return Packed(manifest_bytes, None)
    rolling = RollingFile(output, split)
    try:
        _write_members(TarWriter(rolling, mtime=0), manifest, manifest_bytes, signature, store, progress, wait_for_blob)
        written = rolling.finish()
    except BaseException:
        rolling.abort()
        raise
    return Packed(manifest_bytes, written)


def _write_members(writer: TarWriter, manifest: Manifest, manifest_bytes: bytes, signature: bytes, store: BlobStore, progress, wait_for_blob) -> None:
    writer.add_bytes(MANIFEST_NAME, manifest_bytes)
    writer.add_bytes(SIGNATURE_NAME, signature)
    for entry in manifest.files:
        if not entry.carried:
            continue
        if wait_for_blob:
            wait_for_blob("sha256:" + entry.sha256)
        with store.open("sha256:" + entry.sha256) as source:
            writer.add_stream(entry.path, entry.size, entry.mode, source, on_chunk=lambda n: progress.advance(n, network=False))
    writer.close()
