"""`make demo`: the connected-host job end to end, against a local upstream this demo starts.

1. start a local upstream (release files, GitHub-style release assets, a
   docker-registry with small real images; kubeadm/kubelet/kubectl are
   stand-ins because the real binaries cannot be fetched here)
2. airlock keygen, airlock build (stable-1.36, amd64+arm64, flannel)
3. airlock verify, airlock inspect, and skopeo reading the bundle's image layout
4. airlock build again: everything comes from the cache
5. init into a scratch root from airlock-node.pyz (written beside the bundle) under
   `python3 -I`, as on a node: in a network namespace of its own with one address
   (192.0.2.10) and no route out, with a private containerd there that pulls every
   image through the hosts.toml mirror airlock wrote, from the node registry
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.upstream import COMPONENT_IMAGES, LocalUpstream

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
        keys, out, cache = work / "keys", work / "k8s-stable-1.36.tar", work / "cache"
        step("keys", AIRLOCK, "keygen", "--out", str(keys), "--force")
        build = [
            AIRLOCK, "build", "-o", str(out), "--kubernetes-version", "stable-1.36", "--arch", "amd64,arm64",
            "--sign-key", str(keys / "airlock.key"), "--cache-dir", str(cache), *upstream.build_flags(),
        ]
        step("build", *build)
        step("verify", AIRLOCK, "verify", str(out), "--key", str(keys / "airlock.pub"))
        step("inspect", AIRLOCK, "inspect", str(out), "--key", str(keys / "airlock.pub"))
        layout = work / "unpacked"
        layout.mkdir(exist_ok=True)
        step("unpack", "tar", "-xf", str(out), "-C", str(layout))
        step("skopeo", "skopeo", "inspect", "--override-arch", "arm64", f"oci:{layout / 'images'}:registry.k8s.io/kube-apiserver:v1.36.4")
        step("warm rebuild", *build)
        install(work, out, keys)
    finally:
        upstream.close()
    print(
        f"\n== done. Left in {work}:\n"
        f"  bundle      {out}\n"
        f"  keys        {keys}/airlock.key (private), {keys}/airlock.pub\n"
        f"  node root   {work / 'node-root'} (what init wrote, as a node would hold it)\n"
        f"  cache       {cache}\n"
        f"Look inside:  {AIRLOCK} inspect {out}\n"
        f"Rerun:        make demo (a fresh directory), or AIRLOCK_DEMO_DIR={work} make demo (reuses the cache)\n"
        "Build by hand against a local upstream: python -m tests.upstream DIR (see README, \"Trying `build` offline\")"
    )


def install(work: Path, bundle: Path, keys: Path) -> None:
    from tests.containerd import Containerd
    from tests.nodenet import NodeNetwork
    from tests.upstream import free_port

    print("\n== node install into a scratch root (kubeadm, kubelet, kubectl are stand-ins; containerd is real)")
    with NodeNetwork() as node:
        print(f"the node: network namespace {node.name}, address {node.address}, no default route; node.yaml names no address")
        daemon = Containerd(Path(f"/tmp/airlock-demo-ctd-{os.getpid()}"), prefix=node.prefix)
        try:
            config = work / "node.yaml"
            config.write_text(f"nodeName: demo\nregistry:\n  listen: 127.0.0.1:{free_port()}\n")
            root = work / "node-root"
            os.environ["AIRLOCK_STANDIN_LOG"] = str(work / "standin-calls.log")
            # The pyz's native code goes to a cache of this demo, not to the host's /var/lib/airlock.
            os.environ["AIRLOCK_PYZ_CACHE"] = str(work / "pyz-cache")
            step(
                "init", *node.prefix, "/usr/bin/python3", "-I", str(bundle.with_name("airlock-node.pyz")), "init", str(bundle),
                "--key", str(keys / "airlock.pub"), "--root", str(root), "--config", str(config),
                "--containerd-address", str(daemon.socket), "--ignore-preflight-errors", "all",
            )
            step("images in containerd", "ctr", "-a", str(daemon.socket), "-n", "k8s.io", "images", "ls", "-q")
            step("a container from a bundle image", "ctr", "-a", str(daemon.socket), "-n", "k8s.io", "run", "--rm",
                 f"registry.k8s.io/pause:{COMPONENT_IMAGES['pause']}", "demo", "/bin/busybox", "echo", "hello from an air-gapped image")
            print(f"\nkubeadm stand-in calls (exact version, never a label): {work / 'standin-calls.log'}")
            print((work / "standin-calls.log").read_text())
            print(f"kubeadm and kubelet were given the node's address: {root / 'var/lib/airlock/kubeadm/init.yaml'}")
        finally:
            daemon.close()


if __name__ == "__main__":
    main()
