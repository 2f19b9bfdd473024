"""`make bench` (node part): `verify` and `init` against what a Kubespray-style installer runs, same bundle, one run.

The same >= 512 MB bundle, in INSTALL_BENCH_ROUNDS rounds (default 3; airlock first in odd rounds, the peers
first in even ones; goals judged on the medians of the per-round ratios):

- `verify` against `sha256sum` of every member (extracted beforehand): goal airlock at least 2.5x faster;
- `init --skip-phases images,kubeadm-init,cni` (verify, unpack, binaries, runtime, registry, kubelet) against
  `tar -xf` + `sha256sum` of every member: goal <= 0.7;
- `init --skip-phases kubeadm-init,cni` (through the images phase, a fresh real containerd) against
  `tar -xf` + `sha256sum` + `ctr images import` of the images as one OCI archive: goal <= 0.5;
- peak RSS of airlock on every path: goal < 150 MB.

The images phase cannot be faster than containerd taking the images in, so each round also times containerd
alone doing that from the installed store (served by `airlock registry serve`, through the hosts.toml airlock
wrote, 4 images at a time, nothing else running): `ctr content fetch` (content and image records only) and
`ctr images pull` (fetch and unpack, what the phase runs). Those floors are reported against the peer too.

The physical floor of a hash-bound path is one sha256 pass: this CPU's hashlib throughput per core is printed.

Size: INSTALL_BENCH_MB (default 512). containerd: BENCH_CONTAINERD, 2 (Debian sid's 2.x from `make
containerd-sid`, the default, as nodes run) or 1.6 (this machine's); the peer's import uses the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen, median, print_goals, sync_disks, timed, use_containerd, wait_port
from bundle.manifest import Manifest
from installer.phases.images import PARALLEL_PULLS, pull_flags
from tests.containerd import Containerd
from tests.upstream import LocalUpstream, free_port

IGNORE = "all"
WITHOUT_IMAGES = "images,kubeadm-init,cni"
THROUGH_IMAGES = "kubeadm-init,cni"


def sha256_MBps_per_core(megabytes: int = 256) -> float:
    """hashlib's sha256 throughput on one core of this CPU (the floor of any path that hashes every byte once)."""
    data = os.urandom(1 << 20)
    digest = hashlib.sha256()
    started = time.process_time()
    for _ in range(megabytes):
        digest.update(data)
    return megabytes * (1 << 20) / (time.process_time() - started) / 1e6


def containerd_alone(root: Path, references: list[str], daemon_dir: Path, verb: list[str], arch: str = "amd64") -> float:
    """Seconds for a fresh containerd to take every image in from the node registry, PARALLEL_PULLS at a time."""
    hosts = root / "etc/containerd/certs.d"
    with Containerd(daemon_dir) as daemon:
        sync_disks()
        started = time.monotonic()
        with ThreadPoolExecutor(PARALLEL_PULLS) as pool:
            jobs = [
                pool.submit(daemon.ctr, *verb, *pull_flags(daemon.ctr_program), "--hosts-dir", str(hosts), "--platform", f"linux/{arch}", reference, timeout=600)
                for reference in references
            ]
            for job in jobs:
                job.result()
        seconds = time.monotonic() - started
        if len(daemon.image_digests()) != len(references):
            raise SystemExit(f"containerd holds {len(daemon.image_digests())} images after {' '.join(verb)}, not {len(references)}")
        return seconds


def airlock_init(work: Path, bundle: Path, keys: Path, skip: str, daemon: Containerd | None) -> dict:
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    listen = f"127.0.0.1:{free_port()}"
    config = work / "node.yaml"
    config.write_text(json.dumps({"nodeName": "bench", "registry": {"listen": listen}}))
    sync_disks()
    lines: list[str] = []
    argv = [AIRLOCK, "init", str(bundle), "--key", str(keys / "airlock.pub"), "--root", str(root), "--config", str(config),
            "--skip-phases", skip, "--ignore-preflight-errors", IGNORE]  # fmt: skip
    if daemon is not None:
        argv += ["--containerd-address", str(daemon.socket)]
    seconds, rss = timed(argv, lines)
    phases = {line.split("]")[0][1:]: float(line.rsplit(" ", 1)[1].rstrip("s")) for line in lines if "] done in " in line}
    return {"seconds": seconds, "rss": rss, "phases": phases, "root": root, "listen": listen}


def peer(work: Path, bundle: Path) -> dict:
    """tar -xf, then sha256sum of every member, then `ctr images import` of the images (one OCI archive)."""
    extracted = work / "extracted"
    shutil.rmtree(extracted, ignore_errors=True)
    extracted.mkdir()
    sync_disks()
    tar_seconds, _ = timed(["tar", "-xf", str(bundle), "-C", str(extracted)])
    list_file = work / "members"
    list_file.write_text("\0".join(str(p) for p in extracted.rglob("*") if p.is_file()))
    sync_disks()
    sha_seconds, _ = timed(["sh", "-c", f"xargs -0 sha256sum < {list_file} > /dev/null"])
    archive = work / "images.tar"  # what a Kubespray-style bundle carries: the images as an archive ctr imports
    subprocess.run(["tar", "-cf", str(archive), "-C", str(extracted / "images"), "."], check=True)
    with Containerd(Path(f"/tmp/bench-ctd-import-{os.getpid()}")) as daemon:
        sync_disks()
        import_seconds, _ = timed(
            ["ctr", "--address", str(daemon.socket), "--namespace", "k8s.io", "images", "import", "--platform", "linux/amd64", str(archive)]
        )
        imported = len(daemon.image_digests())
    archive.unlink()
    return {"tar": tar_seconds, "sha": sha_seconds, "import": import_seconds, "imported": imported}


def airlock_side(work: Path, bundle: Path, keys: Path) -> dict:
    verify_seconds, verify_rss = timed([AIRLOCK, "verify", str(bundle), "--key", str(keys / "airlock.pub"), "--quiet"])
    plain = airlock_init(work, bundle, keys, WITHOUT_IMAGES, None)
    with Containerd(Path(f"/tmp/bench-ctd-install-{os.getpid()}")) as daemon:
        full = airlock_init(work, bundle, keys, THROUGH_IMAGES, daemon)
        loaded = len(daemon.image_digests())
    return {"verify": verify_seconds, "verify_rss": verify_rss, "plain": plain, "full": full, "loaded": loaded}


def floors(work: Path, full: dict, references: list[str]) -> dict:
    server = subprocess.Popen(
        [AIRLOCK, "registry", "serve", "--store", str(full["root"] / "var/lib/airlock/store"), "--listen", full["listen"]], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(int(full["listen"].rpartition(":")[2]))
        return {
            name: containerd_alone(full["root"], references, Path(f"/tmp/bench-ctd-floor-{os.getpid()}"), verb)
            for name, verb in (("content_fetch", ["content", "fetch"]), ("images_pull", ["images", "pull"]))
        }
    finally:
        server.terminate()
        server.wait(10)


def one_round(number: int, work: Path, bundle: Path, keys: Path, references: list[str]) -> dict:
    if number % 2 == 0:
        ours = airlock_side(work, bundle, keys)
        theirs = peer(work, bundle)
    else:
        theirs = peer(work, bundle)
        ours = airlock_side(work, bundle, keys)
    return {**ours, **theirs, **floors(work, ours["full"], references), "load": os.getloadavg()[0]}


def bundle_images(bundle: Path) -> list[str]:
    """The images the bundle carries (the upstream serves every version's; the bundle one version's)."""
    with tarfile.open(bundle) as archive:
        head = archive.extractfile("bundle.json").read()
    return sorted({entry.reference for entry in Manifest.parse(head).images})


def main() -> None:
    total_mb = int(os.environ.get("INSTALL_BENCH_MB", "512"))
    rounds = int(os.environ.get("INSTALL_BENCH_ROUNDS", "3"))
    print(f"containerd {use_containerd(os.environ.get('BENCH_CONTAINERD', '2'))}")
    work = Path(tempfile.mkdtemp(prefix="airlock-installbench-"))
    upstream = LocalUpstream(work / "upstream", payload_bytes=(total_mb << 20) // 9, extra_images={}).start()
    try:
        keys = keygen(work)
        bundle = build(upstream, keys, work / "bundle.tar", work / "cache")
        references = bundle_images(bundle)
        measured = []
        for number in range(rounds):
            entry = one_round(number, work, bundle, keys, references)
            measured.append(entry)
            print(
                f"  round {number + 1} (load {entry['load']:.1f}): verify {entry['verify']:.2f}s, sha256sum {entry['sha']:.2f}s; "
                f"init without images {entry['plain']['seconds']:.2f}s, through images {entry['full']['seconds']:.2f}s "
                f"(images phase {entry['full']['phases'].get('images', 0):.2f}s); tar -xf {entry['tar']:.2f}s, "
                f"ctr images import {entry['import']:.2f}s; containerd alone: content fetch {entry['content_fetch']:.2f}s, "
                f"images pull {entry['images_pull']:.2f}s"
            )

        def ratios(numerator, denominator) -> list[float]:
            return [round(numerator(entry) / denominator(entry), 3) for entry in measured]

        def unpack_peer(entry):
            return entry["tar"] + entry["sha"]

        def images_peer(entry):
            return entry["tar"] + entry["sha"] + entry["import"]

        verify_speedup = ratios(lambda entry: entry["sha"], lambda entry: entry["verify"])
        plain = ratios(lambda entry: entry["plain"]["seconds"], unpack_peer)
        full = ratios(lambda entry: entry["full"]["seconds"], images_peer)
        size = bundle.stat().st_size
        results = {
            "bundle_bytes": size,
            "machine_load_per_round": [round(entry["load"], 1) for entry in measured],
            "sha256_hashlib_MBps_per_core": round(sha256_MBps_per_core(), 1),
            "verify_seconds": [round(entry["verify"], 2) for entry in measured],
            "sha256sum_every_member_seconds": [round(entry["sha"], 2) for entry in measured],
            "verify_speedup_over_sha256sum": verify_speedup,
            "verify_speedup_median": median(verify_speedup),
            "init_without_images_seconds": [round(entry["plain"]["seconds"], 2) for entry in measured],
            "tar_xf_plus_sha256sum_seconds": [round(unpack_peer(entry), 2) for entry in measured],
            "init_without_images_over_peer": plain,
            "init_without_images_over_peer_median": median(plain),
            "init_through_images_seconds": [round(entry["full"]["seconds"], 2) for entry in measured],
            "tar_sha256sum_ctr_import_seconds": [round(images_peer(entry), 2) for entry in measured],
            "init_through_images_over_peer": full,
            "init_through_images_over_peer_median": median(full),
            "airlock_phase_seconds": [entry["full"]["phases"] for entry in measured],
            "containerd_alone_content_fetch_over_peer_median": median(ratios(lambda entry: entry["content_fetch"], images_peer)),
            "containerd_alone_images_pull_over_peer_median": median(ratios(lambda entry: entry["images_pull"], images_peer)),
            "ctr_import_seconds": [round(entry["import"], 2) for entry in measured],
            "airlock_peak_rss_MB": round(max(max(entry["verify_rss"], entry["plain"]["rss"], entry["full"]["rss"]) for entry in measured) / 1024, 1),
            "images_in_containerd": [entry["loaded"] for entry in measured],
            "images_imported_by_ctr": [entry["imported"] for entry in measured],
        }
        print(json.dumps(results, indent=2))
        print_goals([
            ("verify >= 2.5x faster than sha256sum of every member (median)", results["verify_speedup_median"] >= 2.5),
            ("init without images <= 0.7x (tar -xf + sha256sum) (median)", results["init_without_images_over_peer_median"] <= 0.7),
            ("init through images <= 0.5x (tar -xf + sha256sum + ctr images import) (median)", results["init_through_images_over_peer_median"] <= 0.5),
            ("peak RSS < 150 MB (verify, init)", results["airlock_peak_rss_MB"] < 150),
        ])  # fmt: skip
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
