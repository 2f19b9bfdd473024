"""The file a bundle (or one of its parts) is written into, in the cheapest way its file system allows.

Where the cache and the bundle share a file system that can share extents
(XFS, btrfs), the kernel's file copy shares the cached blobs' blocks: the
bytes are neither copied nor written again (`KernelCopyWriter`).

Everywhere else a kernel copy copies every byte into new page-cache pages
and the disk writes them back later: on ext4 a bundle then costs as much
fresh memory as it is large, on top of the cache's copy, and the final sync
waits for all of it. `DirectWriter` instead reads each blob into a few
page-aligned buffers that are used over and over and writes them with direct
I/O (O_DIRECT) on a thread of its own: the disk takes the bytes straight
from the buffers, the page cache is not touched, and the sync before the
rename has nothing left to wait for. A file system that refuses direct I/O
(or its alignment) gets ordinary writes, the same bytes.

The tar writer writes headers and small members with `write(bytes)`, and
member data read from the cache with a DirectWriter's `copy_from(descriptor,
count)` or, into a KernelCopyWriter's file, with its own kernel copy. A DirectWriter's `HashLane`s see every byte written, in order, while
it is still in memory: the parts of a split bundle and the whole stream are
hashed from there, on threads of their own, with no second read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from bundle.atomic import create_temporary

# Direct I/O moves whole logical blocks from aligned memory; 4 KiB covers the devices of every supported file system.
ALIGN = 4096
BUFFER = 4 << 20
# Buffers: one being filled, the others being written or hashed (16 MiB whatever the bundle's size).
BUFFERS = 4
# WriteBehind (KernelCopyWriter): how much written data may wait in the page cache before its disk write is started.
WRITE_BEHIND_BYTES = 32 << 20
WRITE_BEHIND_POLL = 0.05
WRITE_BUFFER = 4 << 20
# ioctl FICLONE (linux/fs.h): make one file share another's extents.
FICLONE = 0x40049409


def shares_extents(directory: Path) -> bool:
    """Whether files in `directory` can share extents (one file cloned into another by the kernel)."""
    made: list[tuple[int, Path]] = []
    try:
        for _ in range(2):
            made.append(create_temporary(directory / "extents-probe"))
        os.write(made[0][0], bytes(ALIGN))
        fcntl.ioctl(made[1][0], FICLONE, made[0][0])
        return True
    except OSError:
        return False
    finally:
        for descriptor, path in made:
            os.close(descriptor)
            path.unlink(missing_ok=True)


def same_file_system(first: Path, second: Path) -> bool:
    try:
        return os.stat(first).st_dev == os.stat(second).st_dev
    except OSError:
        return False


def bundle_writer(descriptor: int, directory: Path, source_directory: Path, offset: int = 0):
    """The writer for a file in `directory`, open at `descriptor`, whose members are read from files in
    `source_directory`: kernel copies where the two can share extents, direct I/O otherwise. Writing starts at `offset`."""
    if same_file_system(source_directory, directory) and shares_extents(directory):
        return KernelCopyWriter(descriptor, offset)
    return DirectWriter(descriptor, offset)


class DirectWriter:
    """Writes a file from reused page-aligned buffers with direct I/O, on a thread of its own (see the module).

    Each `HashLane` in `lanes` is handed every full buffer too, in order, and hashes it on its own thread
    while the buffer is written: a buffer is filled again only once it is written and every lane has it hashed.
    """

    def __init__(self, descriptor: int, offset: int = 0, lanes: tuple[HashLane, ...] = ()):
        self._descriptor = descriptor
        self._lanes = lanes
        self.direct = _set_direct(descriptor, True)
        self._buffers = [mmap.mmap(-1, BUFFER) for _ in range(BUFFERS)]
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for buffer in self._buffers:
            self._free.put(buffer)
        self._users: dict[int, int] = {}  # buffer id -> the writer and lanes that still have it
        self._lock = threading.Lock()
        self._full: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
        self.error: OSError | None = None
        self._aborted = False
        self._buffer = self._free.get()
        self._fill = 0
        self._offset = offset
        self._thread = threading.Thread(target=self._write_out, name="direct-write", daemon=True)
        self._thread.start()

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            count = min(len(view), BUFFER - self._fill)
            self._buffer[self._fill : self._fill + count] = view[:count]
            self._filled(count)
            view = view[count:]
        return len(data)

    def copy_from(self, source: int, count: int) -> int:
        """Read up to `count` bytes from `source` (at its position) into the file; 0 at the source's end."""
        with memoryview(self._buffer) as buffer:
            got = os.readv(source, [buffer[self._fill : self._fill + min(count, BUFFER - self._fill)]])
        self._filled(got)
        return got

    def _filled(self, count: int) -> None:
        self._fill += count
        if self._fill == BUFFER:
            self._submit()

    def _submit(self) -> None:
        if self.error is not None:
            raise self.error
        buffer, length = self._buffer, self._fill
        with self._lock:
            self._users[id(buffer)] = 1 + len(self._lanes)
        for lane in self._lanes:
            lane.submit(buffer, length, self._release)
        self._full.put((buffer, length, self._offset))
        self._offset += length
        self._fill = 0
        self._buffer = self._free.get()

    def _release(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._users[id(buffer)] -= 1
            done = self._users[id(buffer)] == 0
        if done:
            self._free.put(buffer)

    def _write_out(self) -> None:
        while (job := self._full.get()) is not None:
            buffer, length, offset = job
            try:
                if self.error is None and not self._aborted:
                    self._write_at(buffer, length, offset)
            except OSError as error:
                self.error = error
            finally:
                self._release(buffer)

    def _write_at(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        with memoryview(buffer) as view:
            done = 0
            while done < length:
                if self.direct and (offset + done) % ALIGN == 0 and (length - done) >= ALIGN:
                    part = view[done : done + (length - done) // ALIGN * ALIGN]
                else:
                    # The unaligned tail of the file (or a start that is not aligned): ordinary writes from here.
                    if self.direct:
                        self.direct = _set_direct(self._descriptor, False)
                    part = view[done:length]
                try:
                    done += os.pwrite(self._descriptor, part, offset + done)
                except OSError as error:
                    if not self.direct or error.errno != errno.EINVAL:  # this file system wants another alignment
                        raise
                    self.direct = _set_direct(self._descriptor, False)
                finally:
                    part.release()

    def close(self) -> None:
        """Write what is left and wait until every byte is in the file (synced or not: the caller syncs) and hashed."""
        try:
            if self._fill:
                self._submit()
        finally:
            self._finish()
        self._free.put(self._buffer)
        for _ in self._buffers:  # back from the writer and every lane
            self._free.get()
        for buffer in self._buffers:
            buffer.close()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop writing (what is queued is dropped); the caller removes the file."""
        self._aborted = True
        self._finish()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._full.put(None)
            self._thread.join()
        if self.direct:
            self.direct = _set_direct(self._descriptor, False)


class HashLane:
    """The sha256 of a stream, on a thread of its own, from the buffers a DirectWriter writes (sha256 releases
    the GIL: two lanes and the writer use both cores)."""

    def __init__(self, name: str):
        self._queue: queue.Queue[tuple[mmap.mmap, int, Callable] | None] = queue.Queue()
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, buffer: mmap.mmap, length: int, done: Callable[[mmap.mmap], None]) -> None:
        self._queue.put((buffer, length, done))

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            buffer, length, done = job
            try:
                with memoryview(buffer) as view, view[:length] as data:
                    self._digest.update(data)
            finally:
                done(buffer)

    def finish(self) -> str:
        """The hex digest of everything submitted."""
        self.stop()
        return self._digest.hexdigest()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _set_direct(descriptor: int, on: bool) -> bool:
    """Turn direct I/O on or off for `descriptor`; whether it is on afterwards."""
    flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
    try:
        fcntl.fcntl(descriptor, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError:
        return False  # a file system without direct I/O (tmpfs before Linux 6.6, some FUSE file systems)
    return on


class KernelCopyWriter:
    """Buffered writes for headers and WriteBehind; member data is kernel-copied into the file (shared extents)."""

    def __init__(self, descriptor: int, offset: int = 0):
        self._handle = os.fdopen(descriptor, "wb", buffering=WRITE_BUFFER, closefd=False)
        self._handle.seek(offset)
        self._behind = WriteBehind(descriptor).__enter__()

    def write(self, data) -> int:
        return self._handle.write(data)

    def fileno(self) -> int:
        """The tar writer kernel-copies member data into this file itself (bundle/tarstream.py), after a flush."""
        return self._handle.fileno()

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        try:
            self._handle.flush()
        finally:
            self._behind.stop()
            self._handle.close()

    def abort(self) -> None:
        self._behind.stop()
        try:
            self._handle.close()  # flushes what is buffered: on a full disk that fails too, and the file goes anyway
        except OSError:
            pass


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
