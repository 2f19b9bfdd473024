"""`make bench` (install from a registry): a worker joining from the first node against one installing from a local bundle copy.

One two-architecture bundle (amd64 + arm64) with FROM_BENCH_MB (default 256)
of image layers. The first node is installed from the file and its registry
serves the store over TLS on 127.0.0.1. Then, in FROM_BENCH_ROUNDS
alternating rounds (default 3, judged on medians), a fresh worker with a
fresh containerd joins (`--skip-phases kubeadm-join`):

- from the file: `airlock join bundle.tar` with registry.mirror pointing at
  the first node (it reads and hashes the whole bundle, images pulled from
  the first node);
- from the registry: `airlock join --from https://127.0.0.1:PORT --ca ...`
  (no bundle file; only its members, images pulled the same way).

Bytes moved per worker come from the first node's access log: what the
`--from` worker fetched of the bundle artifact (its architecture's members,
bundle.json and signature) against the bundle file every file-installed
worker needs a copy of.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen, median, print_goals, sync_disks, timed
from bundle.artifact import REPOSITORY
from tests.containerd import Containerd
from tests.upstream import LocalUpstream, free_port

_LOG = re.compile(r'"GET (\S+)" (\d+) (\d+) ')


def served_bytes(log: Path, since: int) -> tuple[int, int]:
    """(bytes of the bundle artifact, bytes of everything else) the first node sent after byte offset `since` of its log."""
    artifact = other = 0
    with open(log, "rb") as handle:
        handle.seek(since)
        for line in handle.read().decode(errors="replace").splitlines():
            match = _LOG.search(line)
            if not match:
                continue
            if match.group(1).startswith(f"/v2/{REPOSITORY}/"):
                artifact += int(match.group(3))
            else:
                other += int(match.group(3))
    return artifact, other


def join(work: Path, keys: Path, source: list[str], config: dict, log: Path) -> dict:
    root = work / "worker"
    shutil.rmtree(root, ignore_errors=True)
    node_yaml = work / "worker.yaml"
    node_yaml.write_text(json.dumps(config))
    since = log.stat().st_size
    with Containerd(Path(f"/tmp/bench-ctd-from-{os.getpid()}")) as daemon:
        sync_disks()
        lines: list[str] = []
        seconds, rss = timed(
            [AIRLOCK, "join", *source, "--key", str(keys / "airlock.pub"), "--root", str(root), "--config", str(node_yaml),
             "--skip-phases", "kubeadm-join", "--ignore-preflight-errors", "all", "--containerd-address", str(daemon.socket)],
            lines,
        )  # fmt: skip
        images = len(daemon.image_digests())
    time.sleep(0.2)  # the access log line of the last request
    artifact, other = served_bytes(log, since)
    phases = {line.split("]")[0][1:]: float(line.rsplit(" ", 1)[1].rstrip("s")) for line in lines if "] done in " in line}
    return {"seconds": seconds, "rss": rss, "unpack": phases.get("unpack", 0.0), "images": images, "artifact_bytes": artifact, "image_bytes": other}


def main() -> None:
    total_mb = int(os.environ.get("FROM_BENCH_MB", "256"))
    rounds = int(os.environ.get("FROM_BENCH_ROUNDS", "3"))
    work = Path(tempfile.mkdtemp(prefix="airlock-frombench-"))
    upstream = LocalUpstream(work / "upstream", payload_bytes=(total_mb << 20) // 18, extra_images={}).start()
    server = None
    try:
        keys = keygen(work)
        bundle = build(upstream, keys, work / "bundle.tar", work / "cache", "stable-1.36", "--arch", "amd64,arm64")
        pki = work / "pki"
        subprocess.run([AIRLOCK, "registry", "cert", "--ca-out", str(pki), "--name", "127.0.0.1"], check=True, capture_output=True)
        listen = f"127.0.0.1:{free_port()}"
        first = work / "first"
        first_yaml = work / "first.yaml"
        first_yaml.write_text(
            json.dumps({"nodeName": "cp1", "registry": {"listen": listen, "tlsCert": str(pki / "registry.crt"), "tlsKey": str(pki / "registry.key")}})
        )
        timed([AIRLOCK, "init", str(bundle), "--key", str(keys / "airlock.pub"), "--root", str(first), "--config", str(first_yaml),
               "--skip-phases", "images,kubeadm-init,cni", "--ignore-preflight-errors", "all"])  # fmt: skip
        log = work / "access.log"
        server = subprocess.Popen(
            [AIRLOCK, "registry", "serve", "--store", str(first / "var/lib/airlock/store"), "--listen", listen,
             "--tls-cert", str(pki / "registry.crt"), "--tls-key", str(pki / "registry.key")],
            stderr=open(log, "wb"),
        )  # fmt: skip
        time.sleep(1.0)
        worker = {
            "nodeName": "worker1",
            "controlPlaneEndpoint": "127.0.0.1:6443",
            "token": "abcdef.0123456789abcdef",
            "caCertHashes": ["sha256:" + "1" * 64],
        }
        from_file = {**worker, "registry": {"mirror": f"https://{listen}", "ca": str(pki / "ca.crt")}}
        measured: dict[str, list[dict]] = {"file": [], "registry": []}
        for number in range(rounds):
            order = ("file", "registry") if number % 2 == 0 else ("registry", "file")
            for kind in order:
                if kind == "file":
                    measured[kind].append(join(work, keys, [str(bundle)], from_file, log))
                else:
                    measured[kind].append(join(work, keys, ["--from", f"https://{listen}", "--ca", str(pki / "ca.crt")], worker, log))
            print(
                f"  round {number + 1}: join from the file {measured['file'][-1]['seconds']:.2f}s (unpack {measured['file'][-1]['unpack']:.2f}s), "
                f"join --from the first node {measured['registry'][-1]['seconds']:.2f}s (unpack {measured['registry'][-1]['unpack']:.2f}s)"
            )
        ratios = [round(r["seconds"] / f["seconds"], 3) for r, f in zip(measured["registry"], measured["file"], strict=True)]
        unpack_ratios = [round(r["unpack"] / f["unpack"], 3) for r, f in zip(measured["registry"], measured["file"], strict=True) if f["unpack"]]
        moved = measured["registry"][-1]["artifact_bytes"]
        results = {
            "bundle_bytes": bundle.stat().st_size,
            "join_from_file_seconds": [round(entry["seconds"], 2) for entry in measured["file"]],
            "join_from_registry_seconds": [round(entry["seconds"], 2) for entry in measured["registry"]],
            "ratio_registry_over_file_median": round(median(ratios), 3),
            "unpack_ratio_registry_over_file_median": round(median(unpack_ratios), 3) if unpack_ratios else None,
            "bundle_bytes_moved_per_worker_from_registry": moved,
            "moved_over_bundle": round(moved / bundle.stat().st_size, 6),
            "image_bytes_pulled_per_worker": measured["registry"][-1]["image_bytes"],
            "all_bytes_per_worker_over_bundle": round((moved + measured["registry"][-1]["image_bytes"]) / bundle.stat().st_size, 4),
            "images_in_containerd": [entry["images"] for entry in measured["registry"]],
            "peak_rss_MB_registry": round(max(entry["rss"] for entry in measured["registry"]) / 1024, 1),
        }
        print(json.dumps(results, indent=2))
        print_goals(
            [
                ("join --from <= 1.0x join from a local file (median)", results["ratio_registry_over_file_median"] <= 1.0),
                ("bundle bytes moved per worker < bundle size", moved < bundle.stat().st_size),
            ]
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
