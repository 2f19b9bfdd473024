"""The staged bundle: what unpack leaves for the phases after it, and how they read it back.

unpack (installer/phases/unpack.py) verifies every member, each hashed once while it is written once, into a
content store inside a staging directory of root's alone (0700) or a `--from` fetch there, and renames them
into the node store when the whole bundle checked out. Every later phase reaches a member through here:
`ensure_staged` refuses a staging directory that is not complete or not root's alone, `member_file` finds the
member by digest, and `trusted_blob` opens it, trusted by how it was written, not hashed again:

- nothing from outside is used unverified: a blob reaches its final name (in staging's store, then the node
  store, by rename) only after the verifier matched its bytes to the signed bundle.json while writing them,
  through an exclusive, O_NOFOLLOW partial file (bundle/store.py `PartialBlob`);
- nothing another local user could swap: `trusted_blob` reads a blob only while it and every directory from
  it up to /var/lib/airlock are this user's (root's) and writable by no one else, none a link, and opens it
  without following a link. Only root could change it afterwards, and root is trusted anyway;
- what is left, a byte rotting on disk or a root-made change, `airlock-node store check` finds: it re-hashes
  every blob on demand.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from bundle.errors import BundleError
from bundle.store import BlobStore, open_regular
from installer.phases import Context
from installer.remote import needed_members

COMPLETE = ".complete"
ARTIFACT = "artifact.json"  # the descriptor of the bundle artifact unpack put in the store, for the registry phase
FETCHES = ".fetch"
STAGED_STORE = "store"  # the content store inside a staging directory, what a bundle file's members are written into
STAGING_MODE = 0o700


def staging_dir(context: Context) -> Path:
    return context.paths.staging / context.manifest_sha256[:16]


def space_needed(context: Context) -> int:
    """About what unpacking needs in /var/lib/airlock: the members this node takes (staged, then renamed into the store), and some room."""
    if context.remote is not None:
        size = sum(entry.size for entry in needed_members(context.manifest, context.arch))
    else:
        from bundle.parts import total_size

        size = total_size(context.bundle)
    return int(size * 1.2) + (512 << 20)


def member_file(context: Context, member: str, staging: Path | None = None) -> Path:
    """Where a member of this bundle is read from: by digest in staging's content store or a `--from` fetch (before
    unpack moved them), else the node store's blob."""
    staging = staging if staging is not None else staging_dir(context)
    entry = context.manifest.file(member)
    if entry is None:
        raise BundleError("is not listed in bundle.json", member)
    for candidate in (BlobStore(staging / STAGED_STORE).path("sha256:" + entry.sha256), staging / FETCHES / entry.sha256):
        if os.path.lexists(candidate):
            return candidate
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


def trusted_blob(path: Path, top: Path) -> BinaryIO:
    """Open a member's blob (in the node store or staging, under `top`) for reading, trusted by how it was written.

    Only if no one but this user could have changed it since: the blob and every directory from it up to `top` are
    this user's and writable by no one else, none of them a link; the blob is opened without following a link.
    """
    path = Path(path)
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        raise BundleError(f"{path} is gone since unpack (a store prune, or a removed staging directory); rerun without skipping the unpack phase") from None
    try:
        owner = os.geteuid()
        info = os.fstat(handle.fileno())
        checked = [(path, info)]
        directory = path.parent
        while True:
            checked.append((directory, os.lstat(directory)))
            if directory == top or directory.parent == directory:
                break
            directory = directory.parent
        for where, found in checked:
            if found.st_uid != owner or found.st_mode & 0o022 or (where != path and not stat.S_ISDIR(found.st_mode)):
                raise BundleError(
                    f"{where} could be changed by another user (owner uid {found.st_uid}, mode {stat.S_IMODE(found.st_mode):o}); its blobs cannot be "
                    f"trusted. Make it {owner}'s and writable by it alone (or remove it), then rerun and run airlock-node store check"
                )
    except BaseException:
        handle.close()
        raise
    return handle


def install_staged(context: Context, member: str, target: Path, mode: int = 0o755) -> None:
    """Install a member at `target` from its blob (`trusted_blob`: hashed when it was written, not again here)."""
    staging = ensure_staged(context)
    if context.host.dry_run:
        context.host.install(target, staging / member, mode)
        return
    with trusted_blob(member_file(context, member, staging), context.paths.state_dir) as source:
        context.host.install(target, source, mode)


def open_staged_archive(context: Context, member: str) -> BinaryIO:
    """A member archive's blob, opened for the tar reader (`trusted_blob`)."""
    return trusted_blob(member_file(context, member, ensure_staged(context)), context.paths.state_dir)
