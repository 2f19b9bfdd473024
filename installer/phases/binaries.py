"""binaries: kubeadm, kubelet, kubectl, crictl, CNI plugins, and containerd + runc when the node has no runtime."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from bundle.errors import BundleError
from bundle.manifest import Manifest
from installer.phases import Context, Phase
from installer.phases.unpack import ensure_staged
from installer.templates import render

BIN = "/usr/local/bin"


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


def install_from_archive(context: Context, archive: Path, target_dir: str, names: set[str] | None = None) -> list[str]:
    """Install the regular files of an upstream release archive into `target_dir`, flattened.

    Only regular files are taken, by their base name; links, devices and
    anything else are refused, so an archive cannot write outside `target_dir`.
    """
    installed = []
    if context.host.dry_run:
        context.echo(f"would install the files of {archive.name} into {context.paths(target_dir)}")
        return installed
    with tarfile.open(archive, "r:*") as bundle_archive:
        for item in bundle_archive:
            if item.isdir():
                continue
            if not item.isfile():
                raise BundleError(f"holds {item.name!r}, which is not a regular file", str(archive.name))
            name = Path(item.name).name
            if not name or name.startswith(".") or (names is not None and name not in names):
                continue
            source = bundle_archive.extractfile(item)
            context.host.install(context.paths(f"{target_dir}/{name}"), source, 0o755)
            installed.append(name)
    return installed


def run(context: Context) -> None:
    staging = ensure_staged(context)
    manifest, arch = context.manifest, context.arch
    bin_dir = staging / f"bin/linux-{arch}"
    for name in ("kubeadm", "kubelet", "kubectl"):
        context.host.install(context.paths(f"{BIN}/{name}"), bin_dir / name, 0o755)
    crictl = member(manifest, arch, "bin/linux-{arch}/crictl-")
    if crictl:
        install_from_archive(context, staging / crictl, BIN, {"crictl"})
    context.host.write(context.paths("/etc/crictl.yaml"), render("crictl.yaml", staging, cri_socket=context.config.cri_socket))
    cni = member(manifest, arch, "cni/linux-{arch}/")
    if cni:
        plugins = install_from_archive(context, staging / cni, "/opt/cni/bin")
        if plugins:
            context.echo(f"{'would put ' if context.host.dry_run else ''}CNI plugins in /opt/cni/bin: {', '.join(sorted(plugins))}")
    if has_runtime(context):
        context.echo(f"{'would keep: ' if context.host.dry_run else ''}containerd is already on this node; the bundled runtime is not installed")
        return
    containerd = member(manifest, arch, "bin/linux-{arch}/containerd-")
    if containerd is None:
        raise BundleError("the node has no containerd and the bundle carries none for this architecture")
    install_from_archive(context, staging / containerd, BIN)
    context.host.install(context.paths("/usr/local/sbin/runc"), bin_dir / "runc", 0o755)
    unit = render("systemd/containerd.service", staging, bin_dir=BIN, proxy_environment=proxy_environment())
    context.host.write(context.paths("/etc/systemd/system/containerd.service"), unit)
    context.host.enable_service("containerd.service", context.start_services)


def proxy_environment() -> str:
    """Environment= lines carrying this shell's proxy settings into a unit ("" when none are set)."""
    import os

    lines = []
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        value = os.environ.get(name) or os.environ.get(name.lower())
        if value:
            lines.append(f'Environment="{name}={value}"\n')
    return "".join(lines)


PHASE = Phase("binaries", "install kubeadm, kubelet, kubectl, crictl, CNI plugins (and containerd, runc if missing)", run)
