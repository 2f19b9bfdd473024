"""Writing a bundle as parts for removable media, and splitting or joining one that exists.

`RollingFile` is the stream the tar writer writes into: it fills numbered
part files of at most `limit` bytes each, under temporary names, and renames
them into place only when the whole bundle is written. Member data that
falls inside one part is still copied by the kernel (copy_file_range); a
member that crosses a boundary is cut there. Part offsets are offsets in the
whole stream minus a multiple of the part size, so with a part size that is
a multiple of 4 KiB the 4 KiB alignment of member data holds in every part.

One thread reads back what has been written (from the page cache, once) and
hashes it per part; a second hashes the same chunks as one stream for the
whole (sha256 releases the GIL, so the two use both cores). The parts list
costs no second read of the bundle and no memory that grows with it.

`WriteBehind` starts the disk writes of a file while it is still being
written, so the sync before the rename waits for the last few MiB rather
than for the whole bundle.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError
from builder.sidecars import NODE_INSTALLER
from builder.sign import SigningKey
from bundle.atomic import AtomicFile, create_temporary, identity, make_dirs, rename_into_place, write_atomic
from bundle.errors import NO_SPACE, WriteError, no_space
from bundle.manifest import NODE_PYZ, REVIEW_MEMBERS
from bundle.parts import MAX_PARTS, SIGNATURE_SUFFIX, Part, PartsList, check_present, list_name, part_name, read_parts_list

WRITE_BUFFER = 4 << 20
PART_MODE = BUNDLE_MODE = 0o644
CHUNK = 1 << 20
# Let the hashing threads see written bytes at least this often when nothing else flushes.
PUBLISH_EVERY = 8 << 20
# Chunks read back for the part digest that wait for the whole digest's thread (bounded memory: 4 MiB).
WHOLE_QUEUE = 4
# WriteBehind: how much written data may wait in the page cache before its disk write is started, and how often to look.
WRITE_BEHIND_BYTES = 32 << 20
WRITE_BEHIND_POLL = 0.05

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
    identity: tuple[int, int]  # device and inode of the temporary: the file the followers read and the rename must keep
    size: int = 0
    published: int = 0
    closed: bool = False


@dataclass(frozen=True)
class Written:
    """The files written, in order, with their sizes and sha256, and the size and sha256 of the whole stream."""

    files: tuple[Part, ...]
    size: int
    sha256: str
    paths: tuple[Path, ...] = field(default=())


class _Follower(threading.Thread):
    """Reads back the pieces in order as they are published, once: hashes each piece, and hands the same
    chunks to `_WholeHash` for the sha256 of the whole stream (a bundle that is one file needs only that)."""

    def __init__(self, rolling: RollingFile, per_piece: bool):
        super().__init__(name="part-hash", daemon=True)
        self._rolling = rolling
        self._per_piece = per_piece
        self._whole = _WholeHash() if per_piece else None
        self.digests: list[str] = []
        self.whole = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        rolling = self._rolling
        index = offset = 0
        descriptor = None
        digest = hashlib.sha256()
        try:
            while True:
                with rolling.changed:
                    while not (index < len(rolling.pieces) and (rolling.pieces[index].published > offset or rolling.pieces[index].closed)):
                        if rolling.stopped or (rolling.finished and index >= len(rolling.pieces)):
                            self.whole = self._whole.finish() if self._whole is not None else digest.hexdigest()
                            return
                        rolling.changed.wait()
                    piece = rolling.pieces[index]
                    end, closed = piece.published, piece.closed
                if descriptor is None:
                    descriptor = os.open(piece.temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    if identity(descriptor) != piece.identity:
                        raise WriteError(f"{piece.temporary}: replaced by another file while airlock wrote it; write into a directory only you can write")
                while offset < end:
                    data = os.pread(descriptor, min(CHUNK, end - offset), offset)
                    if not data:
                        raise BuildError(f"{piece.temporary}: shorter than what was written to it")
                    if self._whole is not None:
                        self._whole.update(data)
                    digest.update(data)
                    offset += len(data)
                if closed:
                    os.close(descriptor)
                    descriptor = None
                    if self._per_piece:
                        self.digests.append(digest.hexdigest())
                        digest = hashlib.sha256()
                    index, offset = index + 1, 0
        except BaseException as error:  # handed to the writing thread by finish()
            self.error = error
        finally:
            if descriptor is not None:
                os.close(descriptor)
            if self._whole is not None:
                self._whole.close()


class _WholeHash:
    """The sha256 of the whole stream, on a thread of its own, from the chunks the part hasher already read."""

    def __init__(self):
        self._chunks: queue.Queue[bytes | None] = queue.Queue(WHOLE_QUEUE)
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="bundle-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def finish(self) -> str:
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()


class WriteBehind:
    """Starts the disk writes of a file being written, on a thread of its own, whenever another
    WRITE_BEHIND_BYTES have been added to it: the writer never waits for them, and the sync before the
    file is renamed into place waits only for what came last, not for the whole file at the end.

    Use as a context manager around the writing; the file must stay open until it has ended. Errors are left
    to the final sync, which sees them too.
    """

    def __init__(self, descriptor: int):
        self._descriptor = descriptor
        self._stop = threading.Event()
        self.started = 0  # how many times writes were started (tests)
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        synced = 0
        while not self._stop.wait(WRITE_BEHIND_POLL):
            try:
                size = os.fstat(self._descriptor).st_size
                if size - synced >= WRITE_BEHIND_BYTES:
                    os.fdatasync(self._descriptor)
                    synced = size
                    self.started += 1
            except OSError:
                return  # the final sync reports it


class RollingFile:
    """A write-only stream over numbered parts of at most `limit` bytes (or one file when `limit` is None), hashed as it fills."""

    def __init__(self, output: Path, limit: int | None):
        self._output = output
        self._limit = limit
        self.pieces: list[_Piece] = []
        self.changed = threading.Condition()
        self.finished = self.stopped = False
        self._handle = None
        self._room = 0
        self._unpublished = 0
        self._behind: WriteBehind | None = None
        self._follower = _Follower(self, per_piece=limit is not None)
        self._follower.start()

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
        descriptor, temporary = create_temporary(final)
        self._handle = os.fdopen(descriptor, "wb", buffering=WRITE_BUFFER)
        self._behind = WriteBehind(descriptor).__enter__()
        with self.changed:
            self.pieces.append(_Piece(final, temporary, identity(descriptor)))
            self.changed.notify_all()
        self._room = self._limit if self._limit is not None else 1 << 62

    def _publish(self) -> None:
        self._handle.flush()
        self._unpublished = 0
        with self.changed:
            self.pieces[-1].published = self.pieces[-1].size
            self.changed.notify_all()

    def _close_piece(self) -> None:
        if self._handle is None:
            return
        self._handle.flush()
        self._behind.stop()
        os.fchmod(self._handle.fileno(), PART_MODE)
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        with self.changed:
            piece = self.pieces[-1]
            piece.published, piece.closed = piece.size, True
            self.changed.notify_all()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._handle is None or self._room == 0:
                self._next_piece()
            count = min(len(view), self._room)
            self._handle.write(view[:count])
            self.pieces[-1].size += count
            self._room -= count
            self._unpublished += count
            view = view[count:]
        if self._unpublished >= PUBLISH_EVERY:
            self._publish()
        return len(data)

    def flush(self) -> None:
        if self._handle is not None:
            self._publish()

    def copy_from(self, source_fd: int, count: int) -> int:
        """Kernel-copy up to `count` bytes from `source_fd` into the current part (fewer at a part boundary)."""
        if self._handle is None or self._room == 0:
            self._next_piece()
        self._publish()
        copied = os.copy_file_range(source_fd, self._handle.fileno(), min(count, self._room))
        self.pieces[-1].size += copied
        self._room -= copied
        with self.changed:
            self.pieces[-1].published = self.pieces[-1].size
            self.changed.notify_all()
        return copied

    def _stop(self) -> None:
        with self.changed:
            self.finished = True
            self.changed.notify_all()
        self._follower.join()

    def finish(self) -> Written:
        """Close the last part, wait for the hashes, and rename every part into place."""
        self._close_piece()
        self._stop()
        if self._follower.error is not None:
            raise BuildError(f"hashing {self._output.name} while writing it failed: {self._follower.error}")
        whole = self._follower.whole
        digests = self._follower.digests if self._limit is not None else [whole]
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
        if self._handle is not None:
            self._behind.stop()
            self._handle.close()
            self._handle = None
        with self.changed:
            self.stopped = True
            self.changed.notify_all()
        self._stop()
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
