"""`make bench` (fleet): 1 first + 2 control planes + N workers through the airlock.cluster playbook, N = 6, 12, 24.

Each node is a network namespace of this machine with its own --root, all on one switch (tests/fleet.py); kubeadm
and kubelet are the bundle's stand-ins, so what is measured is airlock's own work per node and the fan-out around
it. The first control plane serves its registry over TLS and the workers join `--from` it (docs/fleet.md,
airlock_from); the control planes are copied the bundle file.

For every N the same playbook runs twice on fresh nodes: in parallel (forks N + 3, the workers in one batch) and
one node after another (forks 1, batches of 1). Printed per N:
- both wall times and their ratio, and the workers' span in the parallel run (first worker's join start to the last
  one's end) and how it grows with N;
- the bytes the first node's registry served each joining worker (its access log, per client address) and what
  reached each worker's eth0 (its veth counter), against the floor (bundle.json, its signature and the members
  installer.remote.needed_members picks for the worker's architecture) and against the bundle file a copy sends;
- the CPU seconds the whole run took (this process's waited-for children: ansible and every node command) and one
  more join measured alone in a worker's namespace (CPU seconds user+sys, wall seconds): on C cores N joins cannot
  take less than N × that / C, which is the floor for the workers' span once the joins are CPU-bound;
- the load on the machine: the load average and how busy all cores were during each run (other work included).

FLEET_BENCH_SIZES (default "6,12,24") picks the Ns.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.runs import build, keygen, print_goals, sync_disks
from tests.conftest import node_command
from tests.fleet import IGNORE, Fleet, from_floor
from tests.test_node_day2 import write_admin_conf
from tests.upstream import LocalUpstream

INSTALL = "Install with airlock-node"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass
class Bringup:
    seconds: float
    worker_span: float
    served: list[int]  # bytes the first node's registry served each worker
    received: list[int]  # bytes each worker's eth0 received
    cpu: float  # CPU seconds of ansible and every node command in the run
    busy: float  # how busy all cores of the machine were during the run, 0..1
    load: float  # the 1-minute load average at the end
    join_cpu: float = 0.0  # one more join measured alone (parallel runs only)
    join_seconds: float = 0.0


def measure_one_join(fleet: Fleet, public_key: Path) -> tuple[float, float]:
    """CPU seconds (user+sys) and wall seconds of one worker join --from the first node, run alone in worker1's
    namespace onto a fresh root with the node.yaml the playbook wrote there."""
    worker = fleet.node("worker1")
    before, started = children_cpu(), time.monotonic()
    result = subprocess.run(
        [*worker.network.prefix, *node_command(), "join", "--from", fleet.registry.url, "--ca", str(fleet.registry.pki / "ca.crt"),
         "--key", str(public_key), "--config", str(worker.home / "stage/node.yaml"), "--root", str(worker.home / "alone"),
         "--ignore-preflight-errors", IGNORE, "--skip-phases", "images"],
        capture_output=True, text=True, env={**os.environ, "AIRLOCK_STANDIN_LOG": str(worker.home / "alone.log")},
    )
    seconds, cpu = time.monotonic() - started, children_cpu() - before
    if result.returncode != 0:
        raise SystemExit(f"the measured join failed:\n{result.stderr[-2000:]}")
    return cpu, seconds


def bring_up(work: Path, bundle: Path, public_key: Path, pyz: Path, workers: int, parallel: bool) -> Bringup:
    fleet = Fleet(work, bundle, public_key, pyz, control_planes=2, workers=workers, from_first=True)
    try:
        write_admin_conf(fleet.first.root, "https://192.0.2.10:6443")
        forks = workers + 3 if parallel else 1
        cpu, (busy, total) = children_cpu(), busy_jiffies()
        # A shared machine stretches the one-after-another runs: 24 workers took over 15 minutes under a load of 20.
        run = fleet.play("cluster.yml", forks=forks, extra=("-e", f"airlock_worker_batch={workers if parallel else 1}"), timeout=7200)
        cpu, (busy_end, total_end) = children_cpu() - cpu, busy_jiffies()
        if run.returncode != 0:
            raise SystemExit(f"playbook failed with {workers} workers:\n{run.stdout[-3000:]}")
        spans = [run.interval(f"worker{i + 1}", INSTALL) for i in range(workers)]
        served = fleet.registry.served()
        names = [f"worker{i + 1}" for i in range(workers)]
        measured = Bringup(
            seconds=run.seconds,
            worker_span=(max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds(),
            served=[served.get(fleet.node(name).network.address, 0) for name in names],
            received=[fleet.node(name).received() for name in names],
            cpu=cpu, busy=(busy_end - busy) / max(1, total_end - total), load=load_average(),
        )
        if parallel:
            measured.join_cpu, measured.join_seconds = measure_one_join(fleet, public_key)
        return measured
    finally:
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    sizes = [int(size) for size in os.environ.get("FLEET_BENCH_SIZES", "6,12,24").split(",")]
    cores = os.cpu_count() or 1
    base = Path(tempfile.mkdtemp(prefix="airlock-fleet-bench-"))
    upstream = LocalUpstream(base / "upstream").start()
    try:
        keys = keygen(base)
        bundle = build(upstream, keys, base / "k8s.tar", base / "cache")
        from tests.conftest import NODE_PYZ

        pyz = base / "airlock-node.pyz"
        shutil.copyfile(NODE_PYZ, pyz)
        floor, size = from_floor(bundle), bundle.stat().st_size
        print(f"fleet: bundle {size / 1e6:.1f} MB, {cores} cores, load average {load_average():.2f} at the start; workers join --from "
              f"the first node; the floor a worker must be served is {floor / 1e6:.1f} MB (bundle.json, signature, members but image blobs)")
        rows = []
        for workers in sizes:
            sync_disks()
            par = bring_up(base / f"par-{workers}", bundle, keys / "airlock.pub", pyz, workers, parallel=True)
            print(f"1+2+{workers:<3} parallel {par.seconds:7.1f}s  workers' span {par.worker_span:6.1f}s ({par.worker_span / workers:5.2f}s per worker); "
                  f"the sequential run follows")
            sync_disks()
            seq = bring_up(base / f"seq-{workers}", bundle, keys / "airlock.pub", pyz, workers, parallel=False)
            rows.append((workers, par, seq))
            served = max(par.served + seq.served)
            print(f"1+2+{workers:<3} parallel {par.seconds:7.1f}s  sequential {seq.seconds:7.1f}s  ratio {seq.seconds / par.seconds:5.2f}x  "
                  f"workers' span {par.worker_span:6.1f}s ({par.worker_span / workers:5.2f}s per worker)")
            print(f"        served per joining worker: at most {served / 1e6:.2f} MB, least {min(par.served + seq.served) / 1e6:.2f} MB "
                  f"({served / floor:.3f}x the floor, {served / size:.2f}x the bundle); received on eth0 at most "
                  f"{max(par.received + seq.received) / 1e6:.2f} MB")
            print(f"        CPU: parallel run {par.cpu:6.1f}s ({par.cpu / (workers + 3):.2f}s per node), sequential {seq.cpu:6.1f}s; "
                  f"one join alone {par.join_cpu:.2f} CPU s in {par.join_seconds:.2f}s wall, so {workers} joins on {cores} cores take at "
                  f"least {workers * par.join_cpu / cores:.1f}s")
            print(f"        machine: all cores {par.busy:.0%} busy in the parallel run, {seq.busy:.0%} in the sequential; "
                  f"load average {par.load:.2f} / {seq.load:.2f} at their ends")
        first_workers, first, _ = rows[0]
        for workers, par, _ in rows[1:]:
            print(f"workers' span grows {par.worker_span / first.worker_span:.2f}x from N={first_workers} to N={workers} "
                  f"({workers / first_workers:.1f}x the workers)")
        print_goals([
            ("the parallel run beats the sequential one at every N", all(seq.seconds > par.seconds for _, par, seq in rows)),
            ("workers' time grows less than the number of workers",
             all(par.worker_span / first.worker_span < workers / first_workers for workers, par, _ in rows[1:])),
            ("every joining worker is served less than 1.01x the --from floor, not the bundle",
             all(max(par.served + seq.served) < 1.01 * floor for _, par, seq in rows)),
        ], f"{cores} cores")
    finally:
        upstream.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
