"""The staged bundle: what unpack leaves for the phases after it, and how they read it back, re-hashed.

unpack (installer/phases/unpack.py) verifies every member into a staging directory of root's alone (0700) and
the node store; every later phase reaches a member through here: `ensure_staged` refuses a staging directory
that is not complete or not root's alone, `member_file` finds the member (staged, a `--from` fetch, or the
store's blob by digest), and `StagedFile` hashes it again while it is copied, so nothing staged is trusted for
having been verified once.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from bundle.errors import BundleError
from bundle.manifest import FileEntry
from bundle.store import CHUNK, BlobStore, open_regular
from installer.phases import Context
from installer.remote import needed_members

COMPLETE = ".complete"
ARTIFACT = "artifact.json"  # the descriptor of the bundle artifact unpack put in the store, for the registry phase
FETCHES = ".fetch"
STAGING_MODE = 0o700


def staging_dir(context: Context) -> Path:
    return context.paths.staging / context.manifest_sha256[:16]


def space_needed(context: Context) -> int:
    """About what unpacking needs in /var/lib/airlock: the members this node takes, staged and then kept, and some room."""
    if context.remote is not None:
        size = sum(entry.size for entry in needed_members(context.manifest, context.arch))
    else:
        from bundle.parts import total_size

        size = total_size(context.bundle)
    return int(size * 1.2) + (512 << 20)


def member_file(context: Context, member: str, staging: Path | None = None) -> Path:
    """Where a member of this bundle is read from: its staged copy, a `--from` fetch not yet in the store, or the store's blob by digest.

    Whoever reads it holds it to bundle.json's sha256 again (`StagedFile`, `recheck`).
    """
    staging = staging if staging is not None else staging_dir(context)
    staged = staging / member
    if os.path.lexists(staged):
        return staged
    entry = context.manifest.file(member)
    if entry is None:
        raise BundleError("is not listed in bundle.json", member)
    fetched = staging / FETCHES / entry.sha256
    if os.path.lexists(fetched):
        return fetched
    return BlobStore(context.paths.store).path("sha256:" + entry.sha256)


def ensure_staged(context: Context) -> Path:
    """The staging directory of a completed unpack (phases after unpack call this, also on resume)."""
    staging = staging_dir(context)
    if context.host.dry_run:
        return staging
    for directory in (context.paths.state_dir, context.paths.staging, staging):
        info = os.lstat(directory) if directory.exists() else None
        if info is not None and (not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o022 or info.st_uid != os.geteuid()):
            raise BundleError(f"{directory} is not a directory only this user can write; staged files cannot be trusted. Remove {staging} and rerun")
    marker = staging / COMPLETE
    if not marker.is_file() or marker.read_text() != context.manifest_sha256:
        raise BundleError(f"{staging} holds no complete unpack of this bundle; run without skipping the unpack phase")
    return staging


class StagedFile:
    """A staged member opened for reading, hashed as it is read: at its end, bytes other than bundle.json's raise BundleError.

    Hand it to Host.install: the copy fails before it is renamed into place if the staged file changed since unpack.
    """

    def __init__(self, path: Path, entry: FileEntry):
        self._entry = entry
        try:
            self._handle = open_regular(path)
        except FileNotFoundError:
            raise BundleError(f"{path} is gone since unpack (a store prune, or a removed staging directory); rerun without skipping the unpack phase", entry.path) from None
        self._hash = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size if size and size > 0 else CHUNK)
        if data:
            self._hash.update(data)
            self._size += len(data)
            return data
        if self._size != self._entry.size or self._hash.hexdigest() != self._entry.sha256:
            raise BundleError(
                f"the staged copy changed since it was verified ({self._size} bytes, sha256 {self._hash.hexdigest()}; "
                f"bundle.json lists {self._entry.sha256}); remove the staging directory and rerun",
                self._entry.path,
            )
        return data

    def checked_whole(self) -> BinaryIO:
        """Read to the end (raising on a mismatch), then hand back the underlying file rewound, for a reader that seeks."""
        while self.read(CHUNK):
            pass
        self._handle.seek(0)
        return self._handle

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def install_staged(context: Context, member: str, target: Path, mode: int = 0o755) -> None:
    """Install a member at `target` (staged, or in the store), checked against bundle.json while it is copied (a changed file is never renamed into place)."""
    staging = ensure_staged(context)
    if context.host.dry_run:
        context.host.install(target, staging / member, mode)
        return
    entry = context.manifest.file(member)
    if entry is None:
        raise BundleError("is not listed in bundle.json", member)
    with StagedFile(member_file(context, member, staging), entry) as source:
        try:
            context.host.install(target, source, mode)
        except BundleError:
            target.with_name(f".{target.name}.airlock-new").unlink(missing_ok=True)
            raise


def open_staged_archive(context: Context, member: str) -> BinaryIO:
    """A staged archive, hashed whole and then rewound: the tar reader reads the very handle whose bytes were checked."""
    entry = context.manifest.file(member)
    if entry is None:
        raise BundleError("is not listed in bundle.json", member)
    return StagedFile(member_file(context, member, ensure_staged(context)), entry).checked_whole()
