"""Running what the benchmarks measure: keys, bundles from a local upstream, timed commands."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.containerd import release_of
from tests.debian_sid import DEFAULT_ROOT as SID_ROOT
from tests.debian_sid import installed
from tests.upstream import LocalUpstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def keygen(work: Path) -> Path:
    keys = work / "keys"
    subprocess.run([AIRLOCK, "keygen", "--out", str(keys), "--force"], check=True, capture_output=True)
    return keys


def build_argv(upstream: LocalUpstream, keys: Path, out: Path, cache: Path, version: str = "stable-1.36", *extra: str) -> list[str]:
    return [
        AIRLOCK, "build", "-o", str(out), "--kubernetes-version", version, "--sign-key", str(keys / "airlock.key"),
        "--cache-dir", str(cache), *upstream.build_flags(), *extra,
    ]  # fmt: skip


def build(upstream: LocalUpstream, keys: Path, out: Path, cache: Path, version: str = "stable-1.36", *extra: str) -> Path:
    subprocess.run(build_argv(upstream, keys, out, cache, version, *extra), check=True, capture_output=True)
    return out


def timed(argv: list[str], stderr_lines: list[str] | None = None) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one command; its stderr lines are appended to `stderr_lines`."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", RSS_PROBE, *argv], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    if stderr_lines is not None:
        stderr_lines.extend(result.stderr.splitlines())
    return seconds, int(result.stdout.strip().splitlines()[-1])


def sync_disks() -> None:
    """Write back what the previous run left dirty, so it does not slow the next one down."""
    subprocess.run(["sync"])


def clear(*paths: Path) -> None:
    """Remove what a measured run wrote last time, right before it runs again, then sync.

    Each run starts from the same state whichever ran before it: its own last output just deleted and nothing
    dirty. Deleting everything at the start of a round instead favours the first run of the round on a virtual
    machine that hands freed memory back to its host (free page reporting): the first run reuses pages freed a
    moment ago, the second waits for the host to back the pages it touches.
    """
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    sync_disks()


def memory_returned_to_host() -> int | None:
    """Bytes of freed memory this virtual machine has handed back to its host so far (free page reporting), or None
    where the kernel does not report free pages: memory handed back is slower to touch again, which spreads runs."""
    try:
        return int(Path("/sys/module/page_reporting/parameters/reported_kib").read_text()) << 10
    except (OSError, ValueError):
        return None


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@contextmanager
def xfs_scratch(size_gb: int):
    """A loop-mounted XFS with shared extents (reflink=1), or None with the reason printed when it cannot be had."""
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        print("xfs run skipped: needs root and mkfs.xfs (make bench-deps)")
        yield None
        return
    holder = Path(tempfile.mkdtemp(prefix="airlock-bench-xfs-"))
    image, mount = holder / "fs.img", holder / "mnt"
    mount.mkdir()
    mounted = False
    try:
        with open(image, "wb") as handle:
            handle.truncate(size_gb << 30)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        result = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"xfs run skipped: cannot loop-mount ({result.stderr.strip()})")
            yield None
            return
        mounted = True
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(holder, ignore_errors=True)


def print_goals(goals, where: str = "") -> None:
    """One line per (goal, met) pair: met or MISSED, then the goal (and where it was measured)."""
    for goal, met in goals:
        print(f"{'met   ' if met else 'MISSED'} {goal}{f' [{where}]' if where else ''}")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sha256_rate(megabytes: int = 256) -> float:
    """MB that one core hashes with sha256 per CPU second here (1 MiB updates, as the build and verify hash)."""
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    started = cpu_seconds()
    for _ in range(megabytes):
        digest.update(chunk)
    return megabytes * (1 << 20) / 1e6 / (cpu_seconds() - started)


def inflate_cost(paths: list[Path]) -> tuple[float, int, int]:
    """CPU seconds ISA-L (what the contents scan uses) takes to inflate the gzip files among `paths`; compressed and inflated bytes."""
    from isal import isal_zlib

    seconds, compressed, inflated = 0.0, 0, 0
    for path in paths:
        data = path.read_bytes()
        if data[:2] != b"\x1f\x8b":
            continue
        started = cpu_seconds()
        inflater = isal_zlib.decompressobj(31)
        for offset in range(0, len(data), 1 << 20):
            inflated += len(inflater.decompress(data[offset : offset + (1 << 20)]))
        seconds += cpu_seconds() - started
        compressed += len(data)
    return seconds, compressed, inflated


def machine_load() -> str:
    """The load average beside the core count: other work on this machine slows every run (the ratios compare runs of the same moment)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def wait_port(port: int) -> None:
    """Until something listens on 127.0.0.1:`port` (15 s at most): a server started under load can be slow to bind."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def use_containerd(major: str) -> str:
    """Put the chosen containerd (and its ctr) first on PATH for every daemon, pull and import of the run; its release."""
    if major == "2":
        if installed(SID_ROOT) is None:
            raise SystemExit(f"containerd 2.x is not in {SID_ROOT}: `make containerd-sid` fetches it (or BENCH_CONTAINERD=1.6)")
        os.environ["PATH"] = f"{SID_ROOT / 'usr/bin'}:{os.environ.get('PATH', '')}"
    elif major != "1.6":
        raise SystemExit(f"BENCH_CONTAINERD={major}: give 2 (Debian sid's 2.x, the default) or 1.6 (this machine's)")
    return release_of(shutil.which("containerd"))
