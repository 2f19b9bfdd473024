"""Reading a small file given on the command line or beside a bundle: bounded, and never blocking on a FIFO.

A node.yaml, a trust root, a parts list or a signature is a few KiB. Whoever
names the path may point it at a FIFO, a device or a 3 GiB file; none of them
may hang the command or fill its memory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class SmallFileError(Exception):
    """Why the file was refused, as the end of a one-line message (the caller names the file or the flag)."""

    def __init__(self, reason: str, special: bool = False):
        super().__init__(reason)
        self.special = special  # a link, FIFO, device or directory: the caller may say to copy the file itself


def read_small_file(path: Path, cap: int, what: str, follow_links: bool = True) -> bytes:
    """The bytes of `path`, a regular file of at most `cap` bytes (`what` names the kind of file in messages).

    Never more than cap + 1 bytes are read; a FIFO, device or directory is
    refused before a byte is read (a FIFO is opened without waiting for a
    writer); without `follow_links` so is a symbolic link.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_links:
            raise SmallFileError("is a symbolic link", special=True) from None
        raise SmallFileError(f"cannot be read: {error.strerror}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise SmallFileError("is not a regular file (a FIFO, device or directory)", special=True)
        if info.st_size > cap:
            raise SmallFileError(f"is {info.st_size} bytes, over the {cap} byte cap of a {what}")
        data = bytearray()
        while len(data) <= cap:
            chunk = os.read(descriptor, cap + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > cap:
            raise SmallFileError(f"grew over the {cap} byte cap of a {what} while it was read")
        return bytes(data)
    finally:
        os.close(descriptor)
