"""The phase lists of `init`, `join` and `upgrade`, in order: the one place that says which phases a command runs."""

from __future__ import annotations

from installer.phases import Phase, binaries, cni, done, images, kube_vip, kubeadm, kubelet, preflight, registry, runtime, unpack, upgrade, verify


def init_phases() -> list[Phase]:
    return [
        verify.PHASE,
        preflight.PHASE,
        unpack.PHASE,
        binaries.PHASE,
        runtime.PHASE,
        registry.PHASE,
        kubelet.PHASE,
        images.PHASE,
        kubeadm.INIT,
        cni.PHASE,
        kube_vip.PHASE,
        done.PHASE,
    ]


def phases_for(command: str) -> list[Phase]:
    if command == "upgrade":
        return upgrade_phases()
    return init_phases() if command == "init" else join_phases()


def join_phases() -> list[Phase]:
    # A joining control plane's kube-vip uses admin.conf from the start: no kube-vip phase.
    return [kubeadm.JOIN if phase.name == "kubeadm-init" else phase for phase in init_phases() if phase.name not in ("cni", "kube-vip")]


def upgrade_phases() -> list[Phase]:
    return [verify.PHASE, preflight.PHASE, unpack.PHASE, upgrade.API_CHECK, registry.PHASE, runtime.PHASE, images.PHASE, upgrade.KUBEADM_UPGRADE, kube_vip.UPGRADE, upgrade.KUBELET_UPGRADE, done.PHASE]
