"""cni: the bundle's CNI manifest, set to this cluster's pod subnet, applied with kubectl."""

from __future__ import annotations

from installer import commands
from installer.flannel import configure
from installer.phases import Context, Phase
from installer.phases.binaries import BIN
from installer.phases.unpack import ensure_staged

FLANNEL = "manifests/cni/kube-flannel.yml"


def run(context: Context) -> None:
    staging = ensure_staged(context)
    source = staging / FLANNEL
    if source.is_file():
        text = configure(source.read_text(), context.config.pod_subnet, context.config.flannel)
    else:  # a dry run before anything was staged
        text = ""
    flannel = context.config.flannel
    interfaces = ", ".join([*flannel.ifaces, *(f"/{regex}/" for regex in flannel.iface_regexes)]) or "flanneld's default (the default route's)"
    context.echo(f"  {'would apply ' if context.host.dry_run else ''}flannel: backend {flannel.backend}, pod network {context.config.pod_subnet}, interface {interfaces}")
    target = context.paths("/var/lib/airlock/cni/kube-flannel.yml")
    context.host.write(target, text)
    kubeconfig = context.paths("/etc/kubernetes/admin.conf")
    context.host.run(commands.kubectl_apply(str(context.paths(f"{BIN}/kubectl")), str(kubeconfig), str(target)), timeout=300)


PHASE = Phase(
    "cni",
    "apply the bundle's CNI manifest (flannel) with the cluster's pod subnet, backend and interfaces",
    run,
    run_if=lambda context: context.manifest is not None and any(entry.path == FLANNEL for entry in context.manifest.files),
)
