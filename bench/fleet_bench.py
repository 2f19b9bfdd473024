"""`make bench` (fleet): 1 first + 2 control planes + N workers through the airlock.cluster playbook, N = 6, 12, 24.

Each node is a network namespace of this machine with its own --root (tests/fleet.py); kubeadm and kubelet
are the bundle's stand-ins, so what is measured is airlock's own work per node and the fan-out around it.
For every N the same playbook runs twice on fresh nodes: in parallel (forks N + 3, the workers in one
batch) and one node after another (forks 1, the joins run sequentially). Printed per N: both wall times,
their ratio, the workers' span in the parallel run (first worker start to last worker end) and how it grows
with N, and the bytes each joining worker was sent: measured as what landed in its staging directory (the
playbook copies the installer, the key and the bundle file whole), beside the floor a worker joining `--from`
the first control plane would fetch of the bundle (bundle.json, its signature and every member but the image
blobs, which its containerd pulls through the registries as the kubelet needs them: installer.remote.needed_members).

FLEET_BENCH_SIZES (default "6,12,24") picks the Ns.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from bench.runs import build, keygen, print_goals, sync_disks
from tests.fleet import Fleet
from tests.test_node_day2 import write_admin_conf
from tests.upstream import LocalUpstream

INSTALL = "Install with airlock-node"


def bring_up(work: Path, bundle: Path, public_key: Path, pyz: Path, workers: int, parallel: bool) -> tuple[float, float, int]:
    """(wall seconds of the playbook, seconds from the first worker's install start to the last one's end,
    the most bytes any worker was sent into its staging directory)."""
    fleet = Fleet(work, bundle, public_key, pyz, control_planes=2, workers=workers)
    try:
        write_admin_conf(fleet.first.root, "https://192.0.2.10:6443")
        forks = workers + 3 if parallel else 1
        run = fleet.play("cluster.yml", forks=forks, extra=("-e", f"airlock_worker_batch={workers if parallel else 1}"))
        if run.returncode != 0:
            raise SystemExit(f"playbook failed with {workers} workers:\n{run.stdout[-3000:]}")
        spans = [run.interval(f"worker{i + 1}", INSTALL) for i in range(workers)]
        sent = max(sum(f.stat().st_size for f in (fleet.node(f"worker{i + 1}").home / "stage").iterdir() if f.is_file()) for i in range(workers))
        return run.seconds, (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds(), sent
    finally:
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)


def from_floor(bundle: Path, arch: str = "amd64") -> int:
    """Bytes of the bundle a worker joining --from fetches: bundle.json, its signature and the members
    installer.remote.needed_members picks for its architecture (never image blobs)."""
    from bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
    from installer.remote import needed_members

    with tarfile.open(bundle) as archive:
        manifest = Manifest.parse(archive.extractfile(MANIFEST_NAME).read())
        heads = sum(archive.getmember(name).size for name in (MANIFEST_NAME, SIGNATURE_NAME))
    return heads + sum(entry.size for entry in needed_members(manifest, arch))


def main() -> None:
    sizes = [int(size) for size in os.environ.get("FLEET_BENCH_SIZES", "6,12,24").split(",")]
    base = Path(tempfile.mkdtemp(prefix="airlock-fleet-bench-"))
    upstream = LocalUpstream(base / "upstream").start()
    try:
        keys = keygen(base)
        bundle = build(upstream, keys, base / "k8s.tar", base / "cache")
        from tests.conftest import NODE_PYZ

        pyz = base / "airlock-node.pyz"
        shutil.copyfile(NODE_PYZ, pyz)
        floor = from_floor(bundle)
        print(
            f"fleet: bundle {bundle.stat().st_size / 1e6:.1f} MB, {os.cpu_count()} cores; "
            f"a worker joining --from would fetch {floor / 1e6:.1f} MB of it (bundle.json, signature, members but image blobs)"
        )
        rows = []
        for workers in sizes:
            sync_disks()
            parallel, worker_span, sent = bring_up(base / f"par-{workers}", bundle, keys / "airlock.pub", pyz, workers, parallel=True)
            sync_disks()
            sequential, _, _ = bring_up(base / f"seq-{workers}", bundle, keys / "airlock.pub", pyz, workers, parallel=False)
            rows.append((workers, parallel, sequential, worker_span))
            print(
                f"1+2+{workers:<3} parallel {parallel:7.1f}s  sequential {sequential:7.1f}s  ratio {sequential / parallel:5.2f}x  "
                f"workers' span {worker_span:6.1f}s ({worker_span / workers:5.2f}s per worker)  "
                f"bytes sent per joining worker {sent / 1e6:.1f} MB ({sent / floor:.1f}x the --from floor)"
            )
        first_workers, _, _, first_span = rows[0]
        for workers, _, _, span in rows[1:]:
            print(f"workers' span grows {span / first_span:.2f}x from N={first_workers} to N={workers} ({workers / first_workers:.1f}x the workers)")
        print_goals(
            [
                ("the parallel run beats the sequential one at every N", all(sequential > parallel for _, parallel, sequential, _ in rows)),
                (
                    "workers' time grows less than the number of workers",
                    all(span / first_span < workers / first_workers for workers, _, _, span in rows[1:]),
                ),
            ],
            f"{os.cpu_count()} cores",
        )
    finally:
        upstream.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
