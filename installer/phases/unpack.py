"""unpack: one streaming pass over the bundle, every member hashed as it is written to staging.

Every member goes to a staging directory (image blobs into a content store
inside it, each renamed into place only after its own digest matched; blobs
the node store already has are only hashed). Only when the whole bundle has
verified are the new blobs moved into the node store, where nothing refers
to them until the registry phase merges the index: a bad or interrupted
bundle writes nothing outside staging.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bundle.artifact import store_artifact
from bundle.errors import BundleError
from bundle.manifest import FileEntry
from bundle.meter import ByteMeter
from bundle.store import BlobStore
from bundle.unpack import BLOB_PREFIX, blob_sink
from bundle.verify import verify_bundle
from installer.phases import Context, Phase
from installer.remote import needed_members

COMPLETE = ".complete"
PARALLEL_FETCHES = 4


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
    if context.host.dry_run:
        context.echo(f"would verify every member and unpack into {staging} and {context.paths.store}")
        return
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(context.paths.state_dir, 0o755)
    (staging / COMPLETE).unlink(missing_ok=True)
    store = BlobStore(context.paths.store)
    manifest_bytes = fetch_from_registry(context, staging, store) if context.remote is not None else unpack_file(context, staging, store)
    (staging / "bundle.json").write_bytes(manifest_bytes)
    (staging / "bundle.json.sig").write_bytes(context.signature)
    (staging / COMPLETE).write_text(context.manifest_sha256)


def unpack_file(context: Context, staging: Path, store: BlobStore) -> bytes:
    """The bundle file in one streaming pass: every member hashed as it is written to staging."""
    staged_blobs = BlobStore(staging / "images")

    # A node that pulls from another node's registry keeps no copy of the images: they are only verified.
    keep_images = not context.config.registry_mirror

    def sink(entry: FileEntry):
        if entry.path.startswith(BLOB_PREFIX):
            if not keep_images or store.exists("sha256:" + entry.sha256):
                return None
            return blob_sink(staged_blobs, entry)
        return _FileSink(staging / entry.path, entry.mode)

    with ByteMeter(context.manifest.carried_size, "unpack") as advance:
        verified = verify_bundle(context.bundle, context.keys, now=context.now, sink=sink, on_bytes=advance)
    if verified.manifest_sha256 != context.manifest_sha256:
        raise BundleError("bundle.json changed between the verify and unpack phases; the file is being modified")
    store.blobs.mkdir(parents=True, exist_ok=True)
    moved = 0
    for blob in staged_blobs.blobs.iterdir() if staged_blobs.blobs.exists() else ():
        target = store.blobs / blob.name
        if target.exists():
            blob.unlink()
        else:
            os.replace(blob, target)
            moved += 1
    context.echo(f"{moved} new image blobs moved into {store.root}")
    keep_and_complete_files(context, verified.manifest, staging, store, keep_images)
    if keep_images:
        # This node's registry can then serve the bundle artifact too: the first node is a source for the others.
        store_artifact(store, verified.manifest_bytes, context.signature, verified.manifest)
    context.echo(f"verified and unpacked {len(verified.manifest.files)} members ({verified.manifest.total_size >> 20} MiB)")
    return verified.manifest_bytes


def fetch_from_registry(context: Context, staging: Path, store: BlobStore) -> bytes:
    """This node's members from the registry, each verified while it streams into staging; the store gets them only at the end.

    Members the store already holds (an installed base) are linked, not fetched; image blobs are never
    fetched: containerd pulls the images from the same registry through hosts.toml.
    """
    remote = context.remote
    manifest_bytes = remote.signed_head()[0]
    if hashlib.sha256(manifest_bytes).hexdigest() != context.manifest_sha256:
        raise BundleError("bundle.json changed between the verify and unpack phases", context.source)
    wanted = needed_members(context.manifest, context.arch)
    by_digest: dict[str, list[FileEntry]] = {}
    for entry in wanted:
        by_digest.setdefault(entry.sha256, []).append(entry)
    fetches = staging / ".fetch"
    missing = [entries[0] for sha256, entries in by_digest.items() if not store.exists("sha256:" + sha256)]

    def fetch(entry: FileEntry) -> None:
        remote.fetch(entry, fetches / entry.sha256)
        if advance:
            advance(entry.size)

    with ByteMeter(sum(entry.size for entry in missing), "fetch") as advance, ThreadPoolExecutor(PARALLEL_FETCHES, thread_name_prefix="fetch") as pool:
        # Largest first, so the long transfers overlap the many small ones.
        for future in [pool.submit(fetch, entry) for entry in sorted(missing, key=lambda entry: -entry.size)]:
            future.result()
    fetched = {entry.sha256 for entry in missing}
    for sha256, entries in by_digest.items():
        source = fetches / sha256 if sha256 in fetched else store.path("sha256:" + sha256)
        for entry in entries:
            target = staging / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, target)
            os.chmod(target, entry.mode)
    # Everything checked out: only now does anything leave staging.
    for sha256 in fetched:
        if not store.exists("sha256:" + sha256):
            store.blobs.mkdir(parents=True, exist_ok=True)
            _link_or_copy(fetches / sha256, store.path("sha256:" + sha256))
    shutil.rmtree(fetches, ignore_errors=True)
    moved = sum(entry.size for entry in missing)
    context.echo(f"fetched {len(missing)} of {len(wanted)} members ({moved >> 20} MiB) from {context.source}, each verified; the rest were in the store")
    return manifest_bytes


def keep_and_complete_files(context: Context, manifest, staging: Path, store: BlobStore, keep_images: bool = True) -> None:
    """Keep every staged file in the store by digest, and fill in what a delta left to its base.

    The store then holds each installed bundle's files as well as its image
    blobs, so the next delta only needs to carry what changed.
    """
    missing = []
    for entry in manifest.files:
        digest = "sha256:" + entry.sha256
        if entry.path.startswith(BLOB_PREFIX):
            if keep_images and not store.exists(digest):
                missing.append(entry.path)
            continue
        staged = staging / entry.path
        if entry.carried:
            if not store.exists(digest):
                _link_or_copy(staged, store.path(digest))
        elif store.exists(digest):
            staged.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(store.path(digest), staged)
            os.chmod(staged, entry.mode)
        else:
            missing.append(entry.path)
    if missing:
        raise BundleError(f"this delta needs {len(missing)} member(s) of its base that the node store lacks, like {missing[0]}; install the base bundle first")


def _link_or_copy(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def ensure_staged(context: Context) -> Path:
    """The staging directory of a completed unpack (phases after unpack call this, also on resume)."""
    staging = staging_dir(context)
    if context.host.dry_run:
        return staging
    marker = staging / COMPLETE
    if not marker.is_file() or marker.read_text() != context.manifest_sha256:
        raise BundleError(f"{staging} holds no complete unpack of this bundle; run without skipping the unpack phase")
    return staging


PHASE = Phase("unpack", "verify every member while streaming it into staging and the image store", run)
