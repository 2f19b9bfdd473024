"""A strict STAND-IN for kubelet 1.33-1.38. Not Kubernetes: it parses its flags and stops.

kubelet parses its command line with pflag before anything else (cmd/kubelet/app/server.go), so a
flag that minor no longer has ends it at once with `unknown flag: --NAME`; `--version` answers
`Kubernetes vX.Y.Z`. Flags come from kubeadm's kubeadm-flags.env (kubeletExtraArgs) and from
airlock's drop-in. A loopback --node-ip is refused: the real kubelet keeps running but logs
"failed to validate nodeIP: nodeIP can't be loopback address" every 10 s and the node never gets an
InternalIP, which a stand-in can only show by refusing.

Removed flags, per minor:
- 1.35: --pod-infra-container-image (kubernetes/kubernetes PR #133779; kubelet 1.35 exits with
  "unknown flag: --pod-infra-container-image", as kubernetes-sigs/image-builder #1864 and kops #17657
  record; the sandbox image is the runtime's setting).

Test hooks: AIRLOCK_STANDIN_LOG (append "kubelet ARGS" per call).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

# The flags of `kubelet --help` that kubeadm, airlock or an operator's kubeletExtraArgs may pass (value-taking ones).
VALUE_FLAGS = {
    "address", "allowed-unsafe-sysctls", "authentication-token-webhook-cache-ttl", "authorization-mode", "bootstrap-kubeconfig",
    "cert-dir", "cgroup-driver", "cgroup-root", "client-ca-file", "cloud-config", "cloud-provider", "cluster-dns", "cluster-domain",
    "config", "config-dir", "container-log-max-files", "container-log-max-size", "container-runtime-endpoint", "cpu-manager-policy",
    "enforce-node-allocatable", "eviction-hard", "eviction-soft", "feature-gates", "healthz-bind-address", "healthz-port",
    "hostname-override", "image-credential-provider-bin-dir", "image-credential-provider-config", "image-gc-high-threshold",
    "image-gc-low-threshold", "image-service-endpoint", "kube-api-burst", "kube-api-qps", "kube-reserved", "kubeconfig", "lock-file",
    "log-flush-frequency", "max-open-files", "max-pods", "node-ip", "node-labels", "node-status-update-frequency", "oom-score-adj",
    "pod-cidr", "pod-infra-container-image", "pod-manifest-path", "pods-per-core", "port", "provider-id", "read-only-port",
    "register-with-taints", "reserved-cpus", "resolv-conf", "root-dir", "runtime-request-timeout", "system-reserved", "tls-cert-file",
    "tls-cipher-suites", "tls-min-version", "tls-private-key-file", "topology-manager-policy", "v", "vmodule",
}
SWITCHES = {"anonymous-auth", "fail-swap-on", "help", "make-iptables-util-chains", "protect-kernel-defaults", "register-node",
            "rotate-certificates", "seccomp-default", "serialize-image-pulls", "version"}
REMOVED = {"pod-infra-container-image": 35}


def known(minor: int) -> tuple[set[str], set[str]]:
    values = {flag for flag in VALUE_FLAGS if REMOVED.get(flag, 99) > minor}
    return values, set(SWITCHES)


def run(argv: list[str], version: str) -> int:
    minor = int(version.lstrip("v").split(".")[1])
    values, switches = known(minor)
    index = 0
    flags: dict[str, str] = {}
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-") or token in ("-", "--"):
            print(f"unknown command {token!r}", file=sys.stderr)  # kubelet takes no arguments
            return 1
        name, sep, value = token.lstrip("-").partition("=")
        if name == "h":
            name = "help"
        if name in switches:
            flags[name] = value if sep else "true"
        elif name in values:
            if not sep:
                if index >= len(argv):
                    print(f"flag needs an argument: --{name}", file=sys.stderr)
                    return 1
                value = argv[index]
                index += 1
            flags[name] = value
        else:
            print(f"unknown flag: --{name}", file=sys.stderr)
            print(f"Usage:\n  kubelet [flags] (stand-in {version})", file=sys.stderr)
            return 1
    if flags.get("version", "false") not in ("false", "False", "0"):
        print(f"Kubernetes {version}")
        return 0
    for address in (flags.get("node-ip") or "").split(","):
        if address and ipaddress.ip_address(address).is_loopback:
            print('E1202 stand-in] "Failed to set some node status fields" err="failed to validate nodeIP: nodeIP can\'t be loopback address"', file=sys.stderr)
            return 1
    print(f"[stand-in] kubelet {version}: flags accepted, nothing started")
    return 0


def main(version: str) -> None:
    argv = sys.argv[1:]
    log = os.environ.get("AIRLOCK_STANDIN_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write("kubelet " + " ".join(argv) + "\n")
    sys.exit(run(argv, version))


def script(version: str, arch: str) -> str:
    """The executable written where kubelet would be: this module, run by the test's Python."""
    repository = Path(__file__).resolve().parents[2]
    return (
        f"#!{sys.executable}\n"
        f"# airlock test STAND-IN for kubelet {version} linux/{arch} (tests/standin/kubelet.py). Not Kubernetes.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(repository)!r})\n"
        "from tests.standin.kubelet import main\n"
        f"main({version!r})\n"
    )
