"""cni: the bundle's CNI manifest, set to this cluster's pod subnet, applied with kubectl."""

from __future__ import annotations

from installer import commands
from installer.phases import Context, Phase
from installer.phases.binaries import BIN
from installer.phases.unpack import ensure_staged

FLANNEL = "manifests/cni/kube-flannel.yml"
DEFAULT_POD_NETWORK = '"Network": "10.244.0.0/16"'


def run(context: Context) -> None:
    staging = ensure_staged(context)
    source = staging / FLANNEL
    text = source.read_text() if not context.host.dry_run else ""
    text = text.replace(DEFAULT_POD_NETWORK, f'"Network": "{context.config.pod_subnet}"')
    target = context.paths("/var/lib/airlock/cni/kube-flannel.yml")
    context.host.write(target, text)
    kubeconfig = context.paths("/etc/kubernetes/admin.conf")
    context.host.run(commands.kubectl_apply(str(context.paths(f"{BIN}/kubectl")), str(kubeconfig), str(target)), timeout=300)


PHASE = Phase(
    "cni",
    "apply the bundle's CNI manifest (flannel) with the cluster's pod subnet",
    run,
    run_if=lambda context: context.manifest is not None and any(entry.path == FLANNEL for entry in context.manifest.files),
)
