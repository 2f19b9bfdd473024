"""Upgrade phases: version-skew rules, kubeadm upgrade with the exact version, then kubelet and kubectl.

kubeadm is swapped first and the previous one kept aside; if anything fails
before `kubeadm upgrade apply`/`node` ran, the previous kubeadm is put back,
so a failed upgrade leaves the node's binaries as they were.
"""

from __future__ import annotations

import socket

from installer import commands
from installer.phases import Context, Phase
from installer.phases.binaries import BIN
from installer.phases.unpack import ensure_staged, install_staged
from installer.upgradecheck import drain_kubeconfig_for_plan, kubectl_path

ROLLBACK_DIR = "/var/lib/airlock/rollback"


def node_name(context: Context) -> str:
    return context.config.node_name or socket.gethostname()


def run_kubeadm_upgrade(context: Context) -> None:
    ensure_staged(context)
    host, paths = context.host, context.paths
    current = paths(f"{BIN}/kubeadm")
    rollback = paths(f"{ROLLBACK_DIR}/kubeadm")
    if not host.dry_run and current.exists() and not rollback.exists():
        host.install(rollback, current, 0o755)
    try:
        install_staged(context, f"bin/linux-{context.arch}/kubeadm", current)
        if context.drain:
            host.run(commands.kubectl_drain(kubectl_path(context), drain_kubeconfig_for_plan(context), node_name(context)), timeout=900)
    except BaseException:
        if not host.dry_run and rollback.exists():
            host.install(current, rollback, 0o755)
            context.echo(f"restored the previous kubeadm at {current}")
        raise
    if context.role == "first-control-plane":
        host.run(commands.kubeadm_upgrade_apply(str(current), context.manifest.version), timeout=1800)
    else:
        host.run(commands.kubeadm_upgrade_node(str(current)), timeout=1800)
    if not host.dry_run:
        rollback.unlink(missing_ok=True)


def run_kubelet_upgrade(context: Context) -> None:
    ensure_staged(context)
    host, paths = context.host, context.paths
    for name in ("kubelet", "kubectl"):
        install_staged(context, f"bin/linux-{context.arch}/{name}", paths(f"{BIN}/{name}"))
    if context.start_services:
        host.run(["systemctl", "daemon-reload"])
        host.run(["systemctl", "restart", "kubelet"])
    if context.drain:
        host.run(commands.kubectl_uncordon(kubectl_path(context), drain_kubeconfig_for_plan(context), node_name(context)), timeout=300)


KUBEADM_UPGRADE = Phase(
    "kubeadm-upgrade",
    "swap in the new kubeadm (old one kept until it succeeds), drain if asked, kubeadm upgrade apply VERSION or node",
    run_kubeadm_upgrade,
)
KUBELET_UPGRADE = Phase("kubelet-upgrade", "swap kubelet and kubectl, restart kubelet, uncordon", run_kubelet_upgrade)

