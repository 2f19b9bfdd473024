"""`make bench` (registry part): `airlock registry serve` against CNCF distribution, same images, one run.

- containerd pulling every image into an empty content store, through a hosts.toml mirror, in
  REGISTRY_BENCH_ROUNDS alternating rounds (default 3; goal: airlock <= 0.5x distribution, median);
- a client that is not the bottleneck: one curl fetching every blob once, PARALLEL_FETCHES at a time
  (`curl --parallel`), in the same alternating rounds, and the same fetch from busybox httpd serving the
  same blob files under the same paths: a server with no registry logic at all (sendfile, one connection
  per request), what serving nothing but the files costs with this client on this machine;
- 32 concurrent curl clients fetching every blob (keep-alive), total time and throughput;
- HEAD manifest latency p50 and p99 over keep-alive connections;
- peak RSS of airlock's server after the load.

Size: REGISTRY_BENCH_MB (default 256) megabytes of image layers. containerd: BENCH_CONTAINERD, 2 (Debian
sid's 2.x, the default: its ctr pulls through the daemon's transfer service) or 1.6 (this machine's).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen, median, print_goals, use_containerd, wait_port
from bundle.trust import load_trusted_keys
from bundle.unpack import unpack_images
from tests.containerd import Containerd
from tests.upstream import LocalUpstream, free_port

CLIENTS = 32
PARALLEL_FETCHES = 8


def blob_paths(store: Path, prefix: str, ns: str | None) -> list[tuple[str, int]]:
    """(path, size) of every blob of every image, as this server names it."""
    found = []
    index = json.loads((store / "index.json").read_bytes())
    for entry in index["manifests"]:
        reference = entry["annotations"]["io.containerd.image.name"]
        name = reference.rsplit(":", 1)[0]
        repository = name if prefix == "full" else name.split("/", 1)[1]
        query = f"?ns={name.split('/', 1)[0]}" if ns else ""
        stack = [entry["digest"]]
        while stack:
            digest = stack.pop()
            document = json.loads((store / "blobs" / "sha256" / digest[7:]).read_bytes())
            stack += [m["digest"] for m in document.get("manifests", []) if (store / "blobs" / "sha256" / m["digest"][7:]).exists()]
            for blob in [document.get("config"), *document.get("layers", [])]:
                if blob:
                    found.append((f"/v2/{repository}/blobs/{blob['digest']}{query}", blob["size"]))
    return found


def concurrent_fetch(port: int, paths: list[tuple[str, int]], work: Path) -> tuple[float, int]:
    config = work / f"curl-{port}.cfg"
    config.write_text("".join(f'url = "http://127.0.0.1:{port}{path}"\noutput = "/dev/null"\n' for path, _ in paths))
    started = time.monotonic()
    processes = [subprocess.Popen(["curl", "-sf", "--config", str(config)]) for _ in range(CLIENTS)]
    failures = sum(process.wait() != 0 for process in processes)
    seconds = time.monotonic() - started
    if failures:
        raise SystemExit(f"{failures} curl clients failed against port {port}")
    return seconds, CLIENTS * sum(size for _, size in paths)


def parallel_fetch(port: int, paths: list[tuple[str, int]], work: Path) -> float:
    """Seconds for one curl to fetch every blob once, PARALLEL_FETCHES at a time."""
    config = work / f"curl-parallel-{port}.cfg"
    config.write_text("".join(f'url = "http://127.0.0.1:{port}{path}"\noutput = "/dev/null"\n' for path, _ in paths))
    started = time.monotonic()
    result = subprocess.run(["curl", "-sf", "--parallel", "--parallel-max", str(PARALLEL_FETCHES), "--config", str(config)])
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"curl --parallel failed against port {port}")
    return seconds


def static_server(store: Path, paths: list[tuple[str, int]], work: Path) -> tuple[subprocess.Popen, int]:
    """busybox httpd serving the store's blob files (hard links) under the registry's blob paths: files and nothing else."""
    root = work / "static"
    for path, _ in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(store / "blobs" / "sha256" / path.rsplit(":", 1)[1], target)
    port = free_port()
    process = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(root)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return process, port


def head_latency(port: int, path: str, count: int = 2000) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}
    for _ in range(count):
        started = time.perf_counter()
        connection.request("HEAD", path, headers=accept)
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
        assert response.status == 200, response.status
    connection.close()
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def containerd_pull(work: Path, name: str, host: str, references: list[str], path_style: str) -> float:
    daemon = Containerd(Path(f"/tmp/bench-ctd-{name}-{os.getpid()}"))
    try:
        for upstream in ("registry.k8s.io", "docker.io"):
            daemon.hosts(upstream, f'server = "https://{upstream}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n')
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda reference: daemon.pull(reference, "linux/amd64,linux/arm64"), references))
        return time.monotonic() - started
    finally:
        daemon.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    total_mb = int(os.environ.get("REGISTRY_BENCH_MB", "256"))
    print(f"containerd {use_containerd(os.environ.get('BENCH_CONTAINERD', '2'))}")
    work = Path(tempfile.mkdtemp(prefix="airlock-regbench-"))
    payload = (total_mb << 20) // 20
    upstream = LocalUpstream(work / "upstream", payload_bytes=payload).start()
    server = static = None
    try:
        keys = keygen(work)
        bundle = build(upstream, keys, work / "bundle.tar", work / "cache", "stable-1.36", "--arch", "amd64,arm64")
        store = work / "store"
        unpack_images(bundle, load_trusted_keys([keys / "airlock.pub"]), store)
        port = free_port()
        server = subprocess.Popen(
            [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--no-access-log"], stderr=subprocess.DEVNULL
        )
        wait_port(port)
        references = [e["annotations"]["io.containerd.image.name"] for e in json.loads((store / "index.json").read_bytes())["manifests"]]
        distribution = upstream.registry
        results = {}
        ours = blob_paths(store, "short", ns=True)
        theirs = blob_paths(store, "short", ns=False)
        rounds = int(os.environ.get("REGISTRY_BENCH_ROUNDS", "3"))
        pulls: dict[str, list[float]] = {"airlock": [], "distribution": []}
        fetches: dict[str, list[float]] = {"airlock": [], "distribution": [], "static": []}
        static, static_port = static_server(store, theirs, work)
        for number in range(rounds):
            order = ["airlock", "distribution"] if number % 2 == 0 else ["distribution", "airlock"]
            for name in order:
                host = f"127.0.0.1:{port}" if name == "airlock" else distribution.host
                pulls[name].append(containerd_pull(work, f"{name}{number}", host, references, "ns"))
            for name in [*order, "static"] if number % 2 == 0 else ["static", *order]:
                chosen = {"airlock": (port, ours), "distribution": (distribution.port, theirs), "static": (static_port, theirs)}[name]
                fetches[name].append(parallel_fetch(*chosen, work))
            print(
                f"  round {number + 1} (load {os.getloadavg()[0]:.1f}): containerd pull airlock {pulls['airlock'][-1]:.2f}s distribution "
                f"{pulls['distribution'][-1]:.2f}s; curl --parallel {PARALLEL_FETCHES} airlock {fetches['airlock'][-1]:.2f}s "
                f"distribution {fetches['distribution'][-1]:.2f}s static files {fetches['static'][-1]:.2f}s"
            )
        results["containerd_pull_seconds"] = {name: [round(seconds, 2) for seconds in values] for name, values in pulls.items()}
        results["parallel_fetch_seconds"] = {name: [round(seconds, 2) for seconds in values] for name, values in fetches.items()}
        airlock_seconds, moved = concurrent_fetch(port, ours, work)
        distribution_seconds, _ = concurrent_fetch(distribution.port, theirs, work)
        results["concurrent_32_clients"] = {
            "bytes": moved,
            "airlock_seconds": round(airlock_seconds, 2),
            "distribution_seconds": round(distribution_seconds, 2),
            "airlock_GBps": round(moved / airlock_seconds / 1e9, 2),
            "distribution_GBps": round(moved / distribution_seconds / 1e9, 2),
        }
        p50, p99 = head_latency(port, "/v2/kube-apiserver/manifests/v1.36.4?ns=registry.k8s.io")
        d50, d99 = head_latency(distribution.port, "/v2/kube-apiserver/manifests/v1.36.4")
        results["head_manifest_us"] = {
            "airlock_p50": round(p50),
            "airlock_p99": round(p99),
            "distribution_p50": round(d50),
            "distribution_p99": round(d99),
        }
        results["airlock_peak_rss_MB"] = round(rss_mb(server.pid), 1)
        pull = results["containerd_pull_seconds"]
        load = results["concurrent_32_clients"]
        ratios = {
            "containerd_pull_airlock_over_distribution": round(
                median([a / d for a, d in zip(pull["airlock"], pull["distribution"], strict=True)]), 3
            ),
            "parallel_fetch_airlock_over_distribution": round(
                median(
                    [
                        a / d
                        for a, d in zip(results["parallel_fetch_seconds"]["airlock"], results["parallel_fetch_seconds"]["distribution"], strict=True)
                    ]
                ),
                3,
            ),
            "parallel_fetch_static_files_over_distribution": round(
                median([s / d for s, d in zip(results["parallel_fetch_seconds"]["static"], results["parallel_fetch_seconds"]["distribution"], strict=True)]), 3
            ),
            "parallel_fetch_airlock_over_static_files": round(
                median([a / s for a, s in zip(results["parallel_fetch_seconds"]["airlock"], results["parallel_fetch_seconds"]["static"], strict=True)]), 3
            ),
            "concurrent_fetch_airlock_over_distribution": round(load["airlock_seconds"] / load["distribution_seconds"], 3),
            "head_p50_airlock_over_distribution": round(p50 / d50, 3),
            "head_p99_airlock_over_distribution": round(p99 / d99, 3),
        }
        results["ratios"] = ratios
        print(json.dumps(results, indent=2))
        goals = [
            ("containerd pull <= 0.5x distribution (median)", ratios["containerd_pull_airlock_over_distribution"] <= 0.5),
            (
                f"curl --parallel {PARALLEL_FETCHES} fetch <= 0.5x distribution (median; static files by sendfile alone are "
                f"{ratios['parallel_fetch_static_files_over_distribution']}x)",
                ratios["parallel_fetch_airlock_over_distribution"] <= 0.5,
            ),
            ("32-client fetch <= 1.0x distribution", ratios["concurrent_fetch_airlock_over_distribution"] <= 1.0),
            ("32-client fetch >= 1 GB/s", load["airlock_GBps"] >= 1.0),
            ("HEAD p50 <= 1.5x distribution", ratios["head_p50_airlock_over_distribution"] <= 1.5),
            ("HEAD p99 <= 1.5x distribution", ratios["head_p99_airlock_over_distribution"] <= 1.5),
            ("airlock RSS < 100 MB", results["airlock_peak_rss_MB"] < 100),
        ]
        print_goals(goals)
    finally:
        for process in (server, static):
            if process is not None:
                process.terminate()
                process.wait(10)
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
