"""kube-vip: once init has brought the cluster up, the first control plane's kube-vip drops super-admin.conf.

kubeadm-init starts kube-vip with super-admin.conf, the only credential that may take the control-plane lease
before kubeadm has bound admin.conf's rights (kubeadm 1.29+). Once init is through, admin.conf has them, and
super-admin.conf (which bypasses RBAC: kubeadm's break-glass credential) should not stay in a running pod; this
phase rewrites the static pod with admin.conf, as kube-vip's kubeadm notes say to. It runs after cni, so the
kubelet restarting kube-vip (and the address moving for a few seconds) cannot fail anything init still does.
"""

from __future__ import annotations

from installer.phases import Context, Phase
from installer.render import kubevip


def needed(context: Context) -> bool:
    return bool(context.config.virtual_ip)


def run(context: Context) -> None:
    config = context.config
    pod = kubevip.node_pod(config.virtual_ip, config.virtual_ip_interface, config.control_plane_endpoint,
                           [image.reference for image in context.manifest.images], kubevip.KUBECONFIG)
    context.host.write(context.paths(kubevip.MANIFEST), kubevip.dump(pod), 0o600)
    context.echo(f"{'would point' if context.host.dry_run else 'pointed'} {kubevip.MANIFEST} at {kubevip.KUBECONFIG}, "
                 f"{'to drop' if context.host.dry_run else 'dropped'} {kubevip.FIRST_KUBECONFIG}: the kubelet restarts kube-vip with it")


PHASE = Phase("kube-vip", "the first control plane's kube-vip uses admin.conf, not super-admin.conf, now that the cluster is up", run, run_if=needed)
