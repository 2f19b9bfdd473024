"""Wait for a new control plane, as kubeadm's wait-control-plane phase does, without running that phase.

From 1.34 kubeadm's phase waits for every control-plane component
(cmd/kubeadm/app/util/apiclient/wait.go, WaitForControlPlaneComponents): the
API server's /livez on its advertise address, the controller manager's
/healthz and the scheduler's /livez on their bind addresses, each address and
port read from the component's static Pod (--advertise-address / --bind-address,
--secure-port). airlock cannot run that phase on an air-gapped node: it takes
no --config, so kubeadm builds a default configuration for it, which resolves
the `stable-1` label at dl.k8s.io and picks the default route's address. So
airlock waits for the same three itself (and on 1.33, where the phase is
hidden, too). The API server is asked for /readyz over TLS trusting only the
cluster CA and the name `kubernetes`, which kubeadm puts in every API server
certificate; the controller manager and scheduler serve certificates they made
themselves, which kubeadm does not verify either: nothing is sent to them.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from installer.errors import NodeError

API_PORT = 6443
DEFAULT_TIMEOUT = 240.0  # kubeadm's own default (controlPlaneComponentHealthCheck: 4m0s)
SERVER_NAME = "kubernetes"
MANIFESTS = "/etc/kubernetes/manifests"


@dataclass(frozen=True)
class Check:
    """One component's health endpoint; `ca` pins its serving certificate (None: not verified, as kubeadm does)."""

    component: str
    address: str
    port: int
    path: str
    ca: Path | None = None
    server_name: str = SERVER_NAME

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}{self.path}"


def _flags(manifest: Path, component: str) -> dict[str, str]:
    """The --name=value flags of a static Pod's container command (what kubeadm's getControlPlaneComponents reads)."""
    try:
        pod = yaml.safe_load(manifest.read_text())
        containers = pod["spec"]["containers"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    for container in containers if isinstance(containers, list) else []:
        command = container.get("command") if isinstance(container, dict) else None
        if isinstance(command, list) and command and command[0] == component:
            pairs = (str(word)[2:].partition("=") for word in command[1:] if str(word).startswith("--"))
            return {name: value for name, _, value in pairs}
    return {}


def _port(value: str, default: int) -> int:
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else default


def control_plane_checks(manifests: Path, api_address: str, ca: Path) -> list[Check]:
    """The API server, controller manager and scheduler of this node, where their static Pods say they listen."""
    api = _flags(manifests / "kube-apiserver.yaml", "kube-apiserver")
    kcm = _flags(manifests / "kube-controller-manager.yaml", "kube-controller-manager")
    scheduler = _flags(manifests / "kube-scheduler.yaml", "kube-scheduler")
    return [
        Check("kube-apiserver", api.get("advertise-address") or api_address, _port(api.get("secure-port", ""), API_PORT), "/readyz", ca),
        Check("kube-controller-manager", kcm.get("bind-address") or "127.0.0.1", _port(kcm.get("secure-port", ""), 10257), "/healthz"),
        Check("kube-scheduler", scheduler.get("bind-address") or "127.0.0.1", _port(scheduler.get("secure-port", ""), 10259), "/livez"),
    ]


def probe(check: Check, timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, what it answered): one GET over TLS."""
    if check.ca is not None:
        context = ssl.create_default_context(cafile=str(check.ca))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((check.address, check.port), timeout=timeout) as raw, context.wrap_socket(raw, server_hostname=check.server_name) as tls:
            tls.sendall(f"GET {check.path} HTTP/1.1\r\nHost: {check.server_name}:{check.port}\r\nConnection: close\r\nAccept: text/plain\r\n\r\n".encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            body = response.read(2048).decode("utf-8", "replace").strip()
    except ssl.SSLError as error:
        return False, f"TLS: {error.reason or error}"
    except (OSError, http.client.HTTPException) as error:
        return False, str(error) or type(error).__name__
    if response.status == 200:
        return True, body or "ok"
    return False, f"HTTP {response.status}: {body.splitlines()[-1] if body else ''}".strip()


def readyz_once(address: str, port: int, ca_file: Path, timeout: float = 5.0) -> tuple[bool, str]:
    """(ready, what it answered): one GET /readyz of the API server, trusting only the cluster CA."""
    return probe(Check("kube-apiserver", address, port, "/readyz", ca_file), timeout)


INIT_REMEDY = ("look at `crictl ps -a` (did etcd and the control-plane containers start?), `crictl logs CONTAINER` and `journalctl -u kubelet`, "
               "then rerun airlock-node init to resume")
VIRTUAL_IP_REMEDY = ("kube-vip holds that address: look at `crictl ps -a --name kube-vip`, `crictl logs CONTAINER` of it, the address on its "
                     "interface (`ip address show`) and `journalctl -u kubelet`, then rerun airlock-node {command} to resume")


def wait_for(checks: list[Check], timeout: float = DEFAULT_TIMEOUT, interval: float = 2.0, echo: Callable[[str], None] = lambda line: None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             subject: str = "the control plane", remedy: str = INIT_REMEDY) -> None:
    """Poll every check until each has answered 200 once; on time-out name the ones that did not and what to look at."""
    echo(f"waiting up to {timeout:.0f}s for {subject} (kubelet starts it from {MANIFESTS}): " + ", ".join(c.url for c in checks))
    started = clock()
    pending = {check.component: check for check in checks}
    last = {check.component: "no answer yet" for check in checks}
    while True:
        for name, check in list(pending.items()):
            if check.ca is not None and not check.ca.is_file():
                last[name] = f"{check.ca} is missing (did `kubeadm init phase certs all` run?)"
                continue
            healthy, last[name] = probe(check, timeout=min(5.0, max(timeout, 0.5)))
            if healthy:
                echo(f"{name} is healthy after {clock() - started:.0f}s")
                del pending[name]
        if not pending:
            return
        if clock() - started >= timeout:
            failing = "; ".join(f"{name} at {check.url}: {last[name]}" for name, check in pending.items())
            raise NodeError(f"{subject} was not healthy within {timeout:.0f}s ({failing}); {remedy}")
        sleep(interval)


def wait_for_api_server(address: str, ca_file: Path, port: int = API_PORT, timeout: float = DEFAULT_TIMEOUT, interval: float = 2.0,
                        echo: Callable[[str], None] = lambda line: None, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll https://ADDRESS:PORT/readyz until it answers 200 (the API server alone)."""
    wait_for([Check("kube-apiserver", address, port, "/readyz", ca_file)], timeout, interval, echo, clock, sleep)


def wait_for_virtual_ip(address: str, port: int, ca_file: Path, command: str, timeout: float = DEFAULT_TIMEOUT, interval: float = 2.0,
                        echo: Callable[[str], None] = lambda line: None, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll the API server's /readyz through the virtual IP kube-vip holds until it answers 200: after kube-vip's static
    pod was rewritten (the kubelet restarts it) or the API server behind the address restarted (kubeadm upgrade)."""
    wait_for([Check("kube-vip", address, port, "/readyz", ca_file)], timeout, interval, echo, clock, sleep,
             subject=f"the API server at the virtual IP {address}", remedy=VIRTUAL_IP_REMEDY.format(command=command))
