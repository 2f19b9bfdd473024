"""Fuzz the two parsers a hostile bundle reaches first: bundle.json and the tar reader.

`make fuzz` runs this with atheris for a bounded time (FUZZ_SECONDS, default 60).
The only acceptable outcomes for any input are a parsed value or a BundleError
(or TrustError); anything else is a crash the fuzzer reports. A third mode
puts the input into the size fields of a header and of a pax record, seeded
with negative, signed, non-decimal and huge values; the reader must never
take more than it is given a size for.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from bundle.errors import AirlockError
    from bundle.manifest import Manifest
    from bundle.tarstream import TarReader


# Header size fields (12 bytes: octal, or base-256 with the high bit) and pax size values.
SIZE_SEEDS = [
    b"\xff" * 12,  # base-256 -1
    b"\xff" + b"\x00" * 11,  # base-256, most negative
    b"\x80" + b"\xff" * 11,  # base-256, largest
    b"77777777777\x00",
    b"-1",
    b"+1",
    b" 1",
    b"1_000",
    b"9" * 40,
    b"0x10",
]


def pax_record(key: bytes, value: bytes) -> bytes:
    """`LEN key=value\\n`, where LEN counts its own digits too."""
    payload = b" " + key + b"=" + value + b"\n"
    length = len(payload) + len(str(len(payload)))
    if len(str(length)) != len(str(len(payload))):
        length += 1
    return str(length).encode() + payload


def size_probe(data: bytes) -> bytes:
    """A tar whose bundle.json header carries `data` as its size: the raw field (first byte even) or a pax size (odd)."""
    body = b"x" * 4096
    member = tarfile.TarInfo("bundle.json")
    member.size = len(body)
    if data[0] & 1:
        record = pax_record(b"size", data[1:200])
        pax = tarfile.TarInfo("././@PaxHeader")
        pax.size, pax.type = len(record), tarfile.XHDTYPE
        head = pax.tobuf(tarfile.USTAR_FORMAT) + record + b"\x00" * (-len(record) % 512) + member.tobuf(tarfile.USTAR_FORMAT)
    else:
        block = bytearray(member.tobuf(tarfile.USTAR_FORMAT))
        block[124:136] = data[1:13].ljust(12, b"\x00")
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\x00 " % sum(block)
        head = bytes(block)
    return head + body + b"\x00" * 2048


def write_seeds(corpus: Path) -> None:
    for number, value in enumerate(SIZE_SEEDS):
        for parity in (b"\x02", b"\x03"):  # mode 2 (third byte even: header field; odd: pax)
            (corpus / f"size-seed-{number}-{parity[0]}").write_bytes(b"\x02" + parity + value)


def read_all(stream) -> int:
    reader = TarReader(stream)
    taken = 0
    for header in reader.members():
        if header.size < 0:
            raise AssertionError(f"the reader gave a negative size {header.size}")
        for chunk in reader.content(4096):
            taken += len(chunk)
    return taken


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if data[0] % 3 == 2 and len(data) > 1:
        probe = size_probe(data[1:])
        try:
            taken = read_all(io.BytesIO(probe))
        except AirlockError:
            return
        if taken > len(probe):
            raise AssertionError("the reader returned more content than the stream held")
        return
    if data[0] & 1:
        try:
            Manifest.parse(data[1:])
        except AirlockError:
            pass
    else:
        try:
            read_all(io.BytesIO(data[1:]))
        except AirlockError:
            pass


def main() -> None:
    corpora = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-") and Path(arg).is_dir()]
    for corpus in corpora[:1]:
        write_seeds(corpus)
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
