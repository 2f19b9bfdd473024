"""binaries: kubeadm, kubelet, kubectl, crictl, CNI plugins, and containerd + runc when the node has no runtime."""

from __future__ import annotations

import shutil
import sys
import tarfile
from pathlib import Path

from bundle.errors import BundleError
from bundle.manifest import NODE_PYZ, Manifest
from installer.node import BIN, NODE_PYZ_PATH
from installer.phases import Context, Phase
from installer.render.crictl import crictl_config
from installer.render.launcher import launcher
from installer.render.unitfiles import containerd_service
from installer.staging import ensure_staged, install_staged, open_staged_archive
from installer.trusted import keep_trusted_keys

# The node command the docs name: a launcher that runs the installed pyz.
LAUNCHER = f"{BIN}/airlock-node"
# What each upstream archive may put on the node, by name: anything else in it (a `systemctl`, an `iptables`)
# would shadow the real tool in /usr/local/bin or /opt/cni/bin, so it is left out.
CRICTL_PROGRAMS = frozenset({"crictl"})
CONTAINERD_PROGRAMS = frozenset({"containerd", "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2", "containerd-stress", "ctr"})
CNI_PLUGINS = frozenset(
    {
        "bandwidth", "bridge", "dhcp", "dummy", "firewall", "flannel", "host-device", "host-local", "ipvlan", "loopback",
        "macvlan", "portmap", "ptp", "sbr", "static", "tap", "tuning", "vlan", "vrf",
    }
)  # fmt: skip


def has_runtime(context: Context) -> bool:
    paths = context.paths
    if paths.root == Path("/") and shutil.which("containerd"):
        return True
    return paths("/usr/bin/containerd").exists() or paths(f"{BIN}/containerd").exists()


def member(manifest: Manifest, arch: str, prefix: str) -> str | None:
    for entry in manifest.files:
        if entry.path.startswith(f"{prefix.format(arch=arch)}"):
            return entry.path
    return None


def install_from_archive(context: Context, member: str, target_dir: str, names: frozenset[str]) -> list[str]:
    """Install the programs named in `names` from a staged upstream release archive into `target_dir`, flattened.

    The archive is re-hashed against bundle.json first. Only regular files are
    taken, by their base name and only when `names` allows it; links, devices and
    anything else are refused, so an archive cannot write outside `target_dir`
    nor put a program there that the release does not ship.
    """
    installed: list[str] = []
    if context.host.dry_run:
        context.echo(f"would install {', '.join(sorted(names))} from {Path(member).name} into {context.paths(target_dir)}")
        return installed
    left_out = []
    with open_staged_archive(context, member) as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
        for item in archive:
            if item.isdir():
                continue
            if not item.isfile():
                raise BundleError(f"holds {item.name!r}, which is not a regular file", member)
            name = Path(item.name).name
            if name not in names:
                left_out.append(name)
                continue
            if name in installed:
                raise BundleError(f"holds two files named {name!r}", member)
            context.host.install(context.paths(f"{target_dir}/{name}"), archive.extractfile(item), 0o755)
            installed.append(name)
    programs = [name for name in left_out if name and not name.startswith(".") and name.upper() not in ("LICENSE", "README.MD", "NOTICE")]
    if programs:
        context.echo(f"  left out of {target_dir} (not programs this release ships): {', '.join(sorted(programs))}")
    return installed


def run(context: Context) -> None:
    ensure_staged(context)
    manifest, arch = context.manifest, context.arch
    bin_dir = f"bin/linux-{arch}"
    for name in ("kubeadm", "kubelet", "kubectl"):
        install_staged(context, f"{bin_dir}/{name}", context.paths(f"{BIN}/{name}"))
    crictl = member(manifest, arch, "bin/linux-{arch}/crictl-")
    if crictl:
        install_from_archive(context, crictl, BIN, CRICTL_PROGRAMS)
    if any(entry.path == NODE_PYZ for entry in manifest.files):
        install_staged(context, NODE_PYZ, context.paths(NODE_PYZ_PATH))
        context.host.write(context.paths(LAUNCHER), launcher(node_python()), 0o755)
    keep_trusted_keys(context.host, context.paths.root, context.keys)
    context.host.write(context.paths("/etc/crictl.yaml"), crictl_config(context.config.cri_socket))
    cni = member(manifest, arch, "cni/linux-{arch}/")
    if cni:
        plugins = install_from_archive(context, cni, "/opt/cni/bin", CNI_PLUGINS)
        if plugins:
            context.echo(f"{'would put ' if context.host.dry_run else ''}CNI plugins in /opt/cni/bin: {', '.join(sorted(plugins))}")
    if has_runtime(context):
        context.echo(f"{'would keep: ' if context.host.dry_run else ''}containerd is already on this node; the bundled runtime is not installed")
        return
    containerd = member(manifest, arch, "bin/linux-{arch}/containerd-")
    if containerd is None:
        raise BundleError("the node has no containerd and the bundle carries none for this architecture")
    programs = install_from_archive(context, containerd, BIN, CONTAINERD_PROGRAMS)
    install_staged(context, f"{bin_dir}/runc", context.paths("/usr/local/sbin/runc"))
    if programs:
        release = manifest.components.get("containerd", "?")
        context.echo(f"containerd {release} from the bundle in {context.paths(BIN)}: {', '.join(sorted(programs))}; runc in {context.paths('/usr/local/sbin')}")
    context.host.write(context.paths("/etc/systemd/system/containerd.service"), containerd_service())
    context.host.enable_service("containerd.service", context.start_services)


def node_python() -> str:
    """The Python the launcher runs the pyz with: the one running this install (3.9 or newer, proven by this run),
    else the system's python3."""
    running = Path(sys.executable) if sys.executable else None
    return str(running) if running is not None and running.is_absolute() and running.is_file() else "/usr/bin/python3"


PHASE = Phase("binaries", "install kubeadm, kubelet, kubectl, crictl, CNI plugins (and containerd, runc if missing)", run)
