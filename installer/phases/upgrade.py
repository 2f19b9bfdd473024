"""Upgrade phases: version-skew rules, kubeadm upgrade with the exact version, then kubelet and kubectl.

kubeadm is swapped first and the previous one kept aside; if anything fails
before `kubeadm upgrade apply`/`node` ran, the previous kubeadm is put back,
so a failed upgrade leaves the node's binaries as they were.
"""

from __future__ import annotations

import json
import re
import socket

from installer.node import NodeError
from installer.phases import Context, Phase
from installer.phases.binaries import BIN
from installer.phases.unpack import ensure_staged, install_staged

ROLLBACK_DIR = "/var/lib/airlock/rollback"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    match = _VERSION.match(text or "")
    if not match:
        raise NodeError(f"{text!r} is not a Kubernetes version")
    return tuple(int(part) for part in match.groups())


def check_skew(installed: str, new: str, role: str, api_server: str | None) -> None:
    """Refuse what Kubernetes' version-skew policy forbids, saying what to do instead."""
    old_v, new_v = parse_version(installed), parse_version(new)
    if new_v < old_v:
        raise NodeError(f"{new} is older than the installed {installed}; Kubernetes is never downgraded in place (reset and reinstall instead)")
    if new_v[:2] > (old_v[0], old_v[1] + 1):
        step = f"v{old_v[0]}.{old_v[1] + 1}"
        raise NodeError(f"{installed} -> {new} skips a minor version; upgrade to the newest {step}.x bundle first, then to {new}")
    if role != "first-control-plane" and api_server is not None and new_v > parse_version(api_server):
        raise NodeError(
            f"this node's kubelet would become {new}, newer than the API server ({api_server}); "
            "upgrade the first control plane first (airlock upgrade there), then this node"
        )


def kubeconfig(context: Context) -> str:
    admin = context.paths("/etc/kubernetes/admin.conf")
    return str(admin if admin.exists() or context.role == "first-control-plane" else context.paths("/etc/kubernetes/kubelet.conf"))


def kubectl(context: Context, *args: str) -> list[str]:
    return [str(context.paths(f"{BIN}/kubectl")), "--kubeconfig", kubeconfig(context), *args]


def api_server_version(context: Context) -> str | None:
    if context.host.dry_run or context.role == "first-control-plane":
        return None
    result = context.host.run(kubectl(context, "version", "-o", "json"), check=False, show=False, timeout=60)
    try:
        return json.loads(result.stdout)["serverVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        raise NodeError(f"cannot read the API server's version (kubectl version: {result.stderr.strip()[:200]}); is the control plane up?") from None


def check(context: Context, installed: dict) -> None:
    check_skew(installed["version"], context.manifest.version, context.role, api_server_version(context))


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
            host.run(kubectl(context, "drain", node_name(context), "--ignore-daemonsets", "--delete-emptydir-data"), timeout=900)
    except BaseException:
        if not host.dry_run and rollback.exists():
            host.install(current, rollback, 0o755)
            context.echo(f"restored the previous kubeadm at {current}")
        raise
    if context.role == "first-control-plane":
        # The exact version, never `upgrade plan` and never a label.
        host.run([str(current), "upgrade", "apply", context.manifest.version, "--yes"], timeout=1800)
    else:
        host.run([str(current), "upgrade", "node"], timeout=1800)
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
        host.run(kubectl(context, "uncordon", node_name(context)), timeout=300)


KUBEADM_UPGRADE = Phase(
    "kubeadm-upgrade",
    "swap in the new kubeadm (old one kept until it succeeds), drain if asked, kubeadm upgrade apply VERSION or node",
    run_kubeadm_upgrade,
)
KUBELET_UPGRADE = Phase("kubelet-upgrade", "swap kubelet and kubectl, restart kubelet, uncordon", run_kubelet_upgrade)


def upgrade_phases() -> list[Phase]:
    from installer.phases import done, images, preflight, registry, runtime, unpack, verify

    return [verify.PHASE, preflight.PHASE, unpack.PHASE, registry.PHASE, runtime.PHASE, images.PHASE, KUBEADM_UPGRADE, KUBELET_UPGRADE, done.PHASE]
