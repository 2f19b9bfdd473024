"""`make bench`: what splitting a bundle into parts costs, against the same work on one file.

- build with `--split` against an unsplit build of the same inputs, cold
  (empty cache) and warm (everything cached, so packing is all that is
  left); a split build also hashes every part and the whole for the parts
  list, which an unsplit build does not do;
- `airlock verify` of the parts list against `airlock verify` of the one file;
- peak RSS of the split build against the unsplit one;
- CPU seconds of each, beside the wall times (the parts list costs two
  sha256 passes over the bundle, part by part and whole, on threads of
  their own; verifying parts hashes each part besides each member).

Rounds alternate which of the pair runs first; goals are judged on the
medians of the per-round ratios (bench/runs.py, as bench/build_bench.py).

The floor: a split build must hash every byte it writes for the parts list
(per part and whole, two sha256 passes the unsplit build does not make); the
report prints sha256 per core measured here and the ratio those passes would
cost if no second core took them (one pass: the floor the goal allows for).

Size: BENCH_MB (default 780) megabytes of image layers; BENCH_ROUNDS (default 3);
BENCH_SPLIT (default 256M) is the part size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runs import AIRLOCK, build_argv, keygen, machine_load, median, print_goals, sha256_rate, sync_disks
from tests.upstream import DEFAULT_VERSION, LocalUpstream

IMAGES = 10  # 7 control-plane + 2 flannel + busybox
# bench/runs.py's probe, also reporting CPU seconds: on a shared machine wall time mostly measures the neighbours.
PROBE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
    "sys.exit(code)\n"
)


def timed(argv: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds of one command."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    rss, cpu = result.stdout.strip().splitlines()[-1].split()
    return seconds, int(rss), float(cpu)


def bench(total_mb: int, rounds: int, split: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="airlock-split-bench-"))
    payload = (total_mb << 20) // (IMAGES * 2)
    print(f"split bench in {work}: {IMAGES} images x 2 platforms, {payload >> 20} MiB of random layer each, parts of {split}, {rounds} rounds")
    upstream = LocalUpstream(work / "upstream", versions=(DEFAULT_VERSION,), labels={"stable-1.36": DEFAULT_VERSION}, payload_bytes=payload).start()
    try:
        keys = keygen(work)
        pub = str(keys / "airlock.pub")
        env_epoch = {"SOURCE_DATE_EPOCH": str(int(os.path.getmtime(keys / "airlock.pub")))}
        os.environ.update(env_epoch)  # both builds sign the same bundle.json, so their bytes can be compared

        def build(directory: str, cache: Path, *extra: str) -> list[str]:
            out = work / directory / "k8s.tar"
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir()
            return build_argv(upstream, keys, out, cache, "stable-1.36", "--arch", "amd64,arm64", "--image", "busybox:1.36", *extra)

        def pair(kind: str, first_split: bool) -> dict:
            measured = {}
            for split_run in (first_split, not first_split):
                cache = work / ("cache-split" if split_run else "cache-whole")
                if kind == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                extra = ("--split", split) if split_run else ()
                argv = build("parts" if split_run else "whole", cache, *extra)
                sync_disks()
                measured["split" if split_run else "whole"] = timed(argv)
            sync_disks()
            return measured

        rows = []
        for number in range(rounds):
            first_split = number % 2 == 1
            cold = pair("cold", first_split)
            warm = pair("warm", first_split)
            parts = " ".join(str(p) for p in sorted((work / "parts").glob("k8s.tar.part*")))
            same = subprocess.run(["sh", "-c", f"cat {parts} | cmp -s - {work / 'whole' / 'k8s.tar'}"])
            if same.returncode != 0:
                raise SystemExit("the parts do not cat to the unsplit bundle")
            verify_one = [AIRLOCK, "verify", str(work / "whole" / "k8s.tar"), "--key", pub, "--quiet"]
            verify_parts = [AIRLOCK, "verify", str(work / "parts" / "k8s.parts.json"), "--key", pub, "--quiet"]
            verified = {}
            for name, argv in (("parts", verify_parts), ("one", verify_one)) if first_split else (("one", verify_one), ("parts", verify_parts)):
                verified[name] = timed(argv)
            row = {
                "cold_whole": cold["whole"][0], "cold_split": cold["split"][0],
                "warm_whole": warm["whole"][0], "warm_split": warm["split"][0],
                "verify_one": verified["one"][0], "verify_parts": verified["parts"][0],
                "cpu_cold_whole": cold["whole"][2], "cpu_cold_split": cold["split"][2],
                "cpu_warm_whole": warm["whole"][2], "cpu_warm_split": warm["split"][2],
                "cpu_verify_one": verified["one"][2], "cpu_verify_parts": verified["parts"][2],
                "rss_whole": max(cold["whole"][1], warm["whole"][1]), "rss_split": max(cold["split"][1], warm["split"][1]),
                "verify_rss_one": verified["one"][1], "verify_rss_parts": verified["parts"][1],
            }  # fmt: skip
            rows.append(row)
            print(
                f"  round {number + 1}: cold {row['cold_whole']:.2f}s / split {row['cold_split']:.2f}s, warm {row['warm_whole']:.2f}s / "
                f"split {row['warm_split']:.2f}s, verify one file {row['verify_one']:.2f}s / parts {row['verify_parts']:.2f}s; {machine_load()}"
            )
        size = (work / "whole" / "k8s.tar").stat().st_size
        parts = len(list((work / "parts").glob("k8s.tar.part*")))
        sha_rate = sha256_rate()
        one_pass = size / 1e6 / sha_rate

        def ratios(top: str, bottom: str) -> list[float]:
            return [round(row[top] / row[bottom], 3) for row in rows]

        return {
            "bundle_bytes": size,
            "parts": parts,
            "part_size": split,
            "rounds": rows,
            "cold_split_over_whole": ratios("cold_split", "cold_whole"),
            "cold_split_over_whole_median": round(median(ratios("cold_split", "cold_whole")), 3),
            "warm_split_over_whole": ratios("warm_split", "warm_whole"),
            "warm_split_over_whole_median": round(median(ratios("warm_split", "warm_whole")), 3),
            "verify_parts_over_one": ratios("verify_parts", "verify_one"),
            "verify_parts_over_one_median": round(median(ratios("verify_parts", "verify_one")), 3),
            "cpu_cold_split_over_whole_median": round(median(ratios("cpu_cold_split", "cpu_cold_whole")), 3),
            "cpu_warm_split_over_whole_median": round(median(ratios("cpu_warm_split", "cpu_warm_whole")), 3),
            "cpu_verify_parts_over_one_median": round(median(ratios("cpu_verify_parts", "cpu_verify_one")), 3),
            "build_peak_rss_MB_whole": round(max(row["rss_whole"] for row in rows) / 1024, 1),
            "build_peak_rss_MB_split": round(max(row["rss_split"] for row in rows) / 1024, 1),
            "verify_peak_rss_MB_one": round(max(row["verify_rss_one"] for row in rows) / 1024, 1),
            "verify_peak_rss_MB_parts": round(max(row["verify_rss_parts"] for row in rows) / 1024, 1),
            "sha256_MB_per_cpu_second": round(sha_rate, 1),
            "sha256_pass_seconds": round(one_pass, 2),
            "floor_one_pass_over_whole_median": round(median([(row["cold_whole"] + one_pass) / row["cold_whole"] for row in rows]), 3),
            "floor_two_passes_on_one_core_over_whole_median": round(
                median([(row["cold_whole"] + 2 * one_pass) / row["cold_whole"] for row in rows]), 3
            ),
            "machine": machine_load(),
        }
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict) -> None:
    print(json.dumps(results, indent=2))
    goals = [
        (
            f"cold split build <= 1.1x unsplit (median; one sha256 pass alone is {results['floor_one_pass_over_whole_median']}x)",
            results["cold_split_over_whole_median"] <= 1.1,
        ),
        ("warm split build <= 1.1x unsplit (median)", results["warm_split_over_whole_median"] <= 1.1),
        ("verify across parts <= 1.05x one file (median)", results["verify_parts_over_one_median"] <= 1.05),
        ("split build peak RSS <= 1.05x unsplit + 5 MB", results["build_peak_rss_MB_split"] <= results["build_peak_rss_MB_whole"] * 1.05 + 5),
    ]
    print_goals(goals)


def main() -> None:
    total_mb = int(os.environ.get("BENCH_MB", "780"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    report(bench(total_mb, rounds, os.environ.get("BENCH_SPLIT", "256M")))


if __name__ == "__main__":
    main()
