"""`make bench`: airlock build and verify against peer tools on the same data, in one run.

- cold build of the image set from a local docker-registry, against
  `skopeo copy --all` of each image into one OCI layout (the peer does less:
  it writes no bundle, signs nothing and fetches no release files);
- warm rebuild (everything cached) against the cold build;
- `airlock verify` throughput against `sha256sum` of the same bundle;
- peak RSS of build and verify.

Size: BENCH_MB (default 1024) megabytes of image layers, split over the
control-plane, flannel and busybox images, two platforms each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.runs import AIRLOCK, build_argv, keygen, sync_disks, timed
from tests.upstream import LocalUpstream


def main() -> None:
    total_mb = int(os.environ.get("BENCH_MB", "1024"))
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    images = 10  # 7 control-plane + 2 flannel + busybox
    payload = (total_mb << 20) // (images * 2)
    print(f"bench in {work}: {images} images x 2 platforms, {payload >> 20} MiB of random layer each")
    upstream = LocalUpstream(work / "upstream", payload_bytes=payload).start()
    try:
        keys = keygen(work)
        references = list(upstream.all_images())

        def skopeo_all() -> None:
            layout = work / "skopeo-layout"
            shutil.rmtree(layout, ignore_errors=True)
            for reference in references:
                name, tag = reference.rsplit(":", 1)
                source = f"docker://{upstream.registry.host}/{name.split('/', 1)[1]}:{tag}"
                subprocess.run(
                    ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", source, f"oci:{layout}:{reference}"],
                    check=True,
                )

        # Each build writes a new file: replacing an existing 1 GB file costs its
        # deletion, which is not build work.
        def build(out: str) -> list[str]:
            return build_argv(upstream, keys, work / out, work / "cache", "stable-1.31", "--arch", "amd64,arm64", "--image", "busybox:1.36")

        sync_disks()
        started = time.monotonic()
        skopeo_all()
        skopeo_seconds = time.monotonic() - started
        sync_disks()
        cold_seconds, build_rss = timed(build("bundle.tar"))
        warm_seconds, _ = timed(build("warm.tar"))
        bundle = work / "bundle.tar"
        size = bundle.stat().st_size
        sha_seconds, _ = timed(["sha256sum", str(bundle)])
        verify_seconds, verify_rss = timed([AIRLOCK, "verify", str(bundle), "--key", str(keys / "airlock.pub"), "--quiet"])
        results = {
            "bundle_bytes": size,
            "skopeo_copy_seconds": round(skopeo_seconds, 2),
            "airlock_cold_build_seconds": round(cold_seconds, 2),
            "cold_ratio_airlock_over_skopeo": round(cold_seconds / skopeo_seconds, 3),
            "airlock_warm_build_seconds": round(warm_seconds, 2),
            "warm_ratio_over_cold": round(warm_seconds / cold_seconds, 3),
            "sha256sum_MBps": round(size / sha_seconds / 1e6, 1),
            "verify_MBps": round(size / verify_seconds / 1e6, 1),
            "verify_throughput_ratio_over_sha256sum": round(sha_seconds / verify_seconds, 3),
            "build_peak_rss_MB": round(build_rss / 1024, 1),
            "verify_peak_rss_MB": round(verify_rss / 1024, 1),
        }
        print(json.dumps(results, indent=2))
        goals = [
            ("cold build <= 0.6x skopeo", results["cold_ratio_airlock_over_skopeo"] <= 0.6),
            ("warm rebuild <= 0.1x cold", results["warm_ratio_over_cold"] <= 0.1),
            ("verify >= 0.9x sha256sum throughput", results["verify_throughput_ratio_over_sha256sum"] >= 0.9),
            ("build peak RSS < 150 MB", results["build_peak_rss_MB"] < 150),
            ("verify peak RSS < 150 MB", results["verify_peak_rss_MB"] < 150),
        ]
        for goal, met in goals:
            print(f"{'met   ' if met else 'MISSED'} {goal}")
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
