"""`airlock-node reset`: undo what init/join/upgrade installed, keeping the image store and trusted keys unless purged.

What airlock made or replaced is read from its ledger (installer/ledger.py):
files it made are removed, files it replaced are put back as they were (an
operator's own config.toml among them), directories it made go once empty,
and nothing it did not touch is changed. A node installed before the ledger
existed is reset from the fixed list below.
"""

from __future__ import annotations

import shutil

from installer import commands
from installer.node import Host, Paths, node_lock
from installer.trusted import TRUSTED_KEYS

UNITS = ("kubelet.service", "airlock-registry.service")
MARK = "installed by airlock"
# Nodes installed before the ledger: what airlock is known to write.
FILES = (
    "/usr/local/bin/kubeadm",
    "/usr/local/bin/kubelet",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/crictl",
    "/etc/crictl.yaml",
    "/etc/modules-load.d/airlock.conf",
    "/etc/sysctl.d/99-airlock-kubernetes.conf",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/systemd/system/airlock-registry.service",
    "/usr/local/lib/airlock/airlock-node.pyz",
)
LEGACY_DIRECTORIES = ("/etc/containerd/certs.d",)
STATE_DIRECTORIES = ("/var/lib/airlock/kubeadm", "/var/lib/airlock/cni", "/var/lib/airlock/staging", "/var/lib/airlock/rollback")


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
    if start_services:
        for unit in units:
            host.run(["systemctl", "disable", "--now", unit], check=False)
    if host.ledger.entries():
        host.ledger.undo(host.echo, host.dry_run)
    else:
        _reset_from_the_fixed_list(paths, host, units)
    if start_services:
        host.run(["systemctl", "daemon-reload"], check=False)
    targets = list(STATE_DIRECTORIES) + (["/var/lib/airlock", TRUSTED_KEYS] if purge else ["/var/lib/airlock/state.json"])
    for name in targets:
        path = paths(name)
        if path.exists():
            host.echo(f"{'would remove' if host.dry_run else 'removing'} {path}")
            if not host.dry_run:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    kept = "" if purge else (
        f"; the image store {paths.store} and the trusted keys in {paths(TRUSTED_KEYS)} {'would be' if host.dry_run else 'are'} kept (--purge removes them)"
    )
    host.echo(("would be done" if host.dry_run else "reset done") + kept)


def _reset_from_the_fixed_list(paths: Paths, host: Host, units: list[str]) -> None:
    for unit in units:
        link = paths(f"/etc/systemd/system/multi-user.target.wants/{unit}")
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
    for name in LEGACY_DIRECTORIES:
        path = paths(name)
        if path.exists():
            host.echo(f"{'would remove' if host.dry_run else 'removing'} {path}")
            if not host.dry_run:
                shutil.rmtree(path)
