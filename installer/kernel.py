"""The kernel settings Kubernetes needs (kubeadm's install guide): modules and sysctls, persisted and applied.

The runtime phase writes the two files and applies them; preflight checks the same modules are there or loadable.
"""

from __future__ import annotations

from pathlib import Path

from installer.errors import NodeError

MODULES_FILE = "/etc/modules-load.d/airlock.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-airlock-kubernetes.conf"
MODULES = ("overlay", "br_netfilter")
# kubeadm's install guide: bridged traffic seen by iptables, and forwarding on.
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}


def modules_file() -> str:
    return "# Written by airlock: kernel modules Kubernetes needs (kubeadm's install guide).\n" + "".join(f"{name}\n" for name in MODULES)


def sysctl_file() -> str:
    return "# Written by airlock: kernel settings Kubernetes needs (kubeadm's install guide).\n" + "".join(f"{key} = {value}\n" for key, value in SYSCTLS.items())


def module_loaded(name: str) -> bool:
    """Loaded as a module, or built into the kernel (then /sys/module may lack it, but what it provides is there)."""
    if Path(f"/sys/module/{name}").exists():
        return True
    if name == "br_netfilter":
        return Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    if name == "overlay":
        filesystems = Path("/proc/filesystems")
        return filesystems.exists() and any(line.split()[-1:] == ["overlay"] for line in filesystems.read_text().splitlines())
    return False


def apply_kernel_settings(host) -> None:
    """Load the modules and set the sysctls now, as the files above will at every boot."""
    for name in MODULES:
        if not module_loaded(name):
            host.run(["modprobe", name])
    for key, value in SYSCTLS.items():
        setting = Path("/proc/sys") / key.replace(".", "/")
        if host.dry_run:
            host.echo(f"would set {key} = {value}")
            continue
        try:
            if setting.read_text().strip() != value:
                setting.write_text(value)
        except OSError as error:
            raise NodeError(f"cannot set sysctl {key} = {value} ({error.strerror}); set it by hand, it is persisted in {SYSCTL_FILE}") from None
