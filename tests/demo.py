"""`make demo`: the connected-host job end to end, against a local upstream this demo starts.

1. start a local upstream (release files, GitHub-style release assets, a
   docker-registry with small real images; kubeadm/kubelet/kubectl are
   stand-ins because the real binaries cannot be fetched here)
2. airlock keygen, airlock build (stable-1.36, amd64+arm64, flannel)
3. airlock verify, airlock inspect, and skopeo reading the bundle's image layout
4. airlock build again: everything comes from the cache
5. init into a scratch root from airlock-node.pyz (written beside the bundle) under
   `python3 -I`, as on a node: in a network namespace of its own with one address
   (192.0.2.10) and no route out, and no container runtime. The bundle carries
   containerd 2.1.9 (`--containerd-version 2.1`; the default is 2.3.4, which cannot
   be run here): the local upstream's amd64 archive of that release holds real
   programs, Debian sid's 2.1.9 build (unpacked by `make containerd-sid`). init
   installs them from the bundle and writes containerd's config as version 3 (what
   2.1 reads); that containerd starts on exactly that file (its paths moved under a
   scratch directory), and init resumes to pull every image through the hosts.toml
   mirror airlock wrote, from the node registry
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
    from tests.debian_sid import DEFAULT_ROOT, installed

    if installed(DEFAULT_ROOT) is None:
        sys.exit(f"containerd 2.1.9 from Debian sid is not in {DEFAULT_ROOT}: run `make containerd-sid` (make demo does)")
    work = Path(os.environ.get("AIRLOCK_DEMO_DIR") or tempfile.mkdtemp(prefix="airlock-demo-"))
    print(f"== airlock demo in {work}")
    upstream = LocalUpstream(work / "upstream").start()
    try:
        print(f"local upstream: releases {upstream.release_url}, registry {upstream.registry.url}")
        # containerd 2.1.9 for amd64 is real (sid's build of it); every other release and architecture is a stand-in.
        upstream.serve_containerd("2.1.9", "amd64", DEFAULT_ROOT / "usr/bin")
        keys, out, cache = work / "keys", work / "k8s-stable-1.36.tar", work / "cache"
        step("keys", AIRLOCK, "keygen", "--out", str(keys), "--force")
        build = [
            # The bundle carries containerd 2.1.9 (the one containerd 2.x this machine can run); without the flag, 2.3.4.
            AIRLOCK, "build", "-o", str(out), "--kubernetes-version", "stable-1.36", "--arch", "amd64,arm64", "--containerd-version", "2.1",
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
    from tests.containerd import Containerd, private_config
    from tests.nodenet import NodeNetwork
    from tests.upstream import free_port

    root = work / "node-root"
    # What init installs from the bundle: containerd 2.1.9, its shim and ctr (the images phase's client). runc stays
    # this machine's (the bundle's runc is a stand-in).
    programs = root / "usr/local/bin"
    os.environ["PATH"] = f"{programs}:{os.environ['PATH']}"
    print("\n== node install into a scratch root (kubeadm, kubelet, kubectl are stand-ins; containerd 2.1.9 and runc are real)")
    with NodeNetwork() as node:
        print(f"the node: network namespace {node.name}, address {node.address}, no default route, no container runtime; node.yaml names no address")
        config = work / "node.yaml"
        config.write_text(f"nodeName: demo\nregistry:\n  listen: 127.0.0.1:{free_port()}\n")
        config_toml = root / "etc/containerd/config.toml"
        os.environ["AIRLOCK_STANDIN_LOG"] = str(work / "standin-calls.log")
        # The pyz's native code goes to a cache of this demo, not to the host's /var/lib/airlock.
        os.environ["AIRLOCK_PYZ_CACHE"] = str(work / "pyz-cache")
        init = [
            *node.prefix, "/usr/bin/python3", "-I", str(bundle.with_name("airlock-node.pyz")), "init", str(bundle), "--key", str(keys / "airlock.pub"),
            "--root", str(root), "--config", str(config), "--ignore-preflight-errors", "all",
        ]  # fmt: skip
        step("init, up to the runtime's configuration", *init, "--skip-phases", "images,kubeadm-init,cni,done")
        step("the containerd init installed from the bundle", str(programs / "containerd"), "--version")
        step("what airlock wrote for containerd 2.1", "grep", "-n", "-e", "^version", "-e", "sandbox =", "-e", "config_path", "-e", "SystemdCgroup", str(config_toml))
        scratch = Path(f"/tmp/airlock-demo-ctd-{os.getpid()}")
        certs_d = root / "etc/containerd/certs.d"
        daemon = Containerd(scratch, config_text=private_config(config_toml.read_text(), scratch, certs_d), prefix=node.prefix, programs=programs)
        try:
            ctr = [str(programs / "ctr"), "-a", str(daemon.socket), "-n", "k8s.io"]
            step("that containerd started on that file: its CRI plugins", "sh", "-c", f"{' '.join(ctr)} plugins ls | grep -e cri.v1 -e grpc.v1.*cri")
            step("init, resumed: images through the hosts.toml airlock wrote", *init, "--containerd-address", str(daemon.socket))
            step("images in containerd", *ctr, "images", "ls", "-q")
            step("a container from a bundle image", *ctr, "run", "--rm", f"registry.k8s.io/pause:{COMPONENT_IMAGES['pause']}", "demo", "/bin/busybox", "echo", "hello from an air-gapped image")
            print(f"\nkubeadm stand-in calls (exact version, never a label): {work / 'standin-calls.log'}")
            print((work / "standin-calls.log").read_text())
            print(f"kubeadm and kubelet were given the node's address: {root / 'var/lib/airlock/kubeadm/init.yaml'}")
        finally:
            daemon.close()


if __name__ == "__main__":
    main()
