"""Legitimate GET latency of `airlock registry serve` while its port is flooded (loopback only).

For each attack (none; 5000 idle connections; 2000 half-open requests; 2000
slow-loris clients; 3000 connections closed at once; 2000 TLS handshakes
that never start) a legitimate client GETs a manifest and a 1 MiB blob on
fresh connections, ROUNDS times each, and the p50/p99 of those GETs is
printed. A GET that fails counts as its client timeout (CLIENT_TIMEOUT s).
The server runs with its defaults (4096 connections, 10 s header deadline).

    python -m bench.registry_flood_bench                 # this tree
    python -m bench.registry_flood_bench --source DIR    # another airlock source tree (e.g. `git archive main`)

Measured on the 2-CPU CI machine under other load (legitimate GET p50 / p99
in ms, 30 GETs each, failures at the 5 s client timeout), thread-per-connection
server before and event-loop server (2 workers) after:

    attack                       before              after
    none                         1.6 / 16.5          4.2 / 9.0
    5000 idle                    1.8 / 1033          4.3 / 243
    2000 half-open               3.5 / 56            4.0 / 153
    2000 slow-loris              1.6 / 49            3.8 / 27
    3000 closed at once          5.5 / 5000 (1 failed)   6.3 / 94
    TLS, none                    79 / 188            20 / 127
    TLS, 2000 stalled handshakes 61 / 1077           20 / 60

Before, slow-loris and half-open connections were kept for as long as they
trickled (no header deadline) and stalled handshakes for 60 s; after, every
one is cut at 10 s or evicted at the cap, and the server's RSS stays at 45 MB
with 5000 connections.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runs import AIRLOCK
from tests import flood
from tests.ocilayout import Layout
from tests.upstream import free_port

ROUNDS = 15
CLIENT_TIMEOUT = 5.0


def start(argv_prefix: list[str], store: Path, tls: tuple[Path, Path] | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [*argv_prefix, "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--no-access-log"]
    if tls:
        argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("registry did not start") from None
            time.sleep(0.1)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def figures(samples: list[float]) -> dict:
    failed = sum(sample >= CLIENT_TIMEOUT for sample in samples)
    return {
        "p50_ms": round(flood.percentile(samples, 0.5) * 1000, 1),
        "p99_ms": round(flood.percentile(samples, 0.99) * 1000, 1),
        "failed": failed,
        "of": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, help="run the registry from this airlock source tree instead")
    args = parser.parse_args()
    prefix = [AIRLOCK]
    if args.source:
        prefix = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(args.source)!r}); from installer.cli import main; sys.argv[0] = 'airlock'; main()",
        ]
    print(f"open files: {flood.raise_fd_limit()}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="airlock-floodbench-"))
    results = {}
    try:
        layout = Layout(work / "store")
        image = layout.add("registry.example/flood/app:1", "oci", payload_bytes=1 << 20)
        layer = max(image.blobs, key=lambda digest: len(image.blobs[digest]))
        paths = ["/v2/flood/app/manifests/1?ns=registry.example", f"/v2/flood/app/blobs/{layer}?ns=registry.example"]
        pki = work / "pki"
        subprocess.run([AIRLOCK, "registry", "cert", "--ca-out", str(pki), "--name", "127.0.0.1"], check=True, capture_output=True)
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))

        process, port = start(prefix, layout.root, None)
        try:
            measure = lambda: figures(flood.latencies(port, paths, ROUNDS, timeout=CLIENT_TIMEOUT))  # noqa: E731
            results["none"] = measure()
            with flood.idle(port, 5000) as held:
                results["idle_5000"] = {**measure(), "attack_connections": len(held)}
            with flood.half_open(port, 2000) as held:
                results["half_open_2000"] = {**measure(), "attack_connections": len(held)}
            with flood.slow_loris(port, 2000, interval=1.0):
                time.sleep(2)
                results["slow_loris_2000"] = measure()
            sockets = flood.connect_many(port, 3000, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1)
            flood.close_all(sockets)
            results["closed_at_once_3000"] = measure()
            results["server_alive"] = process.poll() is None
            results["server_peak_rss_MB"] = round(peak_rss_kib(process.pid) / 1024, 1)
        finally:
            process.terminate()
            process.wait(20)

        process, port = start(prefix, layout.root, (pki / "registry.crt", pki / "registry.key"))
        try:
            measure = lambda: figures(flood.latencies(port, paths, ROUNDS, context, timeout=CLIENT_TIMEOUT))  # noqa: E731
            results["tls_none"] = measure()
            with flood.stalled_handshakes(port, 2000) as held:
                results["tls_stalled_handshakes_2000"] = {**measure(), "attack_connections": len(held)}
        finally:
            process.terminate()
            process.wait(20)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
