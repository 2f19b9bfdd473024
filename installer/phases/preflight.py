"""preflight: named checks of the node, each ignorable like kubeadm's `--ignore-preflight-errors`."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from installer import address
from installer.errors import NodeError
from installer.kernel import MODULES, module_loaded
from installer.minors import kubelet_flag_problems
from installer.noproxy import NoProxy, request_target
from installer.phases import Context, Phase
from installer.render.kubeadm_config import join_fields

CONTROL_PLANE_PORTS = (6443, 2379, 2380, 10250, 10257, 10259)
WORKER_PORTS = (10250,)
REQUIRED_MODULES = MODULES


def module_available(name: str) -> bool:
    """Loaded, built in, or loadable: the runtime phase loads and persists it (/etc/modules-load.d/airlock.conf)."""
    if module_loaded(name):
        return True
    try:
        return subprocess.run(["modprobe", "-n", "-q", name], capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def address_findings(context: Context) -> Iterator[tuple[str, str]]:
    try:
        choice = address.choose(context.config)
    except address.AmbiguousAddress as error:
        yield "advertise-address", f"cannot choose this node's address: {error}; set advertiseAddress in node.yaml"
        return
    if choice.address not in address.node_addresses():
        yield "advertise-address", (
            f"{choice.address} ({choice.reason}) is not an address of this node; kubelet refuses a node IP it cannot find on its "
            "interfaces: set advertiseAddress in node.yaml to one of them"
        )
        return
    context.echo(f"  {'would use' if context.host.dry_run else 'using'} node address {choice.address} ({choice.reason})")


def registry_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def proxy_findings(context: Context) -> Iterator[tuple[str, str]]:
    """What the node's Go programs would send to the proxy, by Go's own NO_PROXY rules (installer.noproxy)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    if not proxy:
        return
    no_proxy = NoProxy.parse(os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "")
    host, port = registry_host_port(context.config.registry_listen)
    # (what, shown as, covered): localhost and loopback addresses are never proxied by Go, so they need no entry.
    needed = [("registry address", host, no_proxy.bypasses(host, str(port)))]
    if context.config.advertise_address:
        address = context.config.advertise_address
        needed.append(("node address", address, no_proxy.bypasses(address, None)))
    for what, subnet in (("service subnet", context.config.service_subnet), ("pod subnet", context.config.pod_subnet)):
        needed.append((what, subnet, no_proxy.bypasses_network(ipaddress.ip_network(subnet, strict=False))))
    for mirror in filter(None, (context.config.registry_mirror, *context.config.registry_mirrors)):
        # Another node's (or the site's) registry: image pulls through a proxy would never reach it.
        mirror_host, mirror_port = request_target(mirror)
        needed.append(("registry mirror", mirror_host, no_proxy.bypasses(mirror_host, mirror_port)))
    for what, value, covered in needed:
        if not covered:
            yield "proxy", f"a proxy is set ({proxy}) but NO_PROXY does not cover the {what} {value}; add it so cluster traffic never goes to the proxy"


def check_names() -> list[str]:
    """Every name `findings` can yield (port-N for any port), for --ignore-preflight-errors to be checked against."""
    return [
        "root",
        "swap",
        *(f"module-{module}" for module in REQUIRED_MODULES),
        "advertise-address",
        "port-N",
        "existing-kubernetes",
        "runtime",
        "proxy",
        "disk-space",
        "api-versions",  # the upgrade's api-versions phase
        "kubelet-flags",
    ]


def check_name_known(name: str) -> bool:
    name = name.lower()
    if name == "all" or name in check_names():
        return True
    return name.startswith("port-") and name[5:].isdigit() and 0 < int(name[5:]) < 65536


def findings(context: Context) -> Iterator[tuple[str, str]]:
    """(name, problem) for everything wrong with this node; the names are what --ignore-preflight-errors takes."""
    paths = context.paths
    if context.command == "upgrade":
        # The node is running a cluster: its ports are in use and /etc/kubernetes is full, as they should be.
        yield from proxy_findings(context)
        yield from disk_findings(context)
        return
    real_root = paths.root == Path("/")
    if real_root and os.geteuid() != 0:
        yield "root", "airlock must run as root to install a node"
    swaps = Path("/proc/swaps").read_text().splitlines()[1:] if Path("/proc/swaps").exists() else []
    if swaps:
        yield "swap", "swap is on; kubelet refuses to start with swap by default (swapoff -a, and remove it from /etc/fstab)"
    for module in REQUIRED_MODULES:
        if not module_available(module):
            yield f"module-{module}", f"kernel module {module} is neither loaded nor loadable (modprobe -n {module} fails); install the kernel's modules package"
    yield from address_findings(context)
    ports = list(CONTROL_PLANE_PORTS if context.command == "init" or context.control_plane else WORKER_PORTS)
    if context.serves_registry:
        ports.append(registry_host_port(context.config.registry_listen)[1])
    for port in ports:
        if port_in_use(port):
            yield f"port-{port}", f"port {port} is in use on this node"
    kubernetes = paths("/etc/kubernetes")
    if (kubernetes / "admin.conf").exists() or (kubernetes / "kubelet.conf").exists() or any((kubernetes / "manifests").glob("*.yaml")):
        yield "existing-kubernetes", f"{kubernetes} already holds a cluster's files; run `airlock-node reset` first"
    bundled = any(entry.path.startswith(f"bin/linux-{context.arch}/containerd-") for entry in context.manifest.files)
    if not bundled and shutil.which("containerd") is None and not paths("/usr/bin/containerd").exists():
        yield "runtime", "no containerd on this node and none in the bundle"
    yield from proxy_findings(context)
    yield from disk_findings(context)
    yield from kubelet_flag_findings(context)


def kubelet_flag_findings(context: Context) -> Iterator[tuple[str, str]]:
    """node.yaml's kubelet flags that this bundle's kubelet no longer has: kubelet would exit at once with "unknown flag"."""
    for problem in kubelet_flag_problems(context.manifest.version, dict(context.config.kubelet.extra_args)):
        yield "kubelet-flags", f"node.yaml kubelet.extraArgs: {problem}; remove it from node.yaml"


def disk_findings(context: Context) -> Iterator[tuple[str, str]]:
    target = context.paths.state_dir
    while not target.exists():
        target = target.parent
    free = shutil.disk_usage(target).free
    from installer.staging import space_needed

    needed = space_needed(context)
    if free < needed:
        yield "disk-space", f"{target} has {free >> 20} MiB free; unpacking this bundle needs about {needed >> 20} MiB"


def kube_vip_missing(context: Context) -> str | None:
    """highAvailability on a control plane needs the bundle's kube-vip image (None when it is there, or not needed)."""
    from installer.render.kubevip import bundle_image

    control_plane = context.command == "init" or context.control_plane or context.role in ("first-control-plane", "control-plane")
    if not context.config.virtual_ip or not control_plane:
        return None
    if bundle_image([image.reference for image in context.manifest.images]):
        return None
    return ("node.yaml highAvailability: the bundle carries no kube-vip image; build it with "
            "--image ghcr.io/kube-vip/kube-vip:VERSION (see docs/multi-node.md)")


def virtual_ip_added(context: Context) -> str | None:
    """An upgrade cannot put a virtual IP in front of a control plane installed without one (None when not asked to)."""
    from installer.render.kubevip import MANIFEST

    if context.command != "upgrade" or not context.config.virtual_ip or context.role not in ("first-control-plane", "control-plane"):
        return None
    if context.paths(MANIFEST).exists():
        return None
    return (f"node.yaml highAvailability: this control plane was installed without a virtual IP (no {MANIFEST}); its certificates and "
            f"kubeconfigs name its own address, and an upgrade does not move the cluster behind {context.config.virtual_ip}: "
            "remove highAvailability from node.yaml to upgrade it (docs/multi-node.md)")


def run(context: Context) -> None:
    dry_run = context.host.dry_run
    missing = kube_vip_missing(context) or virtual_ip_added(context)
    if missing:
        raise NodeError(missing)
    if context.command == "join":
        lacking = join_fields(context.config, context.control_plane)
        if lacking and not dry_run:
            raise NodeError(lacking)
        if lacking:
            context.echo(f"would stop here: {lacking}")
    if context.command == "upgrade":
        from installer.upgradecheck import check_drain_credentials

        try:
            check_drain_credentials(context)
        except NodeError as error:
            if not dry_run:
                raise
            context.echo(f"would stop here: {error}")
    ignore = {name.lower() for name in context.ignore_preflight}
    errors = []
    for name, problem in findings(context):
        if "all" in ignore or name.lower() in ignore:
            context.echo(f"  {'would warn: ' if dry_run else ''}[WARNING {name}] {problem}")
        else:
            errors.append(f"[ERROR {name}] {problem}")
    if errors:
        for line in errors:
            context.echo(f"  {'would fail: ' if dry_run else ''}{line}")
        names = ",".join(line.split()[1].rstrip("]") for line in errors)
        if dry_run:
            # A dry run shows the whole plan: it reports what would stop a real run and goes on.
            context.echo(f"would stop here: {len(errors)} preflight check(s) failed (pass --ignore-preflight-errors {names} or fix them)")
            return
        raise NodeError(f"{len(errors)} preflight check(s) failed; fix them, or pass --ignore-preflight-errors {names}")


PHASE = Phase("preflight", "check the node: privileges, swap, kernel modules, its address, ports, runtime, proxies, disk", run)
