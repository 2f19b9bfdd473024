"""`make bench` (installer part): `airlock init --skip-phases kubeadm-init,cni` against tar -xf plus sha256sum.

The same >= 512 MB bundle, in one run: airlock verifies, unpacks, installs and
loads every image into a real containerd through its registry; the peer is
`tar -xf` of the bundle followed by `sha256sum` of every member, timed
separately and summed. Also the peak RSS of airlock.

Size: INSTALL_BENCH_MB (default 512).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen, sync_disks, timed
from tests.containerd import Containerd
from tests.upstream import LocalUpstream, free_port

IGNORE = "all"


def main() -> None:
    total_mb = int(os.environ.get("INSTALL_BENCH_MB", "512"))
    work = Path(tempfile.mkdtemp(prefix="airlock-installbench-"))
    upstream = LocalUpstream(work / "upstream", payload_bytes=(total_mb << 20) // 9, extra_images={}).start()
    daemon = None
    try:
        keys = keygen(work)
        bundle = build(upstream, keys, work / "bundle.tar", work / "cache")
        daemon = Containerd(Path(f"/tmp/bench-ctd-install-{os.getpid()}"))
        config = work / "node.yaml"
        config.write_text(json.dumps({"nodeName": "bench", "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
        sync_disks()
        lines: list[str] = []
        airlock_seconds, rss = timed(
            [AIRLOCK, "init", str(bundle), "--key", str(keys / "airlock.pub"), "--root", str(work / "root"), "--config", str(config),
             "--skip-phases", "kubeadm-init,cni", "--ignore-preflight-errors", IGNORE, "--containerd-address", str(daemon.socket)],
            lines,
        )
        phase_seconds = {line.split("]")[0][1:]: float(line.rsplit(" ", 1)[1].rstrip("s")) for line in lines if "] done in " in line}
        extracted = work / "extracted"
        extracted.mkdir()
        sync_disks()
        tar_seconds, _ = timed(["tar", "-xf", str(bundle), "-C", str(extracted)])
        members = [str(p) for p in extracted.rglob("*") if p.is_file()]
        list_file = work / "members"
        list_file.write_text("\0".join(members))
        sha_seconds, _ = timed(["sh", "-c", f"xargs -0 sha256sum < {list_file} > /dev/null"])
        results = {
            "bundle_bytes": bundle.stat().st_size,
            "airlock_init_seconds": round(airlock_seconds, 2),
            "tar_xf_seconds": round(tar_seconds, 2),
            "sha256sum_members_seconds": round(sha_seconds, 2),
            "ratio_airlock_over_tar_plus_sha256sum": round(airlock_seconds / (tar_seconds + sha_seconds), 3),
            "airlock_phase_seconds": phase_seconds,
            "airlock_without_images_phase_seconds": round(airlock_seconds - phase_seconds.get("images", 0), 2),
            "ratio_without_images_phase": round((airlock_seconds - phase_seconds.get("images", 0)) / (tar_seconds + sha_seconds), 3),
            "airlock_peak_rss_MB": round(rss / 1024, 1),
            "images_in_containerd": len(daemon.image_digests()),
        }
        print(json.dumps(results, indent=2))
        for goal, met in (
            ("init <= 1.0x (tar -xf + sha256sum)", results["ratio_airlock_over_tar_plus_sha256sum"] <= 1.0),
            ("peak RSS < 150 MB", results["airlock_peak_rss_MB"] < 150),
        ):
            print(f"{'met   ' if met else 'MISSED'} {goal}")
    finally:
        if daemon is not None:
            daemon.close()
            shutil.rmtree(daemon.root, ignore_errors=True)
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
