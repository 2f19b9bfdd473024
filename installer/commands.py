"""Every kubeadm and kubectl command line the installer runs, built in one place.

Each line exists in the real kubeadm of 1.29–1.33 (configuration v1beta3 and
v1beta4) and the real kubectl of 1.27–1.33; tests check the kubeadm lines
against the strict stand-in and the kubectl lines against real kubectl
binaries, both through `catalogue()`. kubeadm's init-side wait-control-plane
phase is hidden (it has no command), so the installer waits for the API
server itself between kubelet-start and upload-config (installer/apiwait.py).
"""

from __future__ import annotations

# kubeadm's init phases airlock runs, in order; WAIT marks where airlock waits for the API server.
WAIT = ("(airlock waits for the API server's /readyz)",)
INIT_STEPS: tuple[tuple[str, ...], ...] = (
    ("certs", "all"),
    ("kubeconfig", "all"),
    ("etcd", "local"),
    ("control-plane", "all"),
    ("kubelet-start",),
    WAIT,
    ("upload-config", "all"),
    ("upload-certs", "--upload-certs"),
    ("mark-control-plane",),
    ("bootstrap-token",),
    ("kubelet-finalize", "all"),
    ("addon", "all"),
)
DRAIN_TIMEOUT = "600s"


def kubeadm_init_phase(kubeadm: str, step: tuple[str, ...], config: str) -> list[str]:
    # Every call carries the rendered config, whose kubernetesVersion is exact: kubeadm never resolves a label.
    return [kubeadm, "init", "phase", *step, "--config", config]


def kubeadm_join(kubeadm: str, config: str) -> list[str]:
    return [kubeadm, "join", "--config", config]


def kubeadm_upgrade_apply(kubeadm: str, version: str) -> list[str]:
    # The exact version, never `upgrade plan` and never a label.
    return [kubeadm, "upgrade", "apply", version, "--yes"]


def kubeadm_upgrade_node(kubeadm: str) -> list[str]:
    return [kubeadm, "upgrade", "node"]


def kubeadm_reset(kubeadm: str) -> list[str]:
    return [kubeadm, "reset", "--force"]


def kubectl(kubectl_path: str, kubeconfig: str, *args: str) -> list[str]:
    return [kubectl_path, "--kubeconfig", kubeconfig, *args]


def kubectl_server_version(kubectl_path: str, kubeconfig: str) -> list[str]:
    return kubectl(kubectl_path, kubeconfig, "version", "-o", "json")


def kubectl_drain(kubectl_path: str, kubeconfig: str, node: str) -> list[str]:
    # drain cordons first; --timeout makes kubectl give up (and say why) before the installer's own limit.
    return kubectl(kubectl_path, kubeconfig, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={DRAIN_TIMEOUT}")


def kubectl_uncordon(kubectl_path: str, kubeconfig: str, node: str) -> list[str]:
    return kubectl(kubectl_path, kubeconfig, "uncordon", node)


def kubectl_apply(kubectl_path: str, kubeconfig: str, manifest: str) -> list[str]:
    return kubectl(kubectl_path, kubeconfig, "apply", "-f", manifest)


def kubectl_api_versions(kubectl_path: str, kubeconfig: str) -> list[str]:
    # What the running cluster serves, one group/version a line (what an upgrade across minors checks).
    return kubectl(kubectl_path, kubeconfig, "api-versions")


def catalogue(kubeadm: str = "kubeadm", kubectl_path: str = "kubectl", config: str = "CONFIG", kubeconfig: str = "KUBECONFIG",
              version: str = "VERSION", node: str = "NODE", manifest: str = "MANIFEST") -> dict[str, list[list[str]]]:
    """Every command line the installer can run, by program, with the given placeholders filled in."""
    return {
        "kubeadm": [
            *(kubeadm_init_phase(kubeadm, step, config) for step in INIT_STEPS if step != WAIT),
            kubeadm_join(kubeadm, config),
            kubeadm_upgrade_apply(kubeadm, version),
            kubeadm_upgrade_node(kubeadm),
            kubeadm_reset(kubeadm),
        ],
        "kubectl": [
            kubectl_server_version(kubectl_path, kubeconfig),
            kubectl_drain(kubectl_path, kubeconfig, node),
            kubectl_uncordon(kubectl_path, kubeconfig, node),
            kubectl_apply(kubectl_path, kubeconfig, manifest),
            kubectl_api_versions(kubectl_path, kubeconfig),
        ],
    }
