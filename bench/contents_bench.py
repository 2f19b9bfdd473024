"""`make bench`: what reading the contents (Go build info, package databases) costs a cold build.

Same run, same data, same machine: a cold build (empty cache) with the contents scan against a
cold build with `--no-scan`, alternating which goes first, BENCH_ROUNDS rounds (default 3); the
goal is judged on the median of the per-round ratios: the scan adds at most 10 %.

The bundle is realistic rather than random: besides the control-plane, flannel and busybox
images, three images carry real Go programs from this machine (Debian's containerd and
docker-registry, the machine image's kubectl 1.33: compressible ELF files with build info) and
this machine's dpkg status, two platforms each, and the bundle's kubectl and runc are real Go
binaries too. Both builds check the OSV stand-in of the local upstream (the --no-scan build has
nothing to ask it).

The floor: the scan must inflate every gzip layer (ISA-L, the fastest inflater at hand). The report
prints what that costs on this machine (CPU seconds over the bundle's layers) and the ratio it alone
makes when no second core is free to take it (on a loaded machine the scan cannot hide behind the pack).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.runs import build_argv, clear, inflate_cost, keygen, machine_load, median, print_goals
from tests.upstream import DEFAULT_VERSION, LocalUpstream

PROGRAMS = {
    "docker.io/library/containerd-probe:1": Path("/usr/bin/containerd"),
    "docker.io/library/registry-probe:1": Path("/usr/bin/docker-registry"),
    "docker.io/library/kubectl-probe:1": Path("/usr/lib/google-cloud-sdk/bin/kubectl.1.33"),
}


def bench(rounds: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="airlock-contents-bench-"))
    shutil.copyfile("/var/lib/dpkg/status", work / "status")
    files = {
        reference: {
            "/var/lib/dpkg/status": (work / "status").read_bytes(),
            "/etc/os-release": Path("/etc/os-release").read_bytes(),
            "/usr/local/bin/program": program,
        }
        for reference, program in PROGRAMS.items()
    }
    upstream = LocalUpstream(
        work / "upstream",
        versions=(DEFAULT_VERSION,),
        labels={"stable": DEFAULT_VERSION},
        payload_bytes=8 << 20,
        extra_images={"docker.io/library/busybox:1.36": ("amd64", "arm64"), **{reference: ("amd64", "arm64") for reference in PROGRAMS}},
        image_files=files,
        release_binaries={"kubectl": PROGRAMS["docker.io/library/kubectl-probe:1"], "runc": Path("/usr/sbin/runc")},
    ).start()
    try:
        keys = keygen(work)
        images = [flag for reference in PROGRAMS for flag in ("--image", reference)]

        def cold(name: str, *extra: str) -> tuple[float, float, list[str]]:
            """Wall seconds, CPU seconds (user + system of the build) and the stderr lines of one cold build."""
            cache, out = work / f"cache-{name}", work / f"{name}.tar"
            clear(cache, out)
            argv = build_argv(upstream, keys, out, cache, "stable", "--arch", "amd64,arm64", "--image", "busybox:1.36", *images, *extra)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            result = subprocess.run(argv, capture_output=True, text=True)
            seconds = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if result.returncode != 0:
                raise SystemExit(f"build failed:\n{result.stderr[-2000:]}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return seconds, cpu, result.stderr.splitlines()

        measured = []
        scan_line = ""
        for number in range(rounds):
            order = [("scan", ()), ("noscan", ("--no-scan",))]
            if number % 2:
                order.reverse()
            times = {}
            for name, extra in order:
                times[name], times[name + "_cpu"], lines = cold(name, *extra)
                scan_line = next((line for line in lines if line.startswith("contents:")), scan_line)
            measured.append(times)
            print(
                f"  round {number + 1}: with scan {times['scan']:.2f}s ({times['scan_cpu']:.2f}s CPU), "
                f"--no-scan {times['noscan']:.2f}s ({times['noscan_cpu']:.2f}s CPU), ratio {times['scan'] / times['noscan']:.3f}; {machine_load()}"
            )
        ratios = [m["scan"] / m["noscan"] for m in measured]
        inflate_seconds, compressed, inflated = inflate_cost(sorted((work / "cache-scan" / "blobs" / "sha256").iterdir()))
        return {
            "bundle_bytes": (work / "scan.tar").stat().st_size,
            "cold_with_scan_seconds": [round(m["scan"], 2) for m in measured],
            "cold_no_scan_seconds": [round(m["noscan"], 2) for m in measured],
            "ratio_scan_over_no_scan": [round(r, 3) for r in ratios],
            "ratio_median": round(median(ratios), 3),
            "cpu_with_scan_seconds": [round(m["scan_cpu"], 2) for m in measured],
            "cpu_no_scan_seconds": [round(m["noscan_cpu"], 2) for m in measured],
            "load_average_at_end": os.getloadavg()[0],
            "machine": machine_load(),
            "layers_gzip_MB": round(compressed / 1e6, 1),
            "layers_inflated_MB": round(inflated / 1e6, 1),
            "inflate_cpu_seconds": round(inflate_seconds, 3),
            "inflate_MB_per_cpu_second": round(inflated / 1e6 / inflate_seconds, 1) if inflate_seconds else None,
            "floor_inflate_alone_over_no_scan_median": round(median([(m["noscan"] + inflate_seconds) / m["noscan"] for m in measured]), 3),
            "scan_says": scan_line,
        }
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    results = bench(rounds)
    print(json.dumps(results, indent=2))
    print_goals([("contents scan adds <= 10% to a cold build (median of same-run ratios)", results["ratio_median"] <= 1.10)])


if __name__ == "__main__":
    main()
