"""The node as an attack surface: forged tar headers, sloppy signed manifests, the store, modes and umask.

Each test is a proof from the security review: it failed before the fix it names.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from bundle.errors import BundleError
from bundle.tarstream import MAX_MEMBER_BYTES, TarReader
from tests.hostile import with_checksum


class CountingStream(io.RawIOBase):
    """A stream that counts what the reader took from it (the proof that it stopped early)."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.taken += len(data)
        return data


def header(name: str, size: int) -> bytes:
    member = tarfile.TarInfo(name)
    member.size = size
    return member.tobuf(tarfile.USTAR_FORMAT)


def base256(block: bytes, value: int) -> bytes:
    field = bytearray(value.to_bytes(12, "big", signed=True))
    field[0] |= 0x80
    return with_checksum(block[:124] + bytes(field) + block[136:])


def read_all(data: bytes) -> None:
    reader = TarReader(io.BytesIO(data))
    for _member in reader.members():
        for _chunk in reader.content():
            pass


TAIL = b"\x00" * (8 << 20)  # what a reader trusting a forged size would swallow


@pytest.mark.parametrize("size", [-1, -(1 << 60), MAX_MEMBER_BYTES + 1, 1 << 87])
def test_a_base256_size_out_of_range_is_refused_before_any_content_is_read(size):
    counted = CountingStream(base256(header("bundle.json", 0), size) + TAIL)
    reader = TarReader(counted)
    with pytest.raises(BundleError, match="outside 0"):
        next(reader.members())
    assert counted.taken == 512


@pytest.mark.parametrize("value", [b"-1", b"+1", b" 1", b"1_0", b"0x10", b"\xd9\xa1", b"", b"9" * 21])
def test_a_pax_size_that_is_not_plain_decimal_is_refused(value):
    record = b" size=" + value + b"\n"
    record = str(len(record) + len(str(len(record) + 2))).encode() + record
    pax = header("././@PaxHeader", len(record))
    pax = pax[:156] + b"x" + pax[157:]
    data = with_checksum(pax) + record + b"\x00" * (-len(record) % 512) + header("bundle.json", 0) + TAIL
    with pytest.raises(BundleError):
        read_all(data)


def test_a_huge_pax_size_is_refused():
    record = b" size=" + str(MAX_MEMBER_BYTES + 1).encode() + b"\n"
    record = str(len(record) + 2).encode() + record
    pax = header("././@PaxHeader", len(record))
    pax = with_checksum(pax[:156] + b"x" + pax[157:])
    with pytest.raises(BundleError, match="over the"):
        read_all(pax + record + b"\x00" * (-len(record) % 512) + header("bundle.json", 0) + TAIL)
