"""kube-vip: once init has brought the cluster up, the first control plane's kube-vip drops super-admin.conf.

kubeadm-init starts kube-vip with super-admin.conf, the only credential that may take the control-plane lease
before kubeadm has bound admin.conf's rights (kubeadm 1.29+). Once init is through, admin.conf has them, and
super-admin.conf (which bypasses RBAC: kubeadm's break-glass credential) should not stay in a running pod; this
phase rewrites the static pod with admin.conf, as kube-vip's kubeadm notes say to. It runs after cni, so the
kubelet restarting kube-vip (and the address moving for a few seconds) cannot fail anything init still does.
"""

from __future__ import annotations

from installer import apiwait
from installer.phases import Context, Phase
from installer.render import kubevip


def needed(context: Context) -> bool:
    return bool(context.config.virtual_ip)


def needed_on_control_plane(context: Context) -> bool:
    return bool(context.config.virtual_ip) and context.role in ("first-control-plane", "control-plane")


def the_pod(context: Context) -> dict:
    config = context.config
    return kubevip.node_pod(config.virtual_ip, config.virtual_ip_interface, config.control_plane_endpoint,
                            [image.reference for image in context.manifest.images], kubevip.KUBECONFIG)


def wait_for_virtual_ip(context: Context) -> None:
    """Go on once the API server answers at the virtual IP (kube-vip was restarted, or the API server behind it)."""
    config = context.config
    port = config.control_plane_endpoint.rsplit(":", 1)[-1]
    port = int(port) if port.isdigit() else apiwait.API_PORT
    url = apiwait.Check("kube-vip", config.virtual_ip, port, "/readyz").url
    if not context.will_wait(apiwait.DEFAULT_TIMEOUT, "the API server behind the virtual IP kube-vip holds", url):
        return
    apiwait.wait_for_virtual_ip(config.virtual_ip, port, context.paths("/etc/kubernetes/pki/ca.crt"), context.command, echo=context.echo)


def run(context: Context) -> None:
    context.host.write(context.paths(kubevip.MANIFEST), kubevip.dump(the_pod(context)), 0o600)
    context.echo(f"{'would point' if context.host.dry_run else 'pointed'} {kubevip.MANIFEST} at {kubevip.KUBECONFIG}, "
                 f"{'to drop' if context.host.dry_run else 'dropped'} {kubevip.FIRST_KUBECONFIG}: the kubelet restarts kube-vip with it")
    wait_for_virtual_ip(context)


def run_upgrade(context: Context) -> None:
    """After kubeadm upgrade: kube-vip.yaml from this bundle (its kube-vip image) when it differs, then wait for the address."""
    pod = the_pod(context)
    text, path = kubevip.dump(pod), context.paths(kubevip.MANIFEST)
    image = pod["spec"]["containers"][0]["image"]
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = None  # preflight refuses an upgrade that would add kube-vip; a dry run may get here
    if current == text:
        context.echo(f"{kubevip.MANIFEST} unchanged ({image})")
    else:
        context.host.write(path, text, 0o600)
        context.echo(f"{'would rewrite' if context.host.dry_run else 'rewrote'} {kubevip.MANIFEST} ({image}): the kubelet restarts kube-vip with it")
    wait_for_virtual_ip(context)


PHASE = Phase("kube-vip", "the first control plane's kube-vip uses admin.conf, not super-admin.conf, now that the cluster is up; "
              "wait until the API server answers at the virtual IP", run, run_if=needed)
UPGRADE = Phase("kube-vip", "on a control plane behind the virtual IP: kube-vip.yaml from this bundle, then wait until the API server "
                "answers at the virtual IP", run_upgrade, run_if=needed_on_control_plane)
