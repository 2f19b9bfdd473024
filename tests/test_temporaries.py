"""Temporary files against a planted link (issue [15]).

An operator builds, splits or joins as root into a directory others can write
(a shared export directory, not sticky). Another user plants a symbolic link
at the name airlock is about to write, pointing at a file only root may
change. airlock must never write through it: every temporary is created with
O_CREAT|O_EXCL|O_NOFOLLOW under a name nobody can guess (bundle.atomic), and
what is renamed into place must be the file that was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from bundle import atomic
from bundle.errors import WriteError
from tests.conftest import airlock, build
from tests.test_pyz_cache import unused_uid

SECRET = b"root's own file: nothing airlock writes may land here\n"
# The names earlier versions wrote to: `.NAME.partial` beside each output, for at most this many parts.
PLANTED_PARTS = 40


@pytest.fixture
def shared(tmp_path) -> Path:
    """A directory everybody can write, without the sticky bit."""
    directory = tmp_path / "export"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "root-only"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def plant(directory: Path, names: list[str], target: Path) -> list[Path]:
    """Links at `names` to `target`, owned by another user (as they would be if that user planted them)."""
    links = []
    uid = unused_uid()
    for name in names:
        link = directory / name
        link.symlink_to(target)
        os.lchown(link, uid, uid)
        links.append(link)
    return links


def predictable_names(bundle: str, outputs: list[str]) -> list[str]:
    names = [f".{bundle}.partial", *(f".{bundle}.part{n:03d}.partial" for n in range(1, PLANTED_PARTS + 1))]
    return names + [f".{name}.partial" for name in outputs]


def assert_untouched(secret: Path, links: list[Path]) -> None:
    assert secret.read_bytes() == SECRET, "airlock wrote through a planted link"
    for link in links:
        assert not link.exists() or link.is_symlink()


def test_a_split_build_never_writes_through_a_planted_link(upstream, keys, tmp_path, shared, secret):
    links = plant(shared, predictable_names("k8s.tar", ["airlock-node.pyz", "k8s.parts.json", "SHA256SUMS"]), secret)
    result = build(upstream, keys, shared / "k8s.tar", "stable-1.36", tmp_path / "cache", "--split", "300K", "--sidecars")
    assert result.returncode == 0, result.stderr
    assert_untouched(secret, links)
    parts = sorted(shared.glob("k8s.tar.part*"))
    assert len(parts) > 1 and all(part.is_file() and not part.is_symlink() for part in parts)
    airlock("verify", shared / "k8s.parts.json", "--key", keys["ed25519"] / "airlock.pub", check=True)
    # Only the planted links remain beside the outputs: no temporary is left behind.
    assert sorted(p.name for p in shared.iterdir() if p.name.startswith(".")) == sorted(link.name for link in links)


def test_build_split_and_join_parts_never_write_through_a_planted_link(upstream, keys, tmp_path, shared, secret):
    whole = tmp_path / "whole"
    whole.mkdir()
    links = plant(shared, predictable_names("k8s.tar", ["airlock-node.pyz", "joined.tar"]), secret)
    # An unsplit build into the shared directory.
    built = build(upstream, keys, shared / "k8s.tar", "stable-1.36", tmp_path / "cache")
    assert built.returncode == 0, built.stderr
    assert_untouched(secret, links)
    assert (shared / "k8s.tar").is_file() and not (shared / "k8s.tar").is_symlink()
    # split of that bundle into the same directory, and join-parts back.
    shutil.move(shared / "k8s.tar", whole / "k8s.tar")
    split = airlock("split", whole / "k8s.tar", "--size", "300K", "--sign-key", keys["ed25519"] / "airlock.key", "--out-dir", shared, "--sidecars")
    assert split.returncode == 0, split.stderr
    assert_untouched(secret, links)
    joined = airlock("join-parts", shared / "k8s.parts.json", "-o", shared / "joined.tar", "--key", keys["ed25519"] / "airlock.pub")
    assert joined.returncode == 0, joined.stderr
    assert_untouched(secret, links)
    assert (shared / "joined.tar").read_bytes() == (whole / "k8s.tar").read_bytes()
    with tarfile.open(whole / "k8s.tar") as archive:
        pyz = next(e for e in json.loads(archive.extractfile("bundle.json").read())["files"] if e["path"] == "bin/airlock-node.pyz")
    assert hashlib.sha256((shared / "airlock-node.pyz").read_bytes()).hexdigest() == pyz["sha256"]


def test_a_temporary_is_never_a_name_someone_planted(tmp_path, monkeypatch, secret):
    """The helper itself: a link at the name it draws is skipped (O_EXCL), never followed."""
    drawn = iter(["a" * 16, "b" * 16])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda size: next(drawn))
    (tmp_path / f".out.{'a' * 16}.partial").symlink_to(secret)
    atomic.write_atomic(tmp_path / "out", b"new", 0o640)
    assert secret.read_bytes() == SECRET
    assert (tmp_path / "out").read_bytes() == b"new" and oct((tmp_path / "out").stat().st_mode & 0o777) == "0o640"


def test_a_file_swapped_in_before_the_rename_is_refused(tmp_path):
    """Where others can write the directory, they could swap the temporary before the rename: the write then fails."""
    target = tmp_path / "out"
    writing = atomic.AtomicFile(target, 0o644)
    writing.handle.write(b"what airlock wrote")
    impostor = tmp_path / "impostor"
    impostor.write_bytes(b"someone else's bytes")
    os.replace(impostor, writing.temporary)
    with pytest.raises(WriteError, match=f"{target}: replaced by another file while airlock wrote it"):
        writing.commit()


def test_temporaries_an_interrupted_run_left_are_removed_but_not_a_live_one(tmp_path):
    stale = tmp_path / f".out.{'c' * 16}.partial"
    stale.write_bytes(b"left by a killed run")
    live = atomic.AtomicFile(tmp_path / "out", 0o644)
    assert not stale.exists()
    atomic.write_atomic(tmp_path / "out", b"other", 0o644)
    assert live.temporary.exists(), "a temporary still being written (locked) was removed"
    live.discard()
