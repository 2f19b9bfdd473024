"""Running what the benchmarks measure: keys, bundles from a local upstream, timed commands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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


def build_argv(upstream: LocalUpstream, keys: Path, out: Path, cache: Path, version: str = "stable-1.31", *extra: str) -> list[str]:
    return [
        AIRLOCK, "build", "-o", str(out), "--kubernetes-version", version, "--sign-key", str(keys / "airlock.key"),
        "--cache-dir", str(cache), *upstream.build_flags(), *extra,
    ]  # fmt: skip


def build(upstream: LocalUpstream, keys: Path, out: Path, cache: Path, version: str = "stable-1.31", *extra: str) -> Path:
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
