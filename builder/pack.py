"""Write a bundle: bundle.json, its signature, then every member from the store.

Streams each member from the content store straight into the tar (memory
does not grow with the bundle), writes to a temporary name and renames it
into place, so an interrupted build never leaves a half-written bundle under
the requested name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from builder.progress import Progress
from builder.sign import SigningKey
from bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from bundle.store import BlobStore
from bundle.tarstream import TarWriter

WRITE_BUFFER = 4 << 20


def write_bundle(
    output: Path, manifest: Manifest, key: SigningKey, store: BlobStore, progress: Progress, wait_for_blob: Callable[[str], None] | None = None
) -> bytes:
    """Sign `manifest` and write the bundle to `output`; return the bundle.json bytes.

    `wait_for_blob(digest)` blocks until a member still being downloaded is
    in the store, so packing can start before every download has finished.
    """
    manifest_bytes = manifest.to_json()
    signature = key.sign(manifest_bytes)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.partial")
    try:
        with open(temporary, "wb", buffering=WRITE_BUFFER) as handle:
            writer = TarWriter(handle, mtime=0)
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
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return manifest_bytes
