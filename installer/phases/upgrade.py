"""Upgrade phases: version-skew rules, kubeadm upgrade with the exact version, then kubelet and kubectl.

kubeadm is swapped first and the previous one kept aside; if anything fails
before `kubeadm upgrade apply`/`node` ran, the previous kubeadm is put back,
so a failed upgrade leaves the node's binaries as they were.
"""

from __future__ import annotations

import socket
from pathlib import Path

from bundle import apis
from bundle.version import KubernetesVersion
from installer import commands
from installer.errors import NodeError
from installer.node import BIN
from installer.phases import Context, Phase
from installer.staging import ensure_staged, install_staged, member_file
from installer.state import State
from installer.upgradecheck import drain_kubeconfig_for_plan, kubectl_path, read_kubeconfig

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


def applied_manifests(context: Context) -> list[Path]:
    """What this node applied from earlier bundles: the CNI manifest and the extra manifests (the cni phase's copies)."""
    found = [context.paths("/var/lib/airlock/cni/kube-flannel.yml")]
    addons = context.paths("/var/lib/airlock/addons")
    found += sorted(addons.iterdir()) if addons.is_dir() else []
    return [path for path in found if path.is_file()]


def run_api_check(context: Context) -> None:
    """Across minors: what the target minor no longer serves that the running cluster serves or a manifest uses."""
    installed = KubernetesVersion.parse(State.load(context.paths).installed.version, "state.json's installed version")
    target = KubernetesVersion.parse(context.manifest.version, "the bundle's Kubernetes version")
    if (target.major, target.minor) <= (installed.major, installed.minor):
        context.echo(f"{'would skip' if context.host.dry_run else '  skipped'}: same minor 1.{target.minor}, no API version changes to check")
        return
    minor = target.minor
    problems: list[str] = []
    if context.host.dry_run:
        context.echo(f"would run kubectl api-versions and check it and the manifests this node applied against Kubernetes 1.{minor}")
        return
    else:
        result = context.host.run(commands.kubectl_api_versions(kubectl_path(context), read_kubeconfig(context)), check=False, show=False, timeout=60)
        if result.returncode != 0:
            raise NodeError(f"cannot read the cluster's API versions (kubectl api-versions: {result.stderr.strip()[:200]}); is the control plane up?")
        live = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    problems += apis.live_breaks(live, minor)
    manifests = []
    staging = ensure_staged(context)
    carried = [member_file(context, entry.path, staging) for entry in context.manifest.files if entry.path.startswith(("manifests/cni/", "manifests/addons/"))]
    for path in applied_manifests(context) + carried:
        try:
            with open(path, "rb") as handle:
                manifests.append((str(path), apis.load_documents(handle.read(apis.MAX_MANIFEST_BYTES + 1))))
        except apis.ManifestError as error:
            problems.append(f"{path}: {error}")
    checked = apis.check_documents(manifests, minor)
    problems += [finding.describe() for finding in checked.removed]
    for finding in checked.findings:
        if finding.level != "removed":
            context.echo(f"  [WARNING api-versions] {finding.describe()}")
    ignored = {name.lower() for name in context.ignore_preflight} & {"all", "api-versions"}
    for problem in problems:
        context.echo(f"  [{'WARNING' if ignored else 'ERROR'} api-versions] {problem}")
    if problems and not ignored:
        raise NodeError(
            f"upgrading to Kubernetes 1.{minor} would break {len(problems)} thing(s) listed above, first: {problems[0]}; "
            "migrate them first, or pass --ignore-preflight-errors api-versions"
        )
    context.echo(f"  checked {len(live)} served API versions and {len(manifests)} manifests against Kubernetes 1.{minor} ({apis.SOURCE}, read {apis.READ_ON})")


API_CHECK = Phase(
    "api-versions",
    "across minors: stop when the target minor no longer serves an API the cluster serves or a carried or applied manifest uses",
    run_api_check,
)
KUBEADM_UPGRADE = Phase(
    "kubeadm-upgrade",
    "swap in the new kubeadm (old one kept until it succeeds), drain if asked, kubeadm upgrade apply VERSION or node",
    run_kubeadm_upgrade,
)
KUBELET_UPGRADE = Phase("kubelet-upgrade", "swap kubelet and kubectl, restart kubelet, uncordon", run_kubelet_upgrade)

