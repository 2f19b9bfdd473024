"""Files that appear under their final name whole, or not at all, and never through someone else's link.

Everything airlock writes (bundles, parts, parts lists, sidecars, the pyz
beside a bundle, keys, certificates, node files) is written under a
temporary name beside its final one and renamed into place when complete.
The temporary is created with O_CREAT|O_EXCL|O_NOFOLLOW under a name with 64
random bits, mode 0600 until it is finished: a link or file planted in a
shared directory is never written through, and a name cannot be guessed in
advance to plant one. After the rename the final name must hold the very
file that was written; where others can write the directory and swap it in
between, the write fails naming the file.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from bundle.errors import WriteError

# Directories airlock creates are readable by the registry's unprivileged user; nothing it creates is writable by others.
DIR_MODE = 0o755
TEMPORARY_MODE = 0o600


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create `path` and missing parents with exactly `mode`, whatever the umask; existing directories are left alone."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        os.chmod(directory, mode)


def create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path` under a private name (`.NAME.<random>.partial`), open read-write, mode 0600.

    The file stays locked (flock) while its descriptor is open; temporaries for
    `path` that an interrupted run left behind (ours, unlocked) are removed first.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    for _ in range(8):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        try:
            descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, TEMPORARY_MODE)
        except FileExistsError:
            continue
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return descriptor, temporary
    raise WriteError(f"{path.parent}: cannot create a temporary file for {path.name} (every name tried exists); is something filling the directory?")


def remove_stale_temporaries(path: Path) -> None:
    """Remove what interrupted writes of `path` left: regular files of this user under its temporary names, unlocked."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[0-9a-f]{{16}}\.partial$")
    try:
        names = [name for name in os.listdir(path.parent) if pattern.match(name)]
    except OSError:
        return
    for name in names:
        stale = path.parent / name
        try:
            descriptor = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = os.fstat(descriptor)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a writer still at work: leave it
                stale.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def identity(descriptor: int) -> tuple[int, int]:
    info = os.fstat(descriptor)
    return info.st_dev, info.st_ino


def rename_into_place(temporary: Path, path: Path, written: tuple[int, int]) -> None:
    """Rename `temporary` to `path`, then make sure `path` is the file that was written (device and inode `written`)."""
    os.replace(temporary, path)
    info = os.lstat(path)
    if (info.st_dev, info.st_ino) != written:
        raise WriteError(
            f"{path}: replaced by another file while airlock wrote it; someone else can write {path.parent}: write into a directory only you can write"
        )


class AtomicFile:
    """A file written under a private temporary name beside `path` and renamed into place, with `mode`, when complete.

        with AtomicFile(path, 0o644) as handle:
            handle.write(data)

    commits when the block ends normally and removes the temporary otherwise.
    Missing directories are created with DIR_MODE. `durable` (the default)
    syncs the file to disk before the rename; staging that is re-hashed on a
    rerun anyway does without.
    """

    def __init__(self, path: Path, mode: int = 0o644, buffering: int = -1, durable: bool = True):
        self.path = Path(path)
        self.mode = mode
        self.durable = durable
        make_dirs(self.path.parent)
        descriptor, self.temporary = create_temporary(self.path)
        self.identity = identity(descriptor)
        self.handle: BinaryIO = os.fdopen(descriptor, "w+b", buffering=buffering)

    def commit(self) -> None:
        self.handle.flush()
        os.fchmod(self.handle.fileno(), self.mode)
        if self.durable:
            os.fsync(self.handle.fileno())
        self.handle.close()
        try:
            rename_into_place(self.temporary, self.path, self.identity)
        except BaseException:
            self.temporary.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        self.handle.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> BinaryIO:
        return self.handle

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a small file under a private temporary name and rename it into place (missing directories get DIR_MODE)."""
    with AtomicFile(path, mode) as handle:
        handle.write(data)

