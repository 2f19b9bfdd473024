"""Every kubeadm and kubectl command line the installer runs, built in one place.

Each line exists in the real kubeadm of the minor it is built for (1.33-1.38, configuration
v1beta4) and the real kubectl of 1.27-1.33; tests check the kubeadm lines against the strict
stand-in of every minor and the kubectl lines against real kubectl binaries, through `catalogue()`.
kubeadm's init-side wait-control-plane phase is hidden up to 1.33 (no command) and from 1.34 takes
no --config, so kubeadm would resolve a version label for it: the installer never runs it and waits
for the control plane itself (installer/apiwait.py).
"""

from __future__ import annotations

# kubeadm's init phases airlock runs, in order; WAIT marks where airlock waits for the control plane, where a
# whole `kubeadm init` runs its wait-control-plane phase.
WAIT = ("(airlock waits for the control plane)",)
PREFLIGHT = ("preflight",)
UPLOAD_CERTS = ("upload-certs", "--upload-certs")
INIT_STEPS: tuple[tuple[str, ...], ...] = (
    PREFLIGHT,
    ("certs", "all"),
    ("kubeconfig", "all"),
    ("etcd", "local"),
    ("control-plane", "all"),
    ("kubelet-start",),
    WAIT,
    ("upload-config", "all"),
    UPLOAD_CERTS,
    ("mark-control-plane",),
    ("bootstrap-token",),
    ("kubelet-finalize", "all"),
    ("addon", "all"),
)
DRAIN_TIMEOUT = "600s"


def ignore_flag(checks: tuple[str, ...]) -> str:
    return "--ignore-preflight-errors=" + ",".join(checks)


def kubeadm_init_phase(kubeadm: str, step: tuple[str, ...], config: str, ignored: tuple[str, ...] = ()) -> list[str]:
    # Every call carries the rendered config, whose kubernetesVersion is exact: kubeadm never resolves a label.
    extra = [ignore_flag(ignored)] if step == PREFLIGHT and ignored else []
    return [kubeadm, "init", "phase", *step, *extra, "--config", config]


def kubeadm_join(kubeadm: str, config: str, ignored: tuple[str, ...] = ()) -> list[str]:
    # kubeadm join runs its own preflight first; --ignore-preflight-errors may go with --config.
    return [kubeadm, "join", *([ignore_flag(ignored)] if ignored else []), "--config", config]


def kubeadm_upgrade_apply(kubeadm: str, version: str) -> list[str]:
    # The exact version, never `upgrade plan` and never a label.
    return [kubeadm, "upgrade", "apply", version, "--yes"]


def kubeadm_upgrade_node(kubeadm: str) -> list[str]:
    return [kubeadm, "upgrade", "node"]


def kubeadm_token_create(kubeadm: str, kubeconfig: str, certificate_key: str = "") -> list[str]:
    """A new bootstrap token and the join command that uses it; with the key of freshly uploaded certificates, a control plane's."""
    return [kubeadm, "token", "create", "--print-join-command", "--kubeconfig", kubeconfig, *(["--certificate-key", certificate_key] if certificate_key else [])]


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
    from installer.minors import KUBEADM_IGNORED_CHECKS_CONTROL_PLANE

    return {
        "kubeadm": [
            *(kubeadm_init_phase(kubeadm, step, config, KUBEADM_IGNORED_CHECKS_CONTROL_PLANE) for step in INIT_STEPS if step != WAIT),
            kubeadm_join(kubeadm, config, KUBEADM_IGNORED_CHECKS_CONTROL_PLANE),
            kubeadm_upgrade_apply(kubeadm, version),
            kubeadm_upgrade_node(kubeadm),
            kubeadm_reset(kubeadm),
            kubeadm_token_create(kubeadm, kubeconfig),
            kubeadm_token_create(kubeadm, kubeconfig, "0" * 64),
        ],
        "kubectl": [
            kubectl_server_version(kubectl_path, kubeconfig),
            kubectl_drain(kubectl_path, kubeconfig, node),
            kubectl_uncordon(kubectl_path, kubeconfig, node),
            kubectl_apply(kubectl_path, kubeconfig, manifest),
            kubectl_api_versions(kubectl_path, kubeconfig),
        ],
    }
