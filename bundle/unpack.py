"""Stream a bundle's images into a content store while it is verified.

Each image blob is written under a temporary name and renamed into the store
only when its own sha256 matched; blobs already present are only hashed.
The store's `index.json` (what the registry serves) is merged last, and only
when the whole bundle verified, so a bad or interrupted bundle activates
nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bundle.atomic import write_atomic
from bundle.errors import BundleError
from bundle.manifest import FileEntry
from bundle.store import CONTAINERD_NAME, OCI_LAYOUT, REF_NAME, BlobStore, layout_index, read_layout_index
from bundle.trust import TrustedKey
from bundle.verify import Verified, verify_bundle

BLOB_PREFIX = "images/blobs/sha256/"
INDEX_MEMBER = "images/index.json"


class StoreSink:
    """A member written into a store under its digest, committed only when the verifier matched it.

    `keep`, when given, also collects the bytes (a small member the caller needs in memory too).
    """

    def __init__(self, store: BlobStore, entry: FileEntry, keep: bytearray | None = None):
        self._digest = "sha256:" + entry.sha256
        self._keep = keep
        # verify_stream hashes these bytes and calls done() only when they matched: no second hash here.
        self._part = store.partial(self._digest, hashed=False).__enter__()

    def write(self, data: bytes) -> None:
        self._part.write(data)
        if self._keep is not None:
            self._keep += data

    def done(self) -> None:
        try:
            self._part.commit(self._digest)
        finally:
            self._part.__exit__(None, None, None)

    def abort(self) -> None:
        self._part.__exit__(None, None, None)
        self._part.discard()


class _MemorySink:
    def __init__(self, limit: int):
        self.data = bytearray()
        self._limit = limit

    def write(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > self._limit:
            raise BundleError("is larger than an image index may be", INDEX_MEMBER)

    def done(self) -> None:
        pass

    def abort(self) -> None:
        pass


def blob_sink(store: BlobStore, entry: FileEntry) -> StoreSink | None:
    """Where an image blob member goes: into the store, or nowhere (only hashed) if the store has it."""
    if entry.path[len(BLOB_PREFIX) :] != entry.sha256:
        raise BundleError("an image blob's name is not its digest", entry.path)
    return None if store.exists("sha256:" + entry.sha256) else StoreSink(store, entry)


def merge_index(existing: list[dict], incoming: list[dict]) -> list[dict]:
    """Entries of both, keyed by image name; an incoming entry replaces one of the same name."""

    def key(entry: dict) -> str:
        annotations = entry.get("annotations") or {}
        return annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or entry.get("digest", "")

    merged = {key(entry): entry for entry in existing}
    merged.update({key(entry): entry for entry in incoming})
    return [merged[name] for name in sorted(merged)]


def unpack_images(bundle: Path, keys: list[TrustedKey], store_root: Path, now: datetime | None = None, on_bytes=None) -> Verified:
    store = BlobStore(store_root)
    store.blobs.mkdir(parents=True, exist_ok=True)
    index_sink = _MemorySink(16 << 20)

    def sink(entry: FileEntry):
        if entry.path.startswith(BLOB_PREFIX):
            return blob_sink(store, entry)
        if entry.path == INDEX_MEMBER:
            return index_sink
        return None

    verified = verify_bundle(bundle, keys, now=now, sink=sink, on_bytes=on_bytes)
    activate_index(store, bytes(index_sink.data))
    return verified


def activate_index(store: BlobStore, index_bytes: bytes) -> None:
    """Merge a bundle's image index into the store's, atomically; every image it names must be in the store."""
    incoming = read_layout_index(index_bytes) if index_bytes else []
    for descriptor in incoming:
        digest = descriptor.get("digest", "")
        if not isinstance(digest, str) or not store.exists(digest):
            raise BundleError(f"points at {digest!r}, which the bundle does not carry", INDEX_MEMBER)
    index_path = store.root / "index.json"
    existing = read_layout_index(index_path.read_bytes()) if index_path.exists() else []
    if not (store.root / "oci-layout").exists():
        write_atomic(store.root / "oci-layout", OCI_LAYOUT)
    write_atomic(index_path, layout_index(merge_index(existing, incoming)))


def image_names(store_root: Path) -> list[tuple[str, dict]]:
    """(full reference, descriptor) for every image in a store's index."""
    index_path = Path(store_root) / "index.json"
    found = []
    for descriptor in read_layout_index(index_path.read_bytes()):
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
        if name:
            found.append((name, descriptor))
    return found
