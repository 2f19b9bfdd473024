"""Where bundle bytes come from: one interface, three kinds of source.

Every source hands out the signed head first (bundle.json and its signature, not yet trusted), then the
members bundle.json lists, each as a `Delivery`: the path and size the source claims, and `fill(sink)`,
which puts the member's bytes into the sink the verifier gives it (bundle/verify.py `verify_stream`).
The verifier alone decides what is acceptable; a source only moves bytes.

- `TarSource`: a bundle file (`.tar`, or `.tar.zst` through the zstd program), or any tar stream, read once
  in order. Being a stream, it may hold what bundle.json does not list; the verifier refuses that.
- `PartsSource`: a split bundle, its parts read as one tar stream (the parts list's signature checked first).
- installer/remote.py `RegistrySource`: the bundle artifact in a registry; members fetched by the digest
  bundle.json names, only those asked for, several at a time, resumed after a break.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from bundle.errors import BundleError
from bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, FileEntry
from bundle.parts import PartsReader, locate, open_parts
from bundle.tarstream import MemberSizeError, TarReader

READ_BUFFER = 4 << 20
BLOCK_SIZE = 512
# What a stream hands the verifier at a time: each chunk crosses to the hash and write lanes (bundle/verify.py), so
# fewer, larger ones cost fewer thread switches.
DELIVERY_CHUNK = 4 << 20


class Sink(Protocol):
    """What a source fills: the verifier's writer for one member (hashes, counts, passes the bytes on)."""

    size: int  # bytes it holds (an interrupted earlier run's included)

    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """One member as a source offers it: the path and size it claims, and how to get its bytes."""

    path: str
    size: int
    fill: Callable[[Sink], None]


class Source(Protocol):
    streamed: bool  # True: every member arrives, in the source's order (a tar); False: only the members asked for, by digest
    parallel: int  # how many members `verify_stream` may take at once (a stream: one)

    def describe(self) -> str: ...
    def signed_head(self) -> tuple[bytes, bytes]: ...
    def deliveries(self, wanted: list[FileEntry]) -> Iterator[Delivery]: ...
    def mismatch(self, entry: FileEntry) -> str: ...


def read_signed_head(reader: TarReader) -> tuple[bytes, bytes]:
    """Read the first two members, which must be bundle.json and its signature."""
    members = reader.members()
    try:
        first = next(members, None)
    except BundleError as error:
        if reader.offset > BLOCK_SIZE or isinstance(error, MemberSizeError):  # a tar, damaged or forged after its first header's checksum
            raise
        raise BundleError("not an airlock bundle: it does not start with a tar header; a bundle is the .tar or .tar.zst that `airlock build` wrote") from None
    if first is None or first.path != MANIFEST_NAME:
        found = f"its first member is {first.path}" if first else "it holds no members"
        raise BundleError(f"not an airlock bundle: {found}, and a bundle starts with {MANIFEST_NAME}")
    if first.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"is {first.size} bytes, over the {MAX_MANIFEST_BYTES} byte cap", MANIFEST_NAME)
    manifest_bytes = b"".join(reader.content())
    second = next(members, None)
    if second is None or second.path != SIGNATURE_NAME:
        raise BundleError(f"the second member must be {SIGNATURE_NAME}, found {second.path if second else 'nothing'}")
    if second.size > MAX_SIGNATURE_BYTES:
        raise BundleError(f"is {second.size} bytes, over the {MAX_SIGNATURE_BYTES} byte cap", SIGNATURE_NAME)
    return manifest_bytes, b"".join(reader.content())


class TarSource:
    """A bundle as one tar stream, read once: the signed head, then every member in the stream's order."""

    streamed = True
    parallel = 1

    def __init__(self, stream: BinaryIO, what: str = "the bundle", seek: bool = False):
        self._reader = TarReader(stream, seek=seek)  # seek: members not filled are skipped by seeking (inspect's partial read)
        self._what = what
        self._head: tuple[bytes, bytes] | None = None

    def describe(self) -> str:
        return self._what

    def signed_head(self) -> tuple[bytes, bytes]:
        if self._head is None:
            self._head = read_signed_head(self._reader)
        return self._head

    def deliveries(self, wanted: list[FileEntry]) -> Iterator[Delivery]:
        """Every member the stream holds after the head, listed or not (a stream cannot skip: `wanted` does not narrow it)."""
        self.signed_head()
        for header in self._reader.members():
            yield Delivery(header.path, header.size, self._fill)

    def _fill(self, sink: Sink) -> None:
        for chunk in self._reader.content(DELIVERY_CHUNK):
            sink.write(chunk)

    def mismatch(self, entry: FileEntry) -> str:
        return ""


class PartsSource(TarSource):
    """A split bundle: its parts, each checked against the signed parts list as it is read, as one tar stream."""

    def __init__(self, reader: PartsReader, listing: Path):
        super().__init__(reader, f"{listing} ({len(reader.listing.parts)} parts)")


@contextmanager
def open_bundle(path: Path, keys: list | None = None) -> Iterator[BinaryIO]:
    """Open a `.tar` directly, or a `.tar.zst` through the zstd program, as one stream.

    A split bundle's parts list (or its first part) opens as one stream over
    the parts; with `keys`, the parts list's signature is checked first.
    """
    path = Path(path)
    listing = locate(path)
    if listing is not None:
        with open_parts(listing, keys) as stream:
            yield stream
        return
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise BundleError(f"{path}: reading .tar.zst needs the zstd program; install it or pass the .tar")
        process = subprocess.Popen(["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE, bufsize=READ_BUFFER)
        try:
            yield process.stdout
        finally:
            process.stdout.close()
            process.kill()
            process.wait()
    else:
        with open(path, "rb", buffering=READ_BUFFER) as handle:
            yield handle


@contextmanager
def open_source(path: Path, keys: list | None = None) -> Iterator[TarSource]:
    """The source for a bundle file or a split bundle's parts list (or first part); see `open_bundle`."""
    path = Path(path)
    with open_bundle(path, keys) as stream:
        yield PartsSource(stream, locate(path)) if isinstance(stream, PartsReader) else TarSource(stream, str(path))
