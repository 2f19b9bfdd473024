"""`make demo`: the connected-host job end to end, against a local upstream this demo starts.

1. start a local upstream (release files, GitHub-style release assets, a
   docker-registry with small real images; kubeadm/kubelet/kubectl are
   stand-ins because the real binaries cannot be fetched here)
2. airlock keygen, airlock build (stable-1.31, amd64+arm64, flannel)
3. airlock verify, airlock inspect, and skopeo reading the bundle's image layout
4. airlock build again: everything comes from the cache
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.upstream import LocalUpstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))


def step(title: str, *argv: str) -> None:
    print(f"\n$ {' '.join(argv)}" if argv else f"\n== {title}", flush=True)
    if argv:
        subprocess.run(argv, check=True)


def main() -> None:
    work = Path(os.environ.get("AIRLOCK_DEMO_DIR") or tempfile.mkdtemp(prefix="airlock-demo-"))
    print(f"== airlock demo in {work}")
    upstream = LocalUpstream(work / "upstream").start()
    try:
        print(f"local upstream: releases {upstream.release_url}, registry {upstream.registry.url}")
        keys, out, cache = work / "keys", work / "k8s-stable-1.31.tar", work / "cache"
        step("keys", AIRLOCK, "keygen", "--out", str(keys), "--force")
        build = [
            AIRLOCK, "build", "-o", str(out), "--kubernetes-version", "stable-1.31", "--arch", "amd64,arm64",
            "--sign-key", str(keys / "airlock.key"), "--cache-dir", str(cache), *upstream.build_flags(),
        ]
        step("build", *build)
        step("verify", AIRLOCK, "verify", str(out), "--key", str(keys / "airlock.pub"))
        step("inspect", AIRLOCK, "inspect", str(out), "--key", str(keys / "airlock.pub"))
        layout = work / "unpacked"
        layout.mkdir(exist_ok=True)
        step("unpack", "tar", "-xf", str(out), "-C", str(layout))
        step("skopeo", "skopeo", "inspect", "--override-arch", "arm64", f"oci:{layout / 'images'}:registry.k8s.io/kube-apiserver:v1.31.4")
        step("warm rebuild", *build)
        print("\nThe node side (airlock init with containerd pulling through the bundle's registry) lands with issue [3].")
    finally:
        upstream.close()


if __name__ == "__main__":
    main()
