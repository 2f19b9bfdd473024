"""cni: the bundle's CNI manifest, set to this cluster's pod subnet, then its extra manifests, applied with kubectl.

Extra manifests (`airlock build --manifest FILE`) are members under
manifests/addons/, applied in their order after the CNI; each is copied to
/var/lib/airlock/addons/ (checked against bundle.json on the way), where an
upgrade later finds what this node applied.
"""

from __future__ import annotations

from installer import commands
from installer.node import BIN
from installer.phases import Context, Phase
from installer.render.flannel import configure
from installer.staging import ensure_staged, install_staged, member_file

FLANNEL = "manifests/cni/kube-flannel.yml"
ADDONS = "manifests/addons/"
APPLIED = "/var/lib/airlock/addons"


def addon_members(context: Context) -> list[str]:
    return sorted(entry.path for entry in context.manifest.files if entry.path.startswith(ADDONS))


def run(context: Context) -> None:
    staging = ensure_staged(context)
    kubectl = str(context.paths(f"{BIN}/kubectl"))
    kubeconfig = str(context.paths("/etc/kubernetes/admin.conf"))
    if any(entry.path == FLANNEL for entry in context.manifest.files):
        source = member_file(context, FLANNEL, staging)
        if source.is_file():
            text = configure(source.read_text(), context.config.pod_subnet, context.config.flannel)
        else:  # a dry run before anything was staged
            text = ""
        flannel = context.config.flannel
        interfaces = ", ".join([*flannel.ifaces, *(f"/{regex}/" for regex in flannel.iface_regexes)]) or "flanneld's default (the default route's)"
        context.echo(f"  {'would apply ' if context.host.dry_run else ''}flannel: backend {flannel.backend}, pod network {context.config.pod_subnet}, interface {interfaces}")
        target = context.paths("/var/lib/airlock/cni/kube-flannel.yml")
        context.host.write(target, text)
        context.host.run(commands.kubectl_apply(kubectl, kubeconfig, str(target)), timeout=300)
    for member in addon_members(context):
        target = context.paths(f"{APPLIED}/{member[len(ADDONS):]}")
        install_staged(context, member, target, 0o644)
        context.host.run(commands.kubectl_apply(kubectl, kubeconfig, str(target)), timeout=300)


PHASE = Phase(
    "cni",
    "apply the bundle's CNI manifest (flannel) with the cluster's pod subnet, backend and interfaces, then its extra manifests (--manifest), with kubectl",
    run,
    run_if=lambda context: context.manifest is not None and any(entry.path == FLANNEL or entry.path.startswith(ADDONS) for entry in context.manifest.files),
)
