"""`airlock reset`: undo what init/join wrote, keeping the image store unless purged."""

from __future__ import annotations

import shutil

from installer import commands
from installer.node import Host, Paths, node_lock

UNITS = ("kubelet.service", "airlock-registry.service")
MARK = "installed by airlock"
FILES = (
    "/usr/local/bin/kubeadm",
    "/usr/local/bin/kubelet",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/crictl",
    "/etc/crictl.yaml",
    "/etc/default/kubelet",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/systemd/system/airlock-registry.service",
)
DIRECTORIES = ("/etc/containerd/certs.d", "/var/lib/airlock/kubeadm", "/var/lib/airlock/cni", "/var/lib/airlock/staging")


def reset_node(paths: Paths, host: Host, purge: bool, start_services: bool) -> None:
    if host.dry_run or not paths.state_dir.exists():
        _reset(paths, host, purge, start_services)
        return
    with node_lock(paths):
        _reset(paths, host, purge, start_services)


def _reset(paths: Paths, host: Host, purge: bool, start_services: bool) -> None:
    kubeadm = paths("/usr/local/bin/kubeadm")
    if kubeadm.exists():
        host.run(commands.kubeadm_reset(str(kubeadm)), check=False, timeout=600)
    units = list(UNITS)
    runtime_unit = paths("/etc/systemd/system/containerd.service")
    if runtime_unit.exists() and MARK in runtime_unit.read_text():
        # Only a runtime airlock installed is stopped; a distribution's containerd is left alone.
        units.append("containerd.service")
    for unit in units:
        link = paths(f"/etc/systemd/system/multi-user.target.wants/{unit}")
        if start_services:
            host.run(["systemctl", "disable", "--now", unit], check=False)
        if link.is_symlink() and not host.dry_run:
            link.unlink()
    for name in FILES:
        path = paths(name)
        if path.exists():
            host.echo(f"{'would remove' if host.dry_run else 'removing'} {path}")
            if not host.dry_run:
                path.unlink()
    backup = paths("/etc/containerd/config.toml.airlock-backup")
    if backup.exists():
        host.echo(f"{'would restore' if host.dry_run else 'restoring'} {paths('/etc/containerd/config.toml')} from its backup")
        if not host.dry_run:
            backup.replace(paths("/etc/containerd/config.toml"))
    targets = list(DIRECTORIES) + (["/var/lib/airlock"] if purge else ["/var/lib/airlock/state.json"])
    for name in targets:
        path = paths(name)
        if path.exists():
            host.echo(f"{'would remove' if host.dry_run else 'removing'} {path}")
            if not host.dry_run:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    kept = "" if purge else f"; the image store {paths.store} {'would be' if host.dry_run else 'is'} kept (--purge removes it)"
    host.echo(("would be done" if host.dry_run else "reset done") + kept)
