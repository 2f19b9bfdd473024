"""`make bench`: what verifying Kubernetes' signatures costs a build, and what re-verifying them costs a node.

Two local upstreams with the same layout and sizes: one publishes Kubernetes' signatures (made by the
Sigstore stand-in of tests/standin/sigstore.py: `.sig`/`.cert` beside kubeadm, kubelet and kubectl, a
cosign signature beside each registry.k8s.io image, a Rekor stand-in to look entries up in), the other
publishes none, so its build verifies nothing. Per round and upstream: a cold build (empty cache) and a
warm rebuild. Reported, as medians over BENCH_ROUNDS (default 3):

- per signature: the verification itself (bundle.keyless.verify, as the build reports it), and what
  finding it adds on a cold build (signature files, the signature manifest and payload, the log lookup);
- in total: cold and warm build time with verification against without;
- on the node: `airlock-node verify --provenance` against `verify` of the same bundle (the offline re-check).

Size: BENCH_MB (default 256) megabytes of image layers over the 7 control-plane images, two platforms each.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runs import build_argv, keygen, median, print_goals, sync_disks, timed
from tests.conftest import node_command
from tests.upstream import LocalUpstream

VERSION = "v1.36.4"
IMAGES = 7
REPORTED = re.compile(r"^verified (\d+) upstream signatures in ([0-9.]+)s .*finding them took ([0-9.]+)s")


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    total_mb = int(os.environ.get("BENCH_MB", "256"))
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-provenance-"))
    payload = (total_mb << 20) // (IMAGES * 2)
    print(f"provenance bench in {work}: {IMAGES} images x 2 platforms, {payload >> 20} MiB of random layer each, {rounds} rounds")
    upstreams = {
        name: LocalUpstream(
            work / name, versions=(VERSION,), labels={"stable-1.36": VERSION}, extra_images={}, payload_bytes=payload, signed=signed
        ).start()
        for name, signed in (("verified", True), ("unverified", False))
    }
    try:
        keys = keygen(work)
        results: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": []} for name in upstreams}
        verify_seconds: list[float] = []
        finding_seconds: list[float] = []
        signatures = 0
        for number in range(rounds):
            order = list(upstreams) if number % 2 == 0 else list(reversed(upstreams))
            for name in order:
                cache = work / f"cache-{name}"
                shutil.rmtree(cache, ignore_errors=True)
                for kind in ("cold", "warm"):
                    out = work / f"{name}-{kind}.tar"
                    out.unlink(missing_ok=True)
                    lines: list[str] = []
                    seconds, _ = timed(build_argv(upstreams[name], keys, out, cache, VERSION, "--arch", "amd64,arm64", "--cni", "none"), lines)
                    sync_disks()
                    results[name][kind].append(seconds)
                    reported = [REPORTED.match(line) for line in lines if REPORTED.match(line)]
                    if name == "verified" and kind == "cold" and reported:
                        signatures = int(reported[0].group(1))
                        verify_seconds.append(float(reported[0].group(2)))
                        finding_seconds.append(float(reported[0].group(3)))
        cold = {name: median(values["cold"]) for name, values in results.items()}
        warm = {name: median(values["warm"]) for name, values in results.items()}
        verifying = median(verify_seconds)
        per_signature = verifying / signatures if signatures else 0.0
        finding = median(finding_seconds) / signatures if signatures else 0.0
        print(f"signatures verified per build: {signatures} (6 binaries, 7 images)")
        print(f"verification itself: {verifying * 1000:.0f} ms per build, {per_signature * 1000:.1f} ms per signature")
        print(
            f"finding them on a cold build (signature files and manifests, log lookups; summed over threads): {finding * 1000:.1f} ms per signature"
        )
        for kind, measured in (("cold", cold), ("warm", warm)):
            extra = measured["verified"] - measured["unverified"]
            print(
                f"{kind} build: {measured['verified']:.2f}s verified, {measured['unverified']:.2f}s unverified "
                f"({extra:+.2f}s, {extra / measured['unverified'] * 100:+.0f}%)"
            )
        node = node_recheck(work / "verified-cold.tar", keys, rounds)
        recheck = node["provenance"] - node["plain"]
        print(
            f"node: verify {node['plain']:.2f}s, verify --provenance {node['provenance']:.2f}s ({recheck:+.2f}s for {signatures} signatures, imports included)"
        )
        cpu = node["provenance-cpu"] - node["plain-cpu"]
        print(
            f"node CPU: verify {node['plain-cpu']:.2f}s, verify --provenance {node['provenance-cpu']:.2f}s ({cpu:+.2f}s for {signatures} signatures)"
        )
        print_goals(
            [
                ("verifying one signature takes under 50 ms at build", per_signature < 0.05),
                ("verification adds under 2 s to a warm build of 13 signatures", warm["verified"] - warm["unverified"] < 2.0),
                ("a node re-verifies the 13 carried signatures offline in under 1.5 s more than verify", recheck < 1.5),
            ]
        )
    finally:
        for upstream in upstreams.values():
            upstream.close()
        shutil.rmtree(work, ignore_errors=True)


def node_recheck(bundle: Path, keys: Path, rounds: int) -> dict[str, float]:
    """`airlock-node verify` with and without --provenance, from the pyz, as a node runs it: wall and CPU seconds."""
    measured: dict[str, list[float]] = {"plain": [], "provenance": [], "plain-cpu": [], "provenance-cpu": []}
    for _ in range(rounds):
        for kind, extra in (("plain", []), ("provenance", ["--provenance"])):
            started, cpu = time.monotonic(), _children_cpu()
            subprocess.run(
                [*node_command(), "verify", str(bundle), "--key", str(keys / "airlock.pub"), "--quiet", *extra], check=True, stdout=subprocess.DEVNULL
            )
            measured[kind].append(time.monotonic() - started)
            measured[f"{kind}-cpu"].append(_children_cpu() - cpu)
    return {kind: median(values) for kind, values in measured.items()}


def _children_cpu() -> float:
    """User and system CPU seconds of finished child processes (less sensitive than wall time to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
