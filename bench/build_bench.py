"""`make bench`: airlock build and verify against peer tools on the same data, in one run.

- cold build of the image set from a local docker-registry, against
  `skopeo copy --all` of each image into one OCI layout (the peer does less:
  it writes no bundle, signs nothing and fetches no release files);
- warm rebuild (everything cached) against the cold build, and the floor a
  warm rebuild cannot go under without shared extents: writing as many bytes
  as the bundle holds once, the fastest way this disk takes them (direct I/O
  from a buffer in memory, then fsync: WRITE_FLOOR);
- `airlock verify` throughput against `sha256sum` of the same bundle;
- peak RSS of build and verify.

Each filesystem gets BENCH_ROUNDS rounds (default 3); the order of skopeo and
airlock alternates between rounds, and goals are judged on the medians. It
runs on the temporary directory's filesystem and, when the machine allows
(root, xfsprogs, loop devices), again on a loop-mounted XFS with reflink,
where packing shares the cached blobs' extents instead of copying them.

Size: BENCH_MB (default 780) megabytes of image layers, split over the
control-plane, flannel and busybox images, two platforms each. The upstream
serves one Kubernetes version, so skopeo copies exactly the images the
bundle carries.

Beside the goals it prints the floors measured on this machine: sha256 per
core (every byte a build downloads is hashed once) and the load the machine
was under (other work shares its two cores).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runs import AIRLOCK, build_argv, clear, keygen, machine_load, median, memory_returned_to_host, print_goals, sha256_rate, timed, xfs_scratch
from tests.upstream import DEFAULT_VERSION, LocalUpstream

IMAGES = 10  # 7 control-plane + 2 flannel + busybox
# Write FILE of SIZE bytes once, straight from one 4 MiB buffer of random bytes to the disk (O_DIRECT), then fsync.
WRITE_FLOOR = """
import mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
buffer = mmap.mmap(-1, 4 << 20)
buffer.write(os.urandom(4 << 20))
descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
written = 0
with memoryview(buffer) as view:
    while written < size - size % 4096:
        written += os.pwrite(descriptor, view[: min(4 << 20, size - size % 4096 - written)], written)
os.fsync(descriptor)
"""


def children_cpu() -> float:
    """CPU seconds of every finished child so far (the registry serving both is not counted: it is still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def filesystem_of(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def bench_on(base: Path | None, total_mb: int, rounds: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-", dir=base))
    payload = (total_mb << 20) // (IMAGES * 2)
    print(f"bench in {work} ({filesystem_of(work)}): {IMAGES} images x 2 platforms, {payload >> 20} MiB of random layer each, {rounds} rounds")
    upstream = LocalUpstream(work / "upstream", versions=(DEFAULT_VERSION,), labels={"stable-1.36": DEFAULT_VERSION}, payload_bytes=payload).start()
    try:
        keys = keygen(work)
        references = list(upstream.all_images())
        layout, cache = work / "skopeo-layout", work / "cache"

        def skopeo_all() -> float:
            clear(layout)
            cpu["skopeo"] = -children_cpu()
            started = time.monotonic()
            for reference in references:
                name, tag = reference.rsplit(":", 1)
                source = f"docker://{upstream.registry.host}/{name.split('/', 1)[1]}:{tag}"
                subprocess.run(
                    ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", source, f"oci:{layout}:{reference}"],
                    check=True,
                )
            cpu["skopeo"] += children_cpu()
            return time.monotonic() - started

        # Each build writes a new file: replacing an existing 1 GB file costs its
        # deletion, which is not build work.
        def build(out: str) -> list[str]:
            return build_argv(upstream, keys, work / out, cache, "stable-1.36", "--arch", "amd64,arm64", "--image", "busybox:1.36")

        cpu: dict[str, float] = {}

        def airlock_cold_then_warm() -> dict:
            clear(cache, work / "bundle.tar")
            before = children_cpu()
            cold, rss = timed(build("bundle.tar"))
            cpu["cold"] = children_cpu() - before
            clear(work / "warm.tar")
            warm, _ = timed(build("warm.tar"))
            clear(work / "floor.tar")
            floor, _ = timed([sys.executable, "-c", WRITE_FLOOR, str(work / "floor.tar"), str((work / "bundle.tar").stat().st_size)])
            return {"cold": cold, "warm": warm, "write_floor": floor, "rss": rss}

        measured: list[dict] = []
        for number in range(rounds):
            returned = memory_returned_to_host()
            if number % 2 == 0:
                skopeo = skopeo_all()
                airlock = airlock_cold_then_warm()
            else:
                airlock = airlock_cold_then_warm()
                skopeo = skopeo_all()
            returned = memory_returned_to_host() - returned if returned is not None else None
            measured.append({"skopeo": skopeo, **airlock, "skopeo_cpu": cpu["skopeo"], "cold_cpu": cpu["cold"]})
            print(
                f"  round {number + 1}: skopeo {skopeo:.2f}s cold {airlock['cold']:.2f}s warm {airlock['warm']:.2f}s "
                f"write floor {airlock['write_floor']:.2f}s; CPU skopeo {cpu['skopeo']:.2f}s cold {cpu['cold']:.2f}s; {machine_load()}"
                + (f"; {returned >> 20} MiB of freed memory handed back to the hypervisor" if returned is not None else "")
            )

        bundle = work / "bundle.tar"
        size = bundle.stat().st_size
        sha_seconds, _ = timed(["sha256sum", str(bundle)])
        verify_seconds, verify_rss = timed([AIRLOCK, "verify", str(bundle), "--key", str(keys / "airlock.pub"), "--quiet"])

        def seconds(key: str) -> list[float]:
            return [round(entry[key], 2) for entry in measured]

        cold_ratios = [entry["cold"] / entry["skopeo"] for entry in measured]
        warm_ratios = [entry["warm"] / entry["cold"] for entry in measured]
        floor_ratios = [entry["write_floor"] / entry["cold"] for entry in measured]
        return {
            "filesystem": filesystem_of(work),
            "bundle_bytes": size,
            "skopeo_copy_seconds": seconds("skopeo"),
            "airlock_cold_build_seconds": seconds("cold"),
            "skopeo_cpu_seconds": seconds("skopeo_cpu"),
            "airlock_cold_cpu_seconds": seconds("cold_cpu"),
            "airlock_warm_build_seconds": seconds("warm"),
            "write_floor_seconds": seconds("write_floor"),
            "cold_ratio_airlock_over_skopeo": [round(ratio, 3) for ratio in cold_ratios],
            "cold_ratio_median": round(median(cold_ratios), 3),
            "warm_ratio_over_cold": [round(ratio, 3) for ratio in warm_ratios],
            "warm_ratio_median": round(median(warm_ratios), 3),
            "write_floor_over_cold_median": round(median(floor_ratios), 3),
            "sha256sum_MBps": round(size / sha_seconds / 1e6, 1),
            "verify_MBps": round(size / verify_seconds / 1e6, 1),
            "verify_throughput_ratio_over_sha256sum": round(sha_seconds / verify_seconds, 3),
            "build_peak_rss_MB": round(max(entry["rss"] for entry in measured) / 1024, 1),
            "verify_peak_rss_MB": round(verify_rss / 1024, 1),
            "sha256_MB_per_cpu_second": round(sha256_rate(), 1),
            "machine": machine_load(),
        }
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> None:
    print(json.dumps(results, indent=2))
    goals = [
        ("cold build <= 0.6x skopeo (median)", results["cold_ratio_median"] <= 0.6),
        ("warm rebuild <= 0.1x cold (median)", results["warm_ratio_median"] <= 0.1),
        ("verify >= 0.9x sha256sum throughput", results["verify_throughput_ratio_over_sha256sum"] >= 0.9),
        ("build peak RSS < 150 MB", results["build_peak_rss_MB"] < 150),
        ("verify peak RSS < 150 MB", results["verify_peak_rss_MB"] < 150),
    ]
    print_goals(goals, results["filesystem"])


def main() -> None:
    total_mb = int(os.environ.get("BENCH_MB", "780"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    report(bench_on(None, total_mb, rounds))
    if os.environ.get("BENCH_XFS", "1") == "0":
        print("xfs run skipped: BENCH_XFS=0")
        return
    with xfs_scratch(size_gb=max(8, total_mb * 8 >> 10)) as xfs:
        if xfs is not None:
            report(bench_on(xfs, total_mb, rounds))


if __name__ == "__main__":
    main()
