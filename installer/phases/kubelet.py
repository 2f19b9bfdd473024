"""kubelet: its unit and kubeadm's drop-in; node.yaml's kubelet flags go through kubeadm (kubeletExtraArgs)."""

from __future__ import annotations

from installer.phases import Context, Phase
from installer.render.unitfiles import kubeadm_dropin, kubelet_service


def run(context: Context) -> None:
    paths, host = context.paths, context.host
    host.write(paths("/etc/systemd/system/kubelet.service"), kubelet_service())
    host.write(paths("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"), kubeadm_dropin())
    # kubeadm starts kubelet itself (kubelet-start); enabling it keeps it across reboots.
    host.enable_service("kubelet.service", start=False)
    if context.start_services:
        host.run(["systemctl", "daemon-reload"])


PHASE = Phase("kubelet", "write kubelet.service and kubeadm's drop-in", run)
