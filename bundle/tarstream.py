"""A minimal POSIX tar reader and writer for bundles.

Bundles only ever hold regular files, so the reader accepts regular-file
members (ustar, with pax headers for long names) and refuses everything
else: links, devices, fifos, directories and GNU extensions. It reads in
large chunks and never seeks, so it works on a pipe (`.tar.zst` through
zstd) and verifies while it streams.

The writer starts the data of every streamed member on a 4 KiB boundary
(padding the member's pax header with a `comment` record). Tar readers
ignore the comment; on a filesystem with shared extents (XFS, btrfs) the
kernel's file copy then shares the cached blob's blocks instead of copying
them, so packing costs almost nothing there.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bundle.errors import BundleError

BLOCK = 512
RECORD = BLOCK * 20
# Filesystem block size that member data is aligned to, so the kernel can share extents.
ALIGN = 4096
CHUNK = 1 << 20
# A pax header carries a few keys; anything larger is an attack.
MAX_PAX_BYTES = 64 << 10
# No member of a bundle comes near 1 TiB; a larger (or negative) size is a forged header.
MAX_MEMBER_BYTES = 1 << 40
# pax numbers are plain decimal: no sign, no spaces, no underscores, no other digits than ASCII.
_DECIMAL = re.compile(rb"[0-9]{1,20}")

_REGULAR = (b"0", b"\x00", b"7")
_KIND_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a fifo",
    b"g": "a pax global header",
    b"L": "a GNU long name",
    b"K": "a GNU long link",
}


class MemberSizeError(BundleError):
    """A header (or pax record) gives a size that is negative, not plain decimal, or out of range: forged, not merely damaged."""


@dataclass(frozen=True)
class MemberHeader:
    path: str
    size: int
    mode: int


class TarReader:
    """Iterate over the members of a tar stream, one content read at a time.

    Usage: `for header in reader.members(): for chunk in reader.content(): ...`
    Content not read by the caller is skipped before the next header.
    """

    def __init__(self, stream: BinaryIO, seek: bool = False):
        self._stream = stream
        self._remaining = 0
        self._padding = 0
        self.offset = 0
        self._seek = seek  # skip unread content by seeking (a bundle file read for a few members, not verified whole)

    def _read_exact(self, count: int, what: str) -> bytes:
        data = self._stream.read(count)
        while len(data) < count:
            more = self._stream.read(count - len(data))
            if not more:
                raise BundleError(f"the bundle ends early (truncated) while reading {what} at byte {self.offset + len(data)}")
            data += more
        self.offset += count
        return data

    def members(self) -> Iterator[MemberHeader]:
        pax: dict[str, str] = {}
        while True:
            self._skip_rest()
            block = self._read_exact(BLOCK, "a member header")
            if block == b"\x00" * BLOCK:
                self._check_end()
                return
            name, size, mode, kind = _parse_header(block)
            if kind == b"x":
                if size > MAX_PAX_BYTES:
                    raise BundleError(f"pax header of {size} bytes is over the cap", name)
                pax = _parse_pax(self._read_exact(size, "a pax header"))
                self._read_exact(-size % BLOCK, "padding")
                continue
            path = pax.get("path", name)
            if "size" in pax:
                size = _member_size(pax["size"].encode("utf-8"), path)
            pax = {}
            if kind not in _REGULAR:
                raise BundleError(f"is {_KIND_NAMES.get(kind, f'an unsupported member type {kind!r}')}, not a regular file", path)
            self._remaining = size
            self._padding = -size % BLOCK
            yield MemberHeader(path=path, size=size, mode=mode)

    def content(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Yield the current member's bytes in chunks."""
        while self._remaining > 0:
            want = min(chunk_size, self._remaining)
            data = self._stream.read(want)
            if not data:
                raise BundleError(f"the bundle ends early (truncated) inside a member at byte {self.offset}")
            self._remaining -= len(data)
            self.offset += len(data)
            yield data

    def _skip_rest(self) -> None:
        if self._seek and self._remaining:
            self._stream.seek(self._remaining, os.SEEK_CUR)
            self.offset += self._remaining
            self._remaining = 0
        for _ in self.content():
            pass
        if self._padding:
            self._read_exact(self._padding, "padding")
            self._padding = 0

    def _check_end(self) -> None:
        # After the end-of-archive marker only zero padding may follow.
        while True:
            data = self._stream.read(CHUNK)
            if not data:
                return
            if data.count(0) != len(data):
                raise BundleError(f"data follows the end of the archive at byte {self.offset}")
            self.offset += len(data)


def _parse_header(block: bytes) -> tuple[str, int, int, bytes]:
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
    except (tarfile.HeaderError, UnicodeDecodeError) as error:
        raise BundleError(f"a member header is corrupt: {error}") from None
    kind = block[156:157]
    # tarfile decodes base-256 sizes to any integer, negative ones included; a size is checked here, once, for every member.
    if not 0 <= info.size <= MAX_MEMBER_BYTES:
        raise MemberSizeError(f"a member header gives the size {info.size}, outside 0..{MAX_MEMBER_BYTES}", info.name or None)
    return info.name, info.size, info.mode & 0o7777, kind


def _member_size(text: bytes, path: str) -> int:
    """A pax `size` value: plain decimal within the member cap, or BundleError."""
    if not _DECIMAL.fullmatch(text):
        raise MemberSizeError(f"pax size {text[:40].decode('utf-8', 'replace')!r} is not a plain decimal number", path)
    size = int(text)
    if size > MAX_MEMBER_BYTES:
        raise MemberSizeError(f"pax size {size} is over the {MAX_MEMBER_BYTES} byte cap", path)
    return size


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        if data[position:].strip(b"\x00") == b"":
            break
        space = data.find(b" ", position)
        if space < 0 or not _DECIMAL.fullmatch(data[position:space]):
            raise BundleError("a pax header is corrupt: a record length is not a plain decimal number")
        length = int(data[position:space])
        record = data[space + 1 : position + length]
        if position + length > len(data) or length <= space - position or not record.endswith(b"\n") or b"=" not in record:
            raise BundleError("a pax header is corrupt")
        key, _, value = record[:-1].partition(b"=")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("a pax header is not UTF-8") from None
        position += length
    return records


class TarWriter:
    """Write regular-file members with fixed owners and mtimes (reproducible output)."""

    def __init__(self, stream: BinaryIO, mtime: int = 0):
        self._stream = stream
        self._mtime = mtime
        self.written = 0
        self._kernel_copy = True  # until copy_file_range says it cannot copy into this target

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self.written += len(data)

    def header(self, path: str, size: int, mode: int, aligned: bool = False) -> None:
        """Write a member header; with `aligned`, the member's data will start on an ALIGN boundary."""
        info = tarfile.TarInfo(path)
        info.size = size
        info.mode = mode
        info.mtime = self._mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        encoded = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
        filler = 0
        while aligned and (shortfall := -(self.written + len(encoded)) % ALIGN):
            # Growing the comment by the shortfall (a whole number of blocks) grows the header by as much,
            # unless the record's length field gains a digit; the next turn then makes up the difference.
            filler += shortfall if filler else 1
            info.pax_headers = {"comment": "." * filler}
            encoded = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
        self._write(encoded)

    def header_of_length(self, path: str, size: int, mode: int, total: int) -> bytes:
        """A member header (pax header with a `comment` filler, then ustar) exactly `total` bytes long, not written.

        `total` is a multiple of BLOCK with room for the filler (at least 3 blocks, at most MAX_PAX_BYTES more):
        the builder reserves room for bundle.json and fills it last.
        """
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = size, mode, self._mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        record = total - 2 * BLOCK  # the pax data, whole blocks: one `LEN comment=...` record
        if total % BLOCK or not 32 <= record <= MAX_PAX_BYTES:
            raise ValueError(f"a header of {total} bytes cannot be made")
        # `LEN comment=VALUE\n` where LEN counts the whole record, its own digits included.
        info.pax_headers = {"comment": "." * (record - len(str(record)) - len(" comment=\n"))}
        encoded = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
        if len(encoded) != total:
            raise ValueError(f"a header of {total} bytes came out {len(encoded)} bytes long")
        return encoded

    def add_head(self, name: str, data: bytes, signature_name: str, signature: bytes, room: int) -> None:
        """The first two members (bundle.json and its signature) filling exactly `room` bytes: the first header is
        padded (a pax comment) so that what follows starts where the room ends, whatever the two weigh."""
        tail = len(data) + (-len(data) % BLOCK) + BLOCK + len(signature) + (-len(signature) % BLOCK)
        self._write(self.header_of_length(name, len(data), 0o644, room - tail))
        self._write(data)
        self._pad(len(data))
        self.add_bytes(signature_name, signature)

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.header(path, len(data), mode)
        self._write(data)
        self._pad(len(data))

    def add_stream(self, path: str, size: int, mode: int, source: BinaryIO, on_chunk=None) -> None:
        """Copy exactly `size` bytes from `source`; fail if it holds fewer.

        Between two real files the copy stays in the kernel (copy_file_range),
        and the data starts on an ALIGN boundary so that copy can share extents.
        """
        self.header(path, size, mode, aligned=True)
        remaining = size
        if size and self._kernel_copy and _kernel_copy_possible(source, self._stream):
            # A target that is not one file (the parts of a split bundle) copies into whichever file the bytes belong in.
            copy = getattr(self._stream, "copy_from", None) or _file_copier(self._stream)
            while remaining:
                try:
                    copied = copy(source.fileno(), min(remaining, 1 << 30))
                except OSError as error:
                    if error.errno not in KERNEL_COPY_UNSUPPORTED:
                        raise
                    # Another file system (tmpfs, vfat, exFAT, NFS: a USB stick, a DVD staging area), or a kernel
                    # without it: the plain copy below does the rest, and every later member too.
                    self._kernel_copy = False
                    break
                if copied == 0:
                    raise BundleError(f"source ended {remaining} bytes early while packing", path)
                remaining -= copied
                self.written += copied
                if on_chunk:
                    on_chunk(copied)
        while remaining:
            data = source.read(min(CHUNK, remaining))
            if not data:
                raise BundleError(f"source ended {remaining} bytes early while packing", path)
            self._write(data)
            remaining -= len(data)
            if on_chunk:
                on_chunk(len(data))
        self._pad(size)

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._write(b"\x00" * (-size % BLOCK))

    def close(self) -> None:
        self._write(b"\x00" * (2 * BLOCK))
        self._write(b"\x00" * (-self.written % RECORD))


# copy_file_range's answers when it cannot copy between these two files (nothing was copied): use read and write.
KERNEL_COPY_UNSUPPORTED = frozenset({errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL})


def _kernel_copy_possible(source, target) -> bool:
    try:
        return (
            hasattr(os, "copy_file_range")
            and stat.S_ISREG(os.fstat(source.fileno()).st_mode)
            and (hasattr(target, "copy_from") or stat.S_ISREG(os.fstat(target.fileno()).st_mode))
            and source.tell() == 0
        )
    except (AttributeError, OSError, ValueError):
        return False


def _file_copier(target):
    """copy_from for a plain file: flush what is buffered, then let the kernel copy (bytes copied; 0 at the source's end)."""
    target.flush()

    def copy(source_fd: int, count: int) -> int:
        return os.copy_file_range(source_fd, target.fileno(), count)

    return copy
