"""The pyz's native-code cache against other local users (issue [15]).

airlock-node.pyz extracts cryptography's and cffi's shared libraries into a
cache and loads them as root. Another user who can rename entries in any
directory above that cache could swap it for a tree of their own between the
check and the load. These tests run that attack with a second user (a
throwaway uid no account uses, taken by a forked child with setuid) and a
library whose constructor leaves a mark when it runs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import NODE_PYTHON, NODE_PYZ, python39, require

# Exchanges two directory entries (renameat2 RENAME_EXCHANGE) every few milliseconds until `stop` exists: checks made
# close together see one tree, a load some milliseconds later may see the other. With `replant`, it also puts its
# library back (by rename, a new file) under every name the victim may have repaired.
SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
one, two, stop = (a.encode() for a in sys.argv[1:4])
replant = sys.argv[4:]
AT_FDCWD, RENAME_EXCHANGE = -100, 2
evil = open(replant[0], "rb").read() if replant else b""
while not os.path.exists(stop):
    libc.renameat2(AT_FDCWD, one, AT_FDCWD, two, RENAME_EXCHANGE)
    time.sleep(0.004)
    for target in replant[1:]:
        try:
            with open(target, "rb") as handle:
                if handle.read(len(evil) + 1) == evil:
                    continue
        except OSError:
            continue
        with open(target + ".new", "wb") as handle:
            handle.write(evil)
        os.chmod(target + ".new", 0o500)
        os.replace(target + ".new", target)
"""

PLANTED = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
    int fd = open(MARKER, O_CREAT | O_WRONLY | O_APPEND, 0644);
    if (fd >= 0) { write(fd, "planted code ran\n", 17); close(fd); }
}
"""


def unused_uid() -> int:
    """A uid no account on this machine has: the second user of these tests, with nothing to clean up."""
    for uid in range(61000 + os.getpid() % 2000, 65000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid between 61000 and 65000")


def planted_library(directory: Path, marker: Path) -> Path:
    require("gcc")
    source = directory / "planted.c"
    source.write_text(PLANTED)
    library = directory / "planted.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)], check=True, capture_output=True)
    return library


def native_paths(python: str) -> list[str]:
    """Where in a cache the native files for this machine and `python` go: `<id>/linux-x86_64/abi3/…`."""
    import hashlib
    import json

    probe = subprocess.run(
        [python, "-I", "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"], capture_output=True, text=True, check=True
    )
    tag = probe.stdout.strip()
    with zipfile.ZipFile(NODE_PYZ) as archive:
        index = archive.read("_native/index.json")
    identity = hashlib.sha256(index).hexdigest()
    machine = os.uname().machine
    return [f"{identity}/{e['path'].split('/', 1)[1]}" for e in json.loads(index)["files"] if e["arch"] == machine and e["abi"] in ("abi3", tag)]


def plant_tree(root: Path, paths: list[str], library: Path, owner: int) -> list[Path]:
    """A cache-shaped tree holding `library` under every native file's name, owned by `owner`."""
    planted = []
    for relative in paths:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, target)
        target.chmod(0o500)
        planted.append(target)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, owner, owner)
        if path.is_dir():
            path.chmod(0o700)
    return planted


@contextlib.contextmanager
def swapping(one: Path, two: Path, uid: int | None, replant: list[Path] = (), library: Path | None = None):
    """Exchange `one` and `two` over and over, as `uid` (None: as this user), until the block ends."""
    stop = one.parent / f".stop-{os.getpid()}"
    argv = [NODE_PYTHON, "-I", "-c", SWAPPER, str(one), str(two), str(stop)]
    if replant:
        argv += [str(library), *map(str, replant)]
    identity = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **identity)
    try:
        yield process
    finally:
        stop.touch()
        try:
            process.wait(15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            stop.unlink(missing_ok=True)


def node_command(python: str, cache: Path, out: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    """A node command that needs cryptography's native code, as the operator runs it: `python3 -I airlock-node.pyz …`."""
    return subprocess.run(
        [python, "-I", str(NODE_PYZ), "registry", "cert", "--ca-out", str(out), "--name", "127.0.0.1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "AIRLOCK_PYZ_CACHE": str(cache)},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )  # fmt: skip


@pytest.fixture
def shared_base():
    """A directory outside pytest's private tmp tree, so that the second user can reach what it is given."""
    base = Path(tempfile.mkdtemp(prefix=f"airlock-pyz-race-{os.getpid()}-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# Runs per attack. Against the pyz before the fix, the planted library ran on run 1, 8, 9, 9, 14 and 18 (another user,
# six trials) and on run 1 to 8 (root's swap, ten trials): these budgets catch that, and cost little once refused.
RUNS_AGAINST_ANOTHER_USER = 30
RUNS_AGAINST_A_SWAP = 12


def test_another_user_cannot_swap_the_cache_under_root(shared_base):
    """The cache sits in a directory another user owns: before the fix, their library ran as root within a few runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    attacker = unused_uid()
    marker = shared_base / "planted-code-ran"
    library = planted_library(shared_base, marker)
    attic = shared_base / "attic"
    attic.mkdir(mode=0o755)
    os.chown(attic, attacker, attacker)
    cache, decoy = attic / "cache", attic / "decoy"
    plant_tree(decoy, native_paths(NODE_PYTHON), library, attacker)
    outcomes = []
    with swapping(cache, decoy, attacker) as swapper:
        for attempt in range(RUNS_AGAINST_ANOTHER_USER):
            result = node_command(NODE_PYTHON, cache, shared_base / f"pki-{attempt}")
            outcomes.append(result)
            assert not marker.exists(), f"the other user's library ran as root on run {attempt + 1}: {result.stderr.strip()}"
        assert swapper.poll() is None, swapper.stderr.read()
    # Refused at once, in one line that says why and what to do, and nothing was written into the other user's directory.
    for result in outcomes:
        assert result.returncode == 1, result.stdout
        message = result.stderr.strip()
        assert message == (
            f"airlock: error: cannot use {cache} for native code: {attic} belongs to uid {attacker}, who could swap what is under it; "
            "set AIRLOCK_PYZ_CACHE to a directory below ones only root and you can write"
        ), message
    assert sorted(p.name for p in attic.iterdir()) == ["decoy"]


@pytest.mark.parametrize("kernel", ["memfd", "no-memfd"])
def test_only_checked_bytes_are_loaded_even_when_the_cache_is_swapped(kernel, shared_base):
    """A swap that no directory check can see (done by root itself, in root's own directory) still never loads unchecked bytes.

    "no-memfd" stands in for Linux before 3.17, where memfd_create does not exist: the pyz then loads the
    cache file through the descriptor it hashed.
    """
    if os.geteuid() != 0:
        pytest.skip("plants root-owned files")
    marker = shared_base / "planted-code-ran"
    library = planted_library(shared_base, marker)
    room = shared_base / "room"
    room.mkdir(mode=0o700)
    cache, decoy = room / "cache", room / "decoy"
    planted = plant_tree(decoy, native_paths(NODE_PYTHON), library, 0)
    runs = []
    with swapping(cache, decoy, None, replant=planted + [cache / p.relative_to(decoy) for p in planted], library=library):
        for attempt in range(RUNS_AGAINST_A_SWAP):
            runs.append(
                old_kernel_command(cache, shared_base / f"pki-{attempt}")
                if kernel == "no-memfd"
                else node_command(NODE_PYTHON, cache, shared_base / f"pki-{attempt}")
            )
            assert not marker.exists(), f"unchecked bytes were loaded on run {attempt + 1}: {runs[-1].stderr.strip()}"
    assert any(run.returncode == 0 for run in runs), runs[-1].stderr
    for run in runs:
        assert run.returncode == 0 or ("airlock: error:" in run.stderr and "Traceback" not in run.stderr), run.stderr


# The node command run from the pyz the way __main__ runs it, on a Python whose os has no memfd_create (a test
# double for a kernel before 3.17: Python leaves the function out where the C library lacks it).
OLD_KERNEL = r"""
import os, runpy, sys
del os.memfd_create
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def old_kernel_command(cache: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NODE_PYTHON, "-I", "-c", OLD_KERNEL, str(NODE_PYZ), "registry", "cert", "--ca-out", str(out), "--name", "127.0.0.1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "AIRLOCK_PYZ_CACHE": str(cache)},
    )  # fmt: skip


@pytest.mark.parametrize("which", ["system", "3.9"])
def test_missing_parents_are_created_private_whatever_the_umask(which, shared_base):
    """Root under umask 000: every directory the pyz creates is 0700, never 0777 (which would let anyone swap the cache)."""
    python = python39() if which == "3.9" else NODE_PYTHON
    cache = shared_base / "var" / "lib" / "airlock" / "pyz-cache"
    result = node_command(python, cache, shared_base / "pki", umask=0)
    assert result.returncode == 0, result.stderr
    created = [shared_base / "var", shared_base / "var/lib", shared_base / "var/lib/airlock", cache, *(p for p in cache.rglob("*") if p.is_dir())]
    assert {str(p.relative_to(shared_base)): oct(stat.S_IMODE(p.stat().st_mode)) for p in created} == {
        str(p.relative_to(shared_base)): "0o700" for p in created
    }
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o500 for p in cache.rglob("*.so"))


def test_a_cache_below_a_directory_others_can_write_is_refused(shared_base):
    """Group- or world-writable ancestors are refused unless sticky (like /tmp, where others cannot rename our entries)."""
    writable = shared_base / "writable"
    writable.mkdir()
    writable.chmod(0o775)
    refused = node_command(NODE_PYTHON, writable / "cache", shared_base / "pki")
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"airlock: error: cannot use {writable / 'cache'} for native code: {writable} is writable by others (mode 775), "
        "who could swap what is under it; chmod go-w it or set AIRLOCK_PYZ_CACHE to a directory below ones only root and you can write"
    ), refused.stderr
    assert not (writable / "cache").exists()
    sticky = shared_base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    accepted = node_command(NODE_PYTHON, sticky / "cache", shared_base / "pki")
    assert accepted.returncode == 0, accepted.stderr
    # A link on the way is resolved once and the directory it names is what gets checked.
    (shared_base / "link").symlink_to(writable)
    refused = node_command(NODE_PYTHON, shared_base / "link" / "cache", shared_base / "pki")
    assert refused.returncode == 1 and f"{writable} is writable by others" in refused.stderr, refused.stderr
