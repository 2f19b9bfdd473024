"""`make bench` (installer part): `airlock init --skip-phases kubeadm-init,cni` against tar -xf plus sha256sum.

The same >= 512 MB bundle, in INSTALL_BENCH_ROUNDS rounds (default 3, goals
judged on the medians): airlock verifies, unpacks, installs and loads every
image into a fresh real containerd through its registry; the peer is
`tar -xf` of the bundle followed by `sha256sum` of every member, timed
separately and summed. Also the peak RSS of airlock.

The images phase cannot be faster than containerd taking the images in, so
each round also times containerd alone doing that from the installed store
(served by `airlock registry serve`, through the hosts.toml airlock wrote,
4 images at a time, nothing else running): `ctr content fetch` (content and
image records only) and `ctr images pull` (fetch and unpack, what the phase
runs). Those floors are reported against the peer too.

Size: INSTALL_BENCH_MB (default 512).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen, median, print_goals, sync_disks, timed
from installer.phases.images import PARALLEL_PULLS
from tests.containerd import Containerd
from tests.upstream import LocalUpstream, free_port

IGNORE = "all"


def containerd_alone(root: Path, references: list[str], daemon_dir: Path, verb: list[str], arch: str = "amd64") -> float:
    """Seconds for a fresh containerd to take every image in from the node registry, PARALLEL_PULLS at a time."""
    hosts = root / "etc/containerd/certs.d"
    with Containerd(daemon_dir) as daemon:
        sync_disks()
        started = time.monotonic()
        with ThreadPoolExecutor(PARALLEL_PULLS) as pool:
            jobs = [pool.submit(daemon.ctr, *verb, "--hosts-dir", str(hosts), "--platform", f"linux/{arch}", reference, timeout=600) for reference in references]
            for job in jobs:
                job.result()
        seconds = time.monotonic() - started
        if len(daemon.image_digests()) != len(references):
            raise SystemExit(f"containerd holds {len(daemon.image_digests())} images after {' '.join(verb)}, not {len(references)}")
        return seconds


def one_round(work: Path, bundle: Path, keys: Path, references: list[str]) -> dict:
    root, extracted = work / "root", work / "extracted"
    for leftover in (root, extracted):
        shutil.rmtree(leftover, ignore_errors=True)
    listen = f"127.0.0.1:{free_port()}"
    config = work / "node.yaml"
    config.write_text(json.dumps({"nodeName": "bench", "registry": {"listen": listen}}))
    with Containerd(Path(f"/tmp/bench-ctd-install-{os.getpid()}")) as daemon:
        sync_disks()
        lines: list[str] = []
        airlock_seconds, rss = timed(
            [AIRLOCK, "init", str(bundle), "--key", str(keys / "airlock.pub"), "--root", str(root), "--config", str(config),
             "--skip-phases", "kubeadm-init,cni", "--ignore-preflight-errors", IGNORE, "--containerd-address", str(daemon.socket)],
            lines,
        )  # fmt: skip
        loaded = len(daemon.image_digests())
    phases = {line.split("]")[0][1:]: float(line.rsplit(" ", 1)[1].rstrip("s")) for line in lines if "] done in " in line}

    extracted.mkdir()
    sync_disks()
    tar_seconds, _ = timed(["tar", "-xf", str(bundle), "-C", str(extracted)])
    list_file = work / "members"
    list_file.write_text("\0".join(str(p) for p in extracted.rglob("*") if p.is_file()))
    sha_seconds, _ = timed(["sh", "-c", f"xargs -0 sha256sum < {list_file} > /dev/null"])

    server = subprocess.Popen([AIRLOCK, "registry", "serve", "--store", str(root / "var/lib/airlock/store"), "--listen", listen], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        floors = {
            name: containerd_alone(root, references, Path(f"/tmp/bench-ctd-floor-{os.getpid()}"), verb)
            for name, verb in (("content_fetch", ["content", "fetch"]), ("images_pull", ["images", "pull"]))
        }
    finally:
        server.terminate()
        server.wait(10)
    return {
        "airlock": airlock_seconds, "rss": rss, "phases": phases, "loaded": loaded,
        "tar": tar_seconds, "sha": sha_seconds, **floors,
    }  # fmt: skip


def main() -> None:
    total_mb = int(os.environ.get("INSTALL_BENCH_MB", "512"))
    rounds = int(os.environ.get("INSTALL_BENCH_ROUNDS", "3"))
    work = Path(tempfile.mkdtemp(prefix="airlock-installbench-"))
    upstream = LocalUpstream(work / "upstream", payload_bytes=(total_mb << 20) // 9, extra_images={}).start()
    try:
        keys = keygen(work)
        bundle = build(upstream, keys, work / "bundle.tar", work / "cache")
        references = sorted(upstream.all_images())
        measured = []
        for number in range(rounds):
            result = one_round(work, bundle, keys, references)
            measured.append(result)
            peer = result["tar"] + result["sha"]
            print(
                f"  round {number + 1}: airlock {result['airlock']:.2f}s (images phase {result['phases'].get('images', 0):.2f}s), "
                f"tar -xf + sha256sum {peer:.2f}s, containerd alone: content fetch {result['content_fetch']:.2f}s, "
                f"images pull {result['images_pull']:.2f}s"
            )

        def ratios(key) -> list[float]:
            return [round(key(entry) / (entry["tar"] + entry["sha"]), 3) for entry in measured]

        without_images = ratios(lambda entry: entry["airlock"] - entry["phases"].get("images", 0))
        results = {
            "bundle_bytes": bundle.stat().st_size,
            "airlock_init_seconds": [round(entry["airlock"], 2) for entry in measured],
            "tar_xf_plus_sha256sum_seconds": [round(entry["tar"] + entry["sha"], 2) for entry in measured],
            "ratio_airlock_over_tar_plus_sha256sum": ratios(lambda entry: entry["airlock"]),
            "ratio_median": round(median(ratios(lambda entry: entry["airlock"])), 3),
            "airlock_phase_seconds": [entry["phases"] for entry in measured],
            "ratio_without_images_phase_median": round(median(without_images), 3),
            "containerd_alone_content_fetch_over_peer_median": round(median(ratios(lambda entry: entry["content_fetch"])), 3),
            "containerd_alone_images_pull_over_peer_median": round(median(ratios(lambda entry: entry["images_pull"])), 3),
            "airlock_peak_rss_MB": round(max(entry["rss"] for entry in measured) / 1024, 1),
            "images_in_containerd": [entry["loaded"] for entry in measured],
        }
        print(json.dumps(results, indent=2))
        print_goals([
            ("init <= 1.0x (tar -xf + sha256sum) (median)", results["ratio_median"] <= 1.0),
            ("peak RSS < 150 MB", results["airlock_peak_rss_MB"] < 150),
        ])
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
