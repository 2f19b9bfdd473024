"""Split bundles: the signed parts list, and a reader that presents the parts as one stream.

A bundle `k8s.tar` split for removable media is `k8s.tar.part001`, `k8s.tar.part002`, …
(`cat` of them is the bundle, byte for byte) plus `k8s.parts.json`, which names
every part with its size and sha256 and the size and sha256 of the whole,
and `k8s.parts.json.sig`, signed like bundle.json.

`open_parts` checks the list's signature with the trusted keys and every
part's presence and size before the first byte is read, then `PartsReader`
hashes each part while the caller streams through it and refuses the part,
by file name, the moment its last byte does not match. An error the caller
finds first (a bad member, a corrupt header) is traced back to its part when
that part is the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bundle import smallfile
from bundle.errors import AirlockError, PartsError, TrustError
from bundle.manifest import MAX_SIGNATURE_BYTES, canonical_json, is_hex_digest

SCHEMA = "airlock.parts/v1"
LIST_SUFFIX = ".parts.json"
SIGNATURE_SUFFIX = ".sig"
# Three digits keep `cat NAME.tar.part*` in order; a split that needs more parts is refused when it is made.
MAX_PARTS = 999
MAX_LIST_BYTES = 1 << 20
CHUNK = 1 << 20
_PART_NAME = re.compile(r"^(?P<bundle>.+)\.part(?P<number>[0-9]{3})$")


def part_name(bundle: str, number: int) -> str:
    """The file name of part `number` (from 1) of the bundle file `bundle`."""
    return f"{bundle}.part{number:03d}"


def list_name(bundle: str) -> str:
    """`k8s.tar` -> `k8s.parts.json` (a `.tar` ending is dropped)."""
    return (bundle[: -len(".tar")] if bundle.endswith(".tar") else bundle) + LIST_SUFFIX


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsList:
    """What `NAME.parts.json` says: the bundle's file name, size and sha256, and its parts in order."""

    bundle: str
    size: int
    sha256: str
    part_size: int
    parts: tuple[Part, ...]
    schema: str = SCHEMA

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, no whitespace): what gets signed."""
        return canonical_json(
            {
                "schema": self.schema,
                "bundle": self.bundle,
                "size": self.size,
                "sha256": self.sha256,
                "part_size": self.part_size,
                "parts": [{"name": part.name, "size": part.size, "sha256": part.sha256} for part in self.parts],
            }
        )

    @classmethod
    def parse(cls, data: bytes, where: str) -> PartsList:
        """Parse and check a parts list; raise PartsError naming the problem and `where`."""
        if len(data) > MAX_LIST_BYTES:
            raise PartsError(f"is {len(data)} bytes, over the {MAX_LIST_BYTES} byte cap of a parts list", where)
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PartsError(f"is not a JSON parts list: {error}", where) from None

        def need(holder: object, key: str, kind: type, label: str = ""):
            value = holder.get(key) if isinstance(holder, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise PartsError(f"field {label}{key} is missing or not {kind.__name__}", where)
            return value

        if need(document, "schema", str) != SCHEMA:
            raise PartsError(f"has schema {document['schema']!r}; this airlock reads {SCHEMA!r} only", where)
        bundle = need(document, "bundle", str)
        if not bundle or "/" in bundle or "\\" in bundle or "\x00" in bundle or bundle.startswith("."):
            raise PartsError(f"names the bundle {bundle!r}, which is not a plain file name", where)
        size, sha256, part_size = need(document, "size", int), need(document, "sha256", str), need(document, "part_size", int)
        raw_parts = need(document, "parts", list)
        if not 1 <= len(raw_parts) <= MAX_PARTS or part_size < 1 or not is_hex_digest(sha256):
            raise PartsError(f"needs 1 to {MAX_PARTS} parts, a positive part_size and a sha256 of 64 hex digits", where)
        parts = []
        for number, raw in enumerate(raw_parts, start=1):
            label = f"parts[{number - 1}]."
            part = Part(need(raw, "name", str, label), need(raw, "size", int, label), need(raw, "sha256", str, label))
            if part.name != part_name(bundle, number):
                raise PartsError(f"lists {part.name!r} as part {number}; expected {part_name(bundle, number)!r}", where)
            last = number == len(raw_parts)
            if not is_hex_digest(part.sha256) or not (0 < part.size <= part_size) or (not last and part.size != part_size):
                raise PartsError(f"lists {part.name} with a bad sha256 or size (every part but the last is {part_size} bytes)", where)
            parts.append(part)
        if sum(part.size for part in parts) != size:
            raise PartsError(f"says the bundle is {size} bytes but its parts add up to {sum(p.size for p in parts)}", where)
        return cls(bundle, size, sha256, part_size, tuple(parts))


def locate(path: Path) -> Path | None:
    """The parts list for `path` when it is a parts list or the first part, else None (a plain bundle).

    Any other part is refused: reading must start at the beginning.
    """
    path = Path(path)
    if path.name.endswith(LIST_SUFFIX):
        return path
    match = _PART_NAME.match(path.name)
    if match is None:
        return None
    if int(match["number"]) != 1:
        raise PartsError(f"is part {int(match['number'])} of a split bundle; pass the first part or {list_name(match['bundle'])}", path.name)
    listing = path.with_name(list_name(match["bundle"]))
    if not os.path.lexists(listing):  # what is there is read (and judged) by read_parts_list
        raise PartsError(f"is the first part of a split bundle, but its parts list {listing.name} is not beside it; copy it from the media", path.name)
    return listing


def read_small_file(path: Path, cap: int, what: str, where: str) -> bytes:
    """bundle.smallfile's bounded read, never through a link; a refusal names the file and says to copy it beside the parts."""
    try:
        return smallfile.read_small_file(path, cap, what, follow_links=False)
    except smallfile.SmallFileError as error:
        hint = f"; copy the {what} itself beside the parts" if error.special else ""
        raise PartsError(f"{error}{hint}", where) from None


def read_parts_list(listing: Path, keys: list | None) -> PartsList:
    """Read `listing`; with `keys`, its signature (`listing.sig`) must verify under one of them first.

    Both are read bounded (read_small_file) before anything is parsed or checked.
    """
    from bundle.trust import verify_signature

    data = read_small_file(listing, MAX_LIST_BYTES, "parts list", listing.name)
    if keys is not None:
        signature_path = listing.with_name(listing.name + SIGNATURE_SUFFIX)
        if not os.path.lexists(signature_path):
            raise TrustError(f"{signature_path.name}: missing; a parts list is only trusted with its signature beside it")
        signature = read_small_file(signature_path, MAX_SIGNATURE_BYTES, "signature", signature_path.name)
        try:
            verify_signature(data, signature, keys)
        except TrustError:
            names = ", ".join(key.origin for key in keys)
            raise TrustError(
                f"{signature_path.name}: the signature does not match {listing.name} under any trusted key ({names}); "
                "the parts list was altered or signed by a key you have not trusted"
            ) from None
    return PartsList.parse(data, listing.name)


def check_present(listing: PartsList, directory: Path) -> None:
    """Every listed part is beside the list with its listed size, and no unlisted part is."""
    listed = {part.name for part in listing.parts}
    for part in listing.parts:
        path = directory / part.name
        try:
            size = path.stat().st_size
        except OSError:
            raise PartsError(
                f"missing; the signed parts list names {len(listing.parts)} parts, copy every one into {directory}", part.name
            ) from None
        if size != part.size:
            other = _holds_another_part(path, size, listing, part)
            if other is not None:
                raise PartsError(f"holds the bytes of {other} (parts swapped or renamed); put each part under its own name", part.name)
            kind = "truncated" if size < part.size else "too long"
            raise PartsError(f"is {size} bytes but the signed parts list says {part.size} ({kind}); copy it again", part.name)
    for found in sorted(directory.iterdir()):
        match = _PART_NAME.match(found.name) or re.match(r"^(?P<bundle>.+)\.part[0-9]+$", found.name)
        if match and match["bundle"] == listing.bundle and found.name not in listed:
            raise PartsError(f"is not in the signed parts list ({len(listing.parts)} parts); remove it, it belongs to another split", found.name)


def _holds_another_part(path: Path, size: int, listing: PartsList, part: Part) -> str | None:
    """The name of the listed part whose bytes `path` holds (a swap with the smaller last part), or None.

    Only on the way to an error, and only when the size is some other part's: then the file is hashed once.
    """
    candidates = [other for other in listing.parts if other is not part and other.size == size]
    if not candidates:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return next((other.name for other in candidates if other.sha256 == digest.hexdigest()), None)


class _PartHasher:
    """Hashes the bytes handed to it on a thread of its own, so a part's sha256 costs no time on the reading thread."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._results: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="part-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        digest = hashlib.sha256()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, bytes):
                digest.update(item)
            else:
                self._results.put(digest.hexdigest())
                digest = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def finish(self) -> str:
        """The sha256 of everything given since the last finish."""
        self._queue.put(False)
        return self._results.get()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class PartsReader:
    """A read-only stream over the parts in order; each part is checked against the list as its last byte is read."""

    def __init__(self, listing: PartsList, directory: Path):
        self.listing = listing
        self._directory = directory
        self._index = -1
        self._handle = None
        self._left = 0
        self._hasher = _PartHasher()
        self._checked = -1

    def _advance(self) -> bool:
        if self._index + 1 >= len(self.listing.parts):
            return False
        self._index += 1
        part = self.listing.parts[self._index]
        try:
            self._handle = open(self._directory / part.name, "rb", buffering=0)
        except OSError as error:
            raise PartsError(f"cannot be opened: {error.strerror}", part.name) from None
        self._left = part.size
        return True

    def _finish_part(self) -> None:
        part = self.listing.parts[self._index]
        extra = self._handle.read(1)
        self._handle.close()
        self._handle = None
        actual = self._hasher.finish()
        if extra:
            raise PartsError(f"is longer than the {part.size} bytes the signed parts list says; copy it again", part.name)
        self._checked = self._index
        if actual != part.sha256:
            raise PartsError(self._mismatch(part, actual), part.name)

    def _mismatch(self, part: Part, actual: str) -> str:
        other = next((p.name for p in self.listing.parts if p.sha256 == actual and p is not part), None)
        if other is not None:
            return f"holds the bytes of {other} (parts swapped or renamed); put each part under its own name"
        return f"sha256 is {actual} but the signed parts list says {part.sha256}; the part was altered or damaged, copy it again"

    def read(self, count: int = -1) -> bytes:
        if count == 0:
            return b""  # a read of nothing (padding after a member that fills whole blocks) is not an end of the part
        while self._left == 0:
            if not self._advance():
                return b""
        want = min(CHUNK if count is None or count < 0 else count, self._left, CHUNK)
        data = self._handle.read(want)
        if not data:
            part = self.listing.parts[self._index]
            raise PartsError(f"ends after {part.size - self._left} of its {part.size} bytes (truncated while being read)", part.name)
        self._left -= len(data)
        self._hasher.update(data)
        if self._left == 0:
            # The part's last byte was read: check the part now, before these bytes reach the caller.
            self._finish_part()
        return data

    def blame(self, error: AirlockError) -> None:
        """Raise PartsError naming the current part if its bytes differ from the list (the cause of `error`)."""
        if isinstance(error, PartsError) or self._handle is None or self._checked == self._index:
            return
        while self._left:
            data = self._handle.read(min(CHUNK, self._left))
            if not data:
                return
            self._left -= len(data)
            self._hasher.update(data)
        self._finish_part()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._hasher.close()


@contextmanager
def open_parts(listing_path: Path, keys: list | None) -> Iterator[PartsReader]:
    """The parts named by `listing_path` as one stream; with `keys`, the list's signature is checked first.

    An AirlockError raised inside the block becomes a PartsError naming the
    part that was being read when that part does not match the list.
    """
    listing = read_parts_list(listing_path, keys)
    check_present(listing, listing_path.parent)
    reader = PartsReader(listing, listing_path.parent)
    try:
        yield reader
    except AirlockError as error:
        reader.blame(error)
        raise
    finally:
        reader.close()


def total_size(path: Path) -> int:
    """Bytes of the bundle at `path`: the file's size, or the whole a parts list describes."""
    listing = locate(path)
    if listing is None:
        return Path(path).stat().st_size if Path(path).is_file() else 0
    return read_parts_list(listing, None).size
