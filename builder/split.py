"""Writing a bundle as parts for removable media, and splitting or joining one that exists.

`RollingFile` is the stream the tar writer writes into: it fills numbered
part files of at most `limit` bytes each, under temporary names, and renames
them into place only when the whole bundle is written. A member that
crosses a part boundary is cut there.

Parts are written with direct I/O from a few reused buffers
(builder/direct.py): while a buffer is written, one thread hashes it for its
part and a second for the whole stream (sha256 releases the GIL, so the two
use both cores). The parts list costs no read of what was written and no
memory that grows with the bundle.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from builder.direct import DirectWriter, HashLane
from builder.errors import BuildError
from builder.sidecars import NODE_INSTALLER
from builder.sign import SigningKey
from bundle.atomic import AtomicFile, create_temporary, identity, make_dirs, rename_into_place, write_atomic
from bundle.errors import NO_SPACE, no_space
from bundle.manifest import NODE_PYZ, REVIEW_MEMBERS
from bundle.parts import MAX_PARTS, SIGNATURE_SUFFIX, Part, PartsList, check_present, list_name, part_name, read_parts_list

WRITE_BUFFER = 4 << 20
PART_MODE = BUNDLE_MODE = 0o644
CHUNK = 1 << 20
# Let the hashing threads see written bytes at least this often when nothing else flushes.
PUBLISH_EVERY = 8 << 20
# Chunks read back for the part digest that wait for the whole digest's thread (bounded memory: 4 MiB).
WHOLE_QUEUE = 4

# Named sizes. fat32: a file must stay under 4 GiB; 4095 MiB (not 4 GiB - 1 byte) keeps parts a multiple of 4 KiB.
# dvd: single-layer DVD+R (2,295,104 sectors of 2048 bytes), the smaller of DVD+R and DVD-R. bd25: single-layer BD-R.
SIZE_NAMES = {"fat32": 4095 << 20, "dvd": 4_700_372_992, "bd25": 25_025_314_816}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^([0-9]+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """`3900M`, `4G`, `65536`, `64K` (K, M, G, T are powers of 1024) or a name: fat32, dvd, bd25."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        spoken = str(text).strip()
        if spoken.lower() in SIZE_NAMES:
            return SIZE_NAMES[spoken.lower()]
        match = _SIZE.match(spoken)
        if match is None:
            raise BuildError(f"size {text!r}: give bytes (65536), K/M/G/T (3900M, 4G) or one of {', '.join(SIZE_NAMES)}")
        value = int(match[1]) * _UNITS[match[2].upper()]
    if value < 1:
        raise BuildError(f"size {text!r}: a part must hold at least one byte")
    return value


@dataclass
class _Piece:
    final: Path
    temporary: Path
    identity: tuple[int, int]  # device and inode of the temporary: the file the rename must keep
    size: int = 0


@dataclass(frozen=True)
class Written:
    """The files written, in order, with their sizes and sha256, and the size and sha256 of the whole stream."""

    files: tuple[Part, ...]
    size: int
    sha256: str
    paths: tuple[Path, ...] = field(default=())


class RollingFile:
    """A write-only stream over numbered parts of at most `limit` bytes (or one file when `limit` is None), hashed as it fills."""

    def __init__(self, output: Path, limit: int | None):
        self._output = output
        self._limit = limit
        self.pieces: list[_Piece] = []
        self._descriptor: int | None = None
        self._writer: DirectWriter | None = None
        self._room = 0
        self._whole = HashLane("bundle-hash")
        self._part: HashLane | None = None
        self._digests: list[str] = []

    def _next_piece(self) -> None:
        self._close_piece()
        number = len(self.pieces) + 1
        if self._limit is None:
            final = self._output
        else:
            if number > MAX_PARTS:
                raise BuildError(f"a part size of {self._limit} bytes makes more than {MAX_PARTS} parts; choose a larger size")
            final = self._output.with_name(part_name(self._output.name, number))
        make_dirs(final.parent)
        self._descriptor, temporary = create_temporary(final)
        self.pieces.append(_Piece(final, temporary, identity(self._descriptor)))
        self._part = HashLane("part-hash") if self._limit is not None else None
        self._writer = DirectWriter(self._descriptor, lanes=(self._whole, self._part) if self._part else (self._whole,))
        self._room = self._limit if self._limit is not None else 1 << 62

    def _close_piece(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        os.fchmod(self._descriptor, PART_MODE)
        os.fsync(self._descriptor)
        os.close(self._descriptor)
        self._descriptor = None
        if self._part is not None:
            self._digests.append(self._part.finish())
            self._part = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._writer is None or self._room == 0:
                self._next_piece()
            count = min(len(view), self._room)
            self._writer.write(view[:count])
            self.pieces[-1].size += count
            self._room -= count
            view = view[count:]
        return len(data)

    def copy_from(self, source_fd: int, count: int) -> int:
        """Read up to `count` bytes from `source_fd` into the current part (fewer at a part boundary)."""
        if self._writer is None or self._room == 0:
            self._next_piece()
        copied = self._writer.copy_from(source_fd, min(count, self._room))
        self.pieces[-1].size += copied
        self._room -= copied
        return copied

    def finish(self) -> Written:
        """Close the last part, wait for the hashes, and rename every part into place."""
        self._close_piece()
        whole = self._whole.finish()
        digests = self._digests if self._limit is not None else [whole]
        files = tuple(Part(piece.final.name, piece.size, digest) for piece, digest in zip(self.pieces, digests, strict=True))
        for piece in self.pieces:
            rename_into_place(piece.temporary, piece.final, piece.identity)
        if self._limit is not None:
            # Parts of an earlier, longer split under the same name would be refused as extra parts: remove them.
            pattern = re.compile(re.escape(self._output.name) + r"\.part[0-9]+$")
            keep = {piece.final.name for piece in self.pieces}
            for stale in self._output.parent.iterdir():
                if pattern.match(stale.name) and stale.name not in keep:
                    stale.unlink()
        return Written(files, sum(piece.size for piece in self.pieces), whole, tuple(piece.final for piece in self.pieces))

    def abort(self) -> None:
        """Drop every part written so far (nothing appears under a final name)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        for lane in (self._whole, self._part):
            if lane is not None:
                lane.stop()
        for piece in self.pieces:
            piece.temporary.unlink(missing_ok=True)


def write_parts_list(output: Path, written: Written, part_size: int, key: SigningKey | None) -> Path:
    """Write `NAME.parts.json` beside the parts and, with a key, `NAME.parts.json.sig` (signed like bundle.json)."""
    listing = PartsList(output.name, written.size, written.sha256, part_size, written.files)
    data = listing.to_json()
    PartsList.parse(data, "the parts list being written")
    path = output.with_name(list_name(output.name))
    signature = path.with_name(path.name + SIGNATURE_SUFFIX)
    if key is not None:
        write_atomic(signature, key.sign(data), 0o644)
    else:
        signature.unlink(missing_ok=True)
    write_atomic(path, data, 0o644)
    return path


class _Tee:
    """A read stream that also writes every byte it returns into `sink`."""

    def __init__(self, source, sink: RollingFile):
        self._source = source
        self._sink = sink

    def read(self, count: int = -1) -> bytes:
        data = self._source.read(count if count is not None and count >= 0 else CHUNK)
        if data:
            self._sink.write(data)
        return data


@dataclass(frozen=True)
class Split:
    written: Written
    listing: Path
    verified: object | None  # bundle.verify.Verified when the bundle was checked under the signing key
    members: dict[str, bytes]  # its review members (api-versions.json, sbom.spdx.json, vulnerabilities.json) when verified
    node_pyz: Part | None = None  # the node installer written beside the parts (its signed sha256), when the bundle carries it


class _Keep:
    """Keeps a (small) member in memory."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data.extend(data)

    def done(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Beside:
    """Writes a member to a file of its own; it is put in place by `commit` once the whole split has succeeded."""

    def __init__(self, path: Path, mode: int):
        self._file = AtomicFile(path, mode)
        self.checked = False

    def write(self, data: bytes) -> None:
        self._file.handle.write(data)

    def done(self) -> None:
        self.checked = True  # the member hashed to what the signed bundle.json lists

    def abort(self) -> None:
        self.discard()

    def commit(self) -> None:
        self._file.commit()

    def discard(self) -> None:
        if not self._file.handle.closed:
            self._file.discard()


def split_bundle(bundle: Path, out_dir: Path, part_size: int, key: SigningKey | None, origin: str = "--sign-key") -> Split:
    """Split `bundle` into parts in `out_dir` in one streamed pass.

    With `key`, the pass also verifies the bundle under that key's public half
    (a parts list is only signed for a bundle the same key signed), keeps
    the SBOM member for the sidecars and writes the node installer it carries
    beside the parts as `airlock-node.pyz`, as `airlock build` does.
    """
    from bundle.source import TarSource
    from bundle.trust import TrustedKey
    from bundle.verify import verify_stream

    bundle = Path(bundle)
    if bundle.name.endswith(".zst"):
        raise BuildError(f"{bundle}: split a .tar bundle; decompress this one first (zstd -d {bundle.name})")
    if not bundle.is_file():
        raise BuildError(f"{bundle}: no such bundle file")
    make_dirs(out_dir)
    output = out_dir / bundle.name
    rolling = RollingFile(output, part_size)
    verified = None
    review = {name: _Keep() for name in REVIEW_MEMBERS}
    node_pyz: list[_Beside] = []

    def sink(entry):
        if entry.path in review:
            return review[entry.path]
        if entry.path == NODE_PYZ:
            node_pyz.append(_Beside(out_dir / NODE_INSTALLER, 0o755))
            return node_pyz[-1]
        return None

    try:
        with open(bundle, "rb", buffering=WRITE_BUFFER) as source:
            if key is None:
                while data := source.read(CHUNK):
                    rolling.write(data)
            else:
                trusted = TrustedKey(key.key_id, key.algorithm, key.private_key.public_key(), origin)
                verified = verify_stream(TarSource(_Tee(source, rolling), str(bundle)), [trusted], sink=sink)
        written = rolling.finish()
    except BaseException as error:
        rolling.abort()
        for beside in node_pyz:
            beside.discard()
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            raise no_space(out_dir, bundle.stat().st_size) from None
        raise
    beside = None
    if node_pyz and node_pyz[0].checked:
        node_pyz[0].commit()
        entry = next(entry for entry in verified.manifest.files if entry.path == NODE_PYZ)
        beside = Part(NODE_INSTALLER, entry.size, entry.sha256)
    return Split(written, write_parts_list(output, written, part_size, key), verified, {name: bytes(kept.data) for name, kept in review.items()} if verified else {}, beside)


def join_parts(listing_path: Path, output: Path, keys: list | None = None) -> Written:
    """Write the bundle the parts list describes into `output`, checking every part and the whole on the way."""
    from bundle.parts import PartsReader

    listing = read_parts_list(listing_path, keys)
    check_present(listing, listing_path.parent)
    digest = hashlib.sha256()
    reader = PartsReader(listing, listing_path.parent)
    try:
        with AtomicFile(output, BUNDLE_MODE, buffering=WRITE_BUFFER) as handle:
            while data := reader.read(CHUNK):
                digest.update(data)
                handle.write(data)
            if digest.hexdigest() != listing.sha256:
                raise BuildError(f"{listing_path.name}: the joined parts hash to {digest.hexdigest()}, not the listed {listing.sha256}")
    except OSError as error:
        if error.errno in NO_SPACE:
            raise no_space(output.parent, listing.size) from None
        raise
    finally:
        reader.close()
    return Written((Part(output.name, listing.size, listing.sha256),), listing.size, listing.sha256, (output,))
