"""A content-addressed blob store laid out like an OCI image layout.

`root/blobs/sha256/<hex>` holds each blob under its digest. Every write goes
to a temporary name under `root/.partial/` and is renamed into place only
after its digest checked out, so a final name never holds a partial or wrong
blob. A partial write can be kept and resumed (downloads with Range).
The builder's cache, a bundle's `images/` and a node's store are all this.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from bundle.atomic import AtomicFile, make_dirs
from bundle.errors import NO_SPACE, StoreError, no_space
from bundle.jsonobject import parse_object
from bundle.manifest import canonical_json, is_digest

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
# index.json annotations that carry an image's full reference (registry.k8s.io/pause:3.10).
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
CHUNK = 1 << 20
MAX_LAYOUT_INDEX_BYTES = 32 << 20  # an OCI layout's index.json: a descriptor per image, like bundle.json's cap
# Blobs are data, never executed from the store.
BLOB_MODE = 0o644


class DigestMismatch(StoreError):
    def __init__(self, what: str, expected: str, actual: str):
        self.what, self.expected, self.actual = what, expected, actual
        super().__init__(f"{what}: expected digest {expected}, got {actual}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file itself: a symlink (or device, fifo) is refused.

    The store, the registry and the installer read blobs through this, so a link
    planted in the store never leads a read outside it.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # the final component is a symbolic link
            raise StoreError(f"{path} is a symbolic link; the store holds regular files only (run airlock-node store check)") from None
        raise
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise StoreError(f"{path} is not a regular file; the store holds regular files only (run airlock-node store check)")
    return os.fdopen(descriptor, "rb")


def copy_verified(source: BinaryIO, target: BinaryIO, expected: str, what: str) -> int:
    """Copy `source` into `target`, hashing as it goes; raise DigestMismatch unless the bytes are `expected` (sha256:...)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    actual = "sha256:" + digest.hexdigest()
    if actual != expected:
        raise DigestMismatch(what, expected, actual)
    return size


class _Discard:
    """A sink for bytes that are only hashed."""

    def write(self, data: bytes) -> int:
        return len(data)


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.partials = self.root / ".partial"

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise StoreError(f"{digest!r} is not a sha256 digest")
        return self.blobs / digest[len("sha256:") :]

    def exists(self, digest: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(digest)).st_mode)
        except FileNotFoundError:
            return False

    def size(self, digest: str) -> int:
        return os.lstat(self.path(digest)).st_size

    def open(self, digest: str) -> BinaryIO:
        try:
            return open_regular(self.path(digest))
        except FileNotFoundError:
            raise StoreError(f"{digest} is not in the store at {self.root}") from None

    def put_file(self, source: Path, expected: str) -> None:
        """Copy a file into the store (never a link to it: the store's copy has its own inode and mode), re-hashed on the way."""
        if self.exists(expected):
            return
        with self.partial(expected) as part, open_regular(source) as reader:
            part.reset()
            copy_verified(reader, part, expected, f"{source}")
            part.commit(expected)

    def adopt(self, source: Path, digest: str) -> None:
        """Move in a file whose bytes a verifier already matched to `digest`, by rename: no second write.

        `source` must be private to the caller (a root-only staging directory) and already on disk (fsynced).
        Across file systems it is copied instead, re-hashed on the way, and removed.
        """
        if self.exists(digest):
            source.unlink()
            return
        make_dirs(self.blobs)
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # never a link's target (and no lchmod on Linux)
        try:
            os.fchmod(descriptor, BLOB_MODE)
        finally:
            os.close(descriptor)
        try:
            os.replace(source, self.path(digest))
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            self.put_file(source, digest)
            source.unlink()

    def copy_out(self, digest: str, target: Path, mode: int) -> None:
        """Write a blob to `target` with `mode`, re-hashed on the way: a blob someone changed in the store is refused, never used."""
        with AtomicFile(target, mode, durable=False) as handle, self.open(digest) as source:
            copy_verified(source, handle, digest, f"store blob {self.path(digest)} (changed since it was stored; run airlock-node store check)")

    def recheck(self, digest: str) -> None:
        """Re-hash a stored blob: one this store kept from an earlier bundle is about to be trusted again."""
        with self.open(digest) as source:
            copy_verified(source, _Discard(), digest, f"store blob {self.path(digest)} (changed since it was stored; run airlock-node store check)")

    def read(self, digest: str, limit: int = 16 << 20) -> bytes:
        """Read a small blob (a manifest, an index) and check its digest."""
        with self.open(digest) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"{digest} is larger than {limit} bytes")
        if sha256_digest(data) != digest:
            raise DigestMismatch(f"store blob {self.path(digest)}", digest, sha256_digest(data))
        return data

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected and digest != expected:
            raise DigestMismatch("blob", expected, digest)
        if not self.exists(digest):
            with self.partial(digest) as part:
                if not self.exists(digest):  # another writer may have finished while we waited
                    part.reset()
                    part.write(data)
                    part.commit(digest)
        return digest

    def partial(self, key: str, hashed: bool = True, tap=None) -> PartialBlob:
        """A resumable write named by `key` (the expected digest, or any stable name).

        `hashed=False` is for a caller that hashes the same bytes itself and commits only what it verified
        (the bundle reader): every byte is then hashed once, not twice. `tap` (with `write(bytes)` and
        `reset()`) sees every byte the blob is made of, in order, the resumed ones included, while they
        are hashed: a reader of the blob's contents needs no second pass.
        """
        make_dirs(self.partials)
        make_dirs(self.blobs)
        safe = hashlib.sha256(key.encode()).hexdigest()
        return PartialBlob(self, self.partials / safe, hashed, tap)


class PartialBlob:
    """A blob being written: hashed as it grows, renamed into place on commit.

    Holds an exclusive lock so two builds sharing a cache never write the
    same partial file at once.
    """

    def __init__(self, store: BlobStore, path: Path, hashed: bool = True, tap=None):
        self._store = store
        self.path = path
        self._hashed = hashed
        self._tap = tap
        self._handle: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.size = 0

    def __enter__(self) -> PartialBlob:
        while True:
            # Never through a link someone planted, and with the blob's own mode from the first byte.
            handle = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, BLOB_MODE), "a+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # While we waited for the lock, another writer may have committed (renamed away) the file we
            # opened: that inode is now a final blob and must never be written again. Open the path anew.
            try:
                current = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            handle.close()
        self._handle = handle
        if not self._hashed:
            self.reset()
            return self
        # Re-hash what an earlier, interrupted write left so a resume continues the digest.
        self._handle.seek(0)
        while chunk := self._handle.read(CHUNK):
            self._hash.update(chunk)
            self.size += len(chunk)
            if self._tap is not None:
                self._tap.write(chunk)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def reset(self) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        self._hash = hashlib.sha256()
        self.size = 0
        if self._tap is not None:
            self._tap.reset()

    def write(self, data: bytes) -> None:
        try:
            self._handle.write(data)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            # A full disk: what this write left would only keep it full. Drop it (a rerun fetches it again).
            self._handle.close()
            self._handle = None
            self.discard()
            raise no_space(self._store.root) from None
        if self._hashed:
            self._hash.update(data)
        if self._tap is not None:
            self._tap.write(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected: str | None = None, what: str = "blob") -> str:
        """Rename into place under its digest; on a mismatch drop the bytes and raise."""
        if not self._hashed:
            if not expected:
                raise StoreError("an unhashed write needs the digest its caller verified")
            digest = expected
        else:
            digest = self.digest
        if expected and digest != expected:
            self.reset()
            raise DigestMismatch(what, expected, digest)
        self._handle.flush()
        os.fchmod(self._handle.fileno(), BLOB_MODE)
        os.fsync(self._handle.fileno())
        os.replace(self.path, self._store.path(digest))
        return digest

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def layout_index(entries: list[dict]) -> bytes:
    """The `index.json` of an OCI image layout listing `entries` (descriptors)."""
    return canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})


def read_layout_index(data: bytes) -> list[dict]:
    """The descriptors an OCI layout's index.json lists; JsonObjectError or StoreError naming index.json otherwise."""
    manifests = parse_object(data, "index.json", MAX_LAYOUT_INDEX_BYTES).get("manifests")
    if not isinstance(manifests, list):
        raise StoreError("index.json has no manifests list")
    return manifests
