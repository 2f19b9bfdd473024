"""What an upgrade must satisfy before anything changes: Kubernetes' version-skew rules and drain credentials.

The verify phase asks `check` once the signed bundle is known; preflight asks `check_drain_credentials`;
the upgrade phases use the kubeconfig and kubectl paths found here.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.version import KubernetesVersion
from installer import commands
from installer.errors import NodeError
from installer.minors import KUBELET_MAX_SKEW
from installer.node import BIN
from installer.phases import Context
from installer.state import Installed


def server_version(text: str) -> KubernetesVersion:
    """What `kubectl version` reports as the API server's gitVersion; build metadata (`+k3s1`) does not order versions."""
    return KubernetesVersion.parse(text.split("+", 1)[0], "the API server's version")


def check_skew(installed: str, new: str, role: str, api_server: str | None) -> None:
    """Refuse what Kubernetes' version-skew policy forbids, saying what to do instead."""
    old_v = KubernetesVersion.parse(installed, "state.json's installed version")
    new_v = KubernetesVersion.parse(new, "the bundle's Kubernetes version")
    server = server_version(api_server) if api_server is not None else None
    if new_v < old_v:
        raise NodeError(f"{new} is older than the installed {installed}; Kubernetes is never downgraded in place (reset and reinstall instead)")
    if (new_v.major, new_v.minor) > (old_v.major, old_v.minor + 1):
        step = f"v{old_v.major}.{old_v.minor + 1}"
        raise NodeError(f"{installed} -> {new} skips a minor version; upgrade to the newest {step}.x bundle first, then to {new}")
    if role != "first-control-plane" and server is not None and new_v > server:
        raise NodeError(
            f"this node's kubelet would become {new}, newer than the API server ({api_server}); "
            "upgrade the first control plane first (airlock-node upgrade there), then this node"
        )
    if server is not None and server.minor - new_v.minor > KUBELET_MAX_SKEW:
        raise NodeError(
            f"this node's kubelet would be {new}, more than three minors behind the API server ({api_server}); "
            "Kubernetes does not support that skew: upgrade this node minor by minor with a bundle of each minor"
        )


ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"


def drain_kubeconfig(context: Context) -> Path:
    """The kubeconfig drain and uncordon use: `--kubeconfig`, else a control plane's admin.conf.

    Never kubelet.conf: the node authorizer does not let a kubelet list DaemonSets or evict
    pods, so a drain with it fails on every node that runs kube-proxy or a CNI DaemonSet.
    """
    if context.kubeconfig is not None:
        if not context.kubeconfig.is_file():
            raise NodeError(f"--kubeconfig {context.kubeconfig}: no such file; give an admin kubeconfig (a copy of a control plane's /etc/kubernetes/admin.conf)")
        return context.kubeconfig
    admin = context.paths(ADMIN_CONF)
    if context.role in ("first-control-plane", "control-plane") and admin.is_file():
        return admin
    raise NodeError(
        "upgrade --drain on this node needs --kubeconfig FILE, an admin kubeconfig (e.g. a copy of a control plane's "
        f"{ADMIN_CONF}): kubelet credentials may not list DaemonSets or evict pods; nothing was changed"
    )


def drain_kubeconfig_for_plan(context: Context) -> str:
    """drain_kubeconfig, except that a dry run names the problem and goes on with the plan."""
    try:
        return str(drain_kubeconfig(context))
    except NodeError:
        if not context.host.dry_run:
            raise
        return "ADMIN-KUBECONFIG"


def check_drain_credentials(context: Context) -> None:
    """Called by preflight, before anything changes: a drain that cannot work is refused up front."""
    if context.drain:
        drain_kubeconfig(context)


def read_kubeconfig(context: Context) -> str:
    """For reading the API server's version (which a kubelet may do): the admin kubeconfig when there is one."""
    if context.kubeconfig is not None:
        return str(context.kubeconfig)
    admin = context.paths(ADMIN_CONF)
    return str(admin if admin.exists() else context.paths(KUBELET_CONF))


def kubectl_path(context: Context) -> str:
    return str(context.paths(f"{BIN}/kubectl"))


def api_server_version(context: Context) -> str | None:
    if context.host.dry_run or context.role == "first-control-plane":
        return None
    result = context.host.run(commands.kubectl_server_version(kubectl_path(context), read_kubeconfig(context)), check=False, show=False, timeout=60)
    try:
        return json.loads(result.stdout)["serverVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        raise NodeError(f"cannot read the API server's version (kubectl version: {result.stderr.strip()[:200]}); is the control plane up?") from None


def check(context: Context, installed: Installed) -> None:
    check_skew(installed.version, context.manifest.version, context.role, api_server_version(context))
