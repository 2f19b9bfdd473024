"""kubelet: its unit, kubeadm's drop-in, and local overrides from node.yaml."""

from __future__ import annotations

import shlex

from installer.phases import Context, Phase
from installer.phases.binaries import BIN, proxy_environment
from installer.phases.unpack import ensure_staged
from installer.templates import render


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host = context.paths, context.host
    host.write(paths("/etc/systemd/system/kubelet.service"), render("systemd/kubelet.service", staging, bin_dir=BIN))
    dropin = render("systemd/10-kubeadm.conf", staging, bin_dir=BIN, proxy_environment=proxy_environment())
    host.write(paths("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"), dropin)
    extra = " ".join(f"--{key}={shlex.quote(value)}" for key, value in sorted(context.config.kubelet.extra_args.items()))
    host.write(paths("/etc/default/kubelet"), f"KUBELET_EXTRA_ARGS={shlex.quote(extra)}\n" if extra else "KUBELET_EXTRA_ARGS=\n")
    # kubeadm starts kubelet itself (kubelet-start); enabling it keeps it across reboots.
    host.enable_service("kubelet.service", start=False)
    if context.start_services:
        host.run(["systemctl", "daemon-reload"])


PHASE = Phase("kubelet", "write kubelet.service, kubeadm's drop-in and local kubelet overrides", run)
