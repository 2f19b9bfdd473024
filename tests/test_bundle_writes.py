"""How a bundle reaches the disk (builder/direct.py).

Where the cache and the bundle cannot share extents (ext4), the bundle is written with direct I/O from a few
reused buffers and never fills the page cache; where they can (XFS with reflink), the bundle shares the
cached blobs' blocks. Either way the bytes are the same: the two builds below, from the same inputs, are
byte for byte one file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder import direct
from builder.direct import BUFFER, DirectWriter, HashLane, shares_extents
from tests.conftest import airlock, build, require


@contextmanager
def loop_mounted(tmp_path: Path, kind: str, megabytes: int):
    """A file system of `kind` on a loop device, mounted under `tmp_path`."""
    if os.geteuid() != 0:
        pytest.skip("loop-mounting a file system needs root")
    require(f"mkfs.{kind}", "mount", "umount")
    image, mount = tmp_path / f"{kind}.img", tmp_path / kind
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(megabytes << 20)
    options = ["-m", "reflink=1"] if kind == "xfs" else []
    subprocess.run([f"mkfs.{kind}", "-q", *options, str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        image.unlink(missing_ok=True)


def resident_bytes(path: Path) -> int:
    """How much of `path` is in the page cache (fincore)."""
    result = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def shared_bytes(path: Path) -> int:
    """How much of `path` lies in extents it shares with another file (filefrag -v: the `shared` flag)."""
    result = subprocess.run(["filefrag", "-v", "-b4096", str(path)], capture_output=True, text=True, check=True)
    blocks = 0
    for line in result.stdout.splitlines():
        fields = [field.strip() for field in line.split(":")]
        if len(fields) >= 5 and fields[0].isdigit() and "shared" in fields[-1]:
            blocks += int(fields[3])
    return blocks * 4096


def test_a_bundle_is_written_past_the_page_cache_on_ext4_and_shares_the_cache_on_xfs(upstream, keys, tmp_path):
    require("fincore", "filefrag", "mkfs.ext4", "mkfs.xfs")
    epoch = {"SOURCE_DATE_EPOCH": str(int(time.time()) - 60)}
    pub = keys["ed25519"] / "airlock.pub"
    with loop_mounted(tmp_path, "ext4", 256) as ext4, loop_mounted(tmp_path, "xfs", 320) as xfs:
        assert not shares_extents(ext4) and shares_extents(xfs)
        bundles = {where: where / "k8s.tar" for where in (ext4, xfs)}
        for where, bundle in bundles.items():
            build(upstream, keys, bundle, "v1.36.4", where / "cache", env=epoch, check=True)
        size = bundles[ext4].stat().st_size
        assert size > 8 << 20
        # ext4: only bundle.json's room (written last, at the front) and the unaligned end went through the page cache.
        assert resident_bytes(bundles[ext4]) < 1 << 20, f"{resident_bytes(bundles[ext4])} of {size} bytes in the page cache"
        for bundle in bundles.values():
            airlock("verify", bundle, "--key", pub, check=True)
        assert shared_bytes(bundles[ext4]) == 0
        # XFS: the members' data shares the cached blobs' blocks.
        assert shared_bytes(bundles[xfs]) > size // 2, f"{shared_bytes(bundles[xfs])} of {size} bytes shared"
        assert hashlib.sha256(bundles[ext4].read_bytes()).digest() == hashlib.sha256(bundles[xfs].read_bytes()).digest()
        # No probe file or temporary is left beside either bundle.
        assert sorted(path.name for path in ext4.iterdir() if path.name != "lost+found") == ["airlock-node.pyz", "cache", "k8s.tar"]
        assert sorted(path.name for path in xfs.iterdir()) == ["airlock-node.pyz", "cache", "k8s.tar"]


def written_by(path: Path, pieces: list, offset: int = 0, lanes: tuple = ()) -> DirectWriter:
    """Write `pieces` (bytes, or a path to copy from) into `path` from `offset` on; the writer, closed."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer = DirectWriter(descriptor, offset, lanes)
        for piece in pieces:
            if isinstance(piece, Path):
                with open(piece, "rb") as source:
                    while writer.copy_from(source.fileno(), 1 << 30):
                        pass
            else:
                writer.write(piece)
        writer.close()
        return writer
    finally:
        os.close(descriptor)


def test_direct_writes_and_their_hashes_are_the_bytes_given(tmp_path):
    """Odd sizes, a copied file, a start past a head room and an unaligned end: the file and both lanes' digests
    hold exactly what was given, across several buffers."""
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(BUFFER + 12_345))
    pieces = [os.urandom(1000), source, os.urandom(3 * BUFFER + 7), b"tail"]
    expected = b"".join(piece.read_bytes() if isinstance(piece, Path) else piece for piece in pieces)
    first, second = HashLane("test-a"), HashLane("test-b")
    writer = written_by(tmp_path / "out", pieces, offset=3 * 4096, lanes=(first, second))
    data = (tmp_path / "out").read_bytes()
    assert data[: 3 * 4096] == bytes(3 * 4096) and data[3 * 4096 :] == expected
    assert first.finish() == second.finish() == hashlib.sha256(expected).hexdigest()
    assert writer.direct is False  # switched off again: later ordinary writes (bundle.json's room) need no alignment


def test_a_file_system_that_refuses_the_alignment_gets_ordinary_writes(tmp_path, monkeypatch):
    refused: list[int] = []
    real = os.pwrite

    def pwrite(descriptor, data, offset):
        if direct.fcntl.fcntl(descriptor, direct.fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(descriptor, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    data = os.urandom(2 * BUFFER + 999)
    writer = written_by(tmp_path / "out", [data])
    assert refused == [0] and writer.direct is False  # refused once, then ordinary writes only
    assert (tmp_path / "out").read_bytes() == data


def test_a_failed_write_reaches_the_writer_and_stops_it(tmp_path, monkeypatch):
    calls: list[int] = []

    def pwrite(descriptor, data, offset):
        calls.append(offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    with pytest.raises(OSError) as raised:
        written_by(tmp_path / "out", [os.urandom(BUFFER)] * 4)
    assert raised.value.errno == errno.ENOSPC
    assert calls == [0]  # nothing after the failure was written
