"""The systemd units airlock writes onto a node, as values (rendered by `installer.render.units`)."""

from __future__ import annotations

from installer.node import BIN
from installer.render.units import Variable, command, environment, plain, proxy_environment, render


def kubelet_service() -> str:
    return render(
        [
            (
                "Unit",
                [
                    ("Description", plain("kubelet: The Kubernetes Node Agent (installed by airlock)")),
                    ("Documentation", plain("https://kubernetes.io/docs/")),
                    ("Wants", plain("network-online.target")),
                    ("After", plain("network-online.target")),
                ],
            ),
            ("Service", [("ExecStart", command([f"{BIN}/kubelet"])), ("Restart", "always"), ("StartLimitInterval", "0"), ("RestartSec", "10")]),
            ("Install", [("WantedBy", "multi-user.target")]),
        ]
    )


def kubeadm_dropin() -> str:
    """kubelet.service.d/10-kubeadm.conf: the flags kubeadm expects kubelet to run with (kubeadm's own layout)."""
    return render(
        [
            (
                "Service",
                [
                    ("Environment", environment("KUBELET_KUBECONFIG_ARGS", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf")),
                    ("Environment", environment("KUBELET_CONFIG_ARGS", "--config=/var/lib/kubelet/config.yaml")),
                    # kubeadm writes KUBELET_KUBEADM_ARGS (with node.yaml's kubeletExtraArgs and the node's address) here.
                    ("EnvironmentFile", plain("-/var/lib/kubelet/kubeadm-flags.env")),
                    # The operator's own KUBELET_EXTRA_ARGS; airlock leaves this file alone.
                    ("EnvironmentFile", plain("-/etc/default/kubelet")),
                    *proxy_environment(),
                    ("ExecStart", ""),
                    (
                        "ExecStart",
                        command(
                            [
                                f"{BIN}/kubelet",
                                Variable("KUBELET_KUBECONFIG_ARGS"),
                                Variable("KUBELET_CONFIG_ARGS"),
                                Variable("KUBELET_KUBEADM_ARGS"),
                                Variable("KUBELET_EXTRA_ARGS"),
                            ]
                        ),
                    ),
                ],
            )
        ],
        header="Written by airlock: the flags kubeadm expects kubelet to run with.",
    )


def containerd_service() -> str:
    return render(
        [
            (
                "Unit",
                [
                    ("Description", plain("containerd container runtime (installed by airlock)")),
                    ("Documentation", plain("https://containerd.io")),
                    ("After", plain("network.target local-fs.target")),
                ],
            ),
            (
                "Service",
                [
                    ("ExecStartPre", "-" + command(["/sbin/modprobe", "overlay"])),
                    ("ExecStart", command([f"{BIN}/containerd"])),
                    *proxy_environment(),
                    ("Type", "notify"),
                    ("Delegate", "yes"),
                    ("KillMode", "process"),
                    ("Restart", "always"),
                    ("RestartSec", "5"),
                    ("LimitNPROC", "infinity"),
                    ("LimitCORE", "infinity"),
                    ("TasksMax", "infinity"),
                    ("OOMScoreAdjust", "-999"),
                ],
            ),
            ("Install", [("WantedBy", "multi-user.target")]),
        ]
    )


def registry_service(airlock: list[str], store: str, listen: str, credentials: dict[str, str] | None = None) -> str:
    """airlock-registry.service: the node registry, unprivileged, reading the store only.

    `credentials` (name -> root-only file) become LoadCredential= settings and
    `--tls-credentials`: the service reads its copies from $CREDENTIALS_DIRECTORY.
    """
    argv = [*airlock, "registry", "serve", "--store", store, "--listen", listen]
    loads = []
    if credentials:
        argv.append("--tls-credentials")
        loads = [("LoadCredential", plain(f"{name}:{path}")) for name, path in credentials.items()]
    return render(
        [
            (
                "Unit",
                [
                    ("Description", plain("airlock node registry: serves the bundle's images read-only")),
                    ("After", plain("network.target local-fs.target")),
                    ("Before", plain("containerd.service kubelet.service")),
                ],
            ),
            (
                "Service",
                [
                    ("ExecStart", command(argv)),
                    *loads,
                    ("Restart", "always"),
                    ("RestartSec", "2"),
                    ("DynamicUser", "yes"),
                    ("ReadOnlyPaths", plain(store)),
                    ("NoNewPrivileges", "yes"),
                    ("ProtectSystem", "strict"),
                    ("ProtectHome", "yes"),
                    ("PrivateTmp", "yes"),
                    # Bounds that hold under a flood of connections (the server caps itself at (LimitNOFILE - 64) / 2 connections).
                    ("LimitNOFILE", "16384"),
                    ("MemoryMax", "512M"),
                    ("TasksMax", "64"),
                ],
            ),
            ("Install", [("WantedBy", "multi-user.target")]),
        ]
    )
