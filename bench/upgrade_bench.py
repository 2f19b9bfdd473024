"""`make bench` (upgrade part): for one patch upgrade, delta bytes against a full bundle and a tag-level differential.

Two patch releases whose kube-* images differ and whose other images are the
same, as in the tests, with UPGRADE_BENCH_MB (default 256) of layers in all.
Prints what each kind of update moves: the full new bundle, airlock's
blob-level delta (`--base`), and a tag-level differential (every blob of every
image whose tag changed, as Zarf's differential packages do).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.runs import AIRLOCK, build, keygen
from tests.upstream import LocalUpstream


def main() -> None:
    total_mb = int(os.environ.get("UPGRADE_BENCH_MB", "256"))
    work = Path(tempfile.mkdtemp(prefix="airlock-upgradebench-"))
    upstream = LocalUpstream(work / "upstream", versions=("v1.36.4", "v1.36.5"), payload_bytes=(total_mb << 20) // 13, extra_images={}).start()
    try:
        keys = keygen(work)
        cache = work / "cache"
        old = build(upstream, keys, work / "old.tar", cache, "v1.36.4", "--serial", "1")
        new = build(upstream, keys, work / "new.tar", cache, "v1.36.5", "--serial", "2")
        delta = build(upstream, keys, work / "delta.tar", cache, "v1.36.5", "--serial", "2", "--base", str(old))
        result = json.loads(
            subprocess.run([AIRLOCK, "diff", str(old), str(new), "--output", "json"], check=True, capture_output=True, text=True).stdout
        )
        figures = {
            "full_bundle_file_bytes": new.stat().st_size,
            "delta_bundle_file_bytes": delta.stat().st_size,
            "delta_over_full": round(delta.stat().st_size / new.stat().st_size, 4),
            "tag_level_bytes": result["tag_level_bytes"],
            "tag_level_over_full": result["tag_level_over_full"],
            "delta_over_tag_level": round(delta.stat().st_size / result["tag_level_bytes"], 4),
        }
        print(json.dumps(figures, indent=2))
    finally:
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
