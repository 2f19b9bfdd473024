"""unpack: one streaming pass over the bundle, every member hashed as it is written to staging.

Image blobs go straight into the content store (each renamed into place only
after its own digest matched, and referenced by nothing until the registry
phase merges the index); every other member goes to a staging directory.
Nothing outside staging and the store is touched, and nothing is activated
until this pass has verified the whole bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

from installer.bundle import FileEntry
from installer.errors import BundleError
from installer.phases import Context, Phase
from installer.store import BlobStore
from installer.unpack import BLOB_PREFIX, blob_sink
from installer.verify import verify_bundle

COMPLETE = ".complete"


class _FileSink:
    """A staged member: written to a temporary name, renamed when its hash checked out."""

    def __init__(self, target: Path, mode: int):
        self._target = target
        self._mode = mode
        target.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = target.with_name(f".{target.name}.partial")
        self._handle = open(self._temporary, "wb")

    def write(self, data: bytes) -> None:
        self._handle.write(data)

    def done(self) -> None:
        self._handle.close()
        os.chmod(self._temporary, self._mode)
        os.replace(self._temporary, self._target)

    def abort(self) -> None:
        self._handle.close()
        self._temporary.unlink(missing_ok=True)


def staging_dir(context: Context) -> Path:
    return context.paths.staging / context.manifest_sha256[:16]


def run(context: Context) -> None:
    staging = staging_dir(context)
    context.staging = staging
    if context.host.dry_run:
        context.echo(f"would verify every member and unpack into {staging} and {context.paths.store}")
        return
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(context.paths.state_dir, 0o755)
    (staging / COMPLETE).unlink(missing_ok=True)
    store = BlobStore(context.paths.store)
    store.blobs.mkdir(parents=True, exist_ok=True)

    def sink(entry: FileEntry):
        if entry.path.startswith(BLOB_PREFIX):
            return blob_sink(store, entry)
        return _FileSink(staging / entry.path, entry.mode)

    verified = verify_bundle(context.bundle, context.keys, now=context.now, sink=sink)
    if verified.manifest_sha256 != context.manifest_sha256:
        raise BundleError("bundle.json changed between the verify and unpack phases; the file is being modified")
    (staging / "bundle.json").write_bytes(verified.manifest_bytes)
    (staging / COMPLETE).write_text(context.manifest_sha256)
    context.echo(f"verified and unpacked {len(verified.manifest.files)} members ({verified.manifest.total_size >> 20} MiB)")


def ensure_staged(context: Context) -> Path:
    """The staging directory of a completed unpack (phases after unpack call this, also on resume)."""
    staging = staging_dir(context)
    context.staging = staging
    if context.host.dry_run:
        return staging
    marker = staging / COMPLETE
    if not marker.is_file() or marker.read_text() != context.manifest_sha256:
        raise BundleError(f"{staging} holds no complete unpack of this bundle; run without skipping the unpack phase")
    return staging


PHASE = Phase("unpack", "verify every member while streaming it into staging and the image store", run)
