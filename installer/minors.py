"""What differs between the Kubernetes minors a node may run (1.33, for upgrades off it, to 1.38).

One table, read from kubeadm's and kubelet's source per minor (docs/kubeadm.md names the file and
revision of each line): which kubeadm phases exist, which kubelet flags are gone, which kubeadm
preflight checks airlock has already made. Code that decides what to run asks here, never
compares version numbers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundle.version import KubernetesVersion

# kubelet flags removed, with the first minor without them (kubelet exits with "unknown flag" there) and what to do instead.
REMOVED_KUBELET_FLAGS = {
    "pod-infra-container-image": (35, "the sandbox (pause) image is containerd's setting, which airlock pins to the bundle's pause image"),
}

# How many minors a kubelet may trail the API server (Kubernetes' version-skew policy, unchanged 1.28-1.38).
KUBELET_MAX_SKEW = 3

# kubeadm preflight checks airlock has already made itself (its own preflight phase, same meaning), so a node the operator
# let through airlock's check (--ignore-preflight-errors) is not stopped again by kubeadm's copy of it.
KUBEADM_IGNORED_CHECKS_CONTROL_PLANE = ("IsPrivilegedUser", "Swap", "Port-6443", "Port-10259", "Port-10257", "Port-10250", "Port-2379", "Port-2380")
KUBEADM_IGNORED_CHECKS_WORKER = ("IsPrivilegedUser", "Swap", "Port-10250")


@dataclass(frozen=True)
class Minor:
    number: int

    @property
    def init_wait_phase(self) -> bool:
        """`kubeadm init phase wait-control-plane` is a command (WaitForAllControlPlaneComponents GA in 1.34); before, it is hidden.
        airlock never runs it (it takes no --config, see installer/apiwait.py); the stand-ins' command trees use this."""
        return self.number >= 34

    @property
    def kubeadm_api(self) -> str:
        return "v1beta4"

    def removed_kubelet_flag(self, name: str) -> str | None:
        """Why kubelet of this minor refuses --NAME, or None when it still has it."""
        removed = REMOVED_KUBELET_FLAGS.get(name)
        if removed and self.number >= removed[0]:
            return f"kubelet 1.{self.number} has no --{name} (removed in 1.{removed[0]}): {removed[1]}"
        return None


def of(version: str) -> Minor:
    """The minor of bundle.json's version label (VersionError, one line, when it is not one)."""
    return Minor(KubernetesVersion.parse(version, "the bundle's Kubernetes version").minor)


def kubelet_flag_problems(version: str, flags: dict[str, str]) -> list[str]:
    minor = of(version)
    return [problem for name in sorted(flags) if (problem := minor.removed_kubelet_flag(name))]
