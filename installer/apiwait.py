"""Wait for a new control plane's API server, as kubeadm's hidden wait-control-plane phase would.

kubeadm runs that phase only inside a whole `kubeadm init`; a phase-by-phase
install has to wait itself before upload-config. The API server answers
`/readyz` to anyone (system:public-info-viewer); its serving certificate is
checked against the cluster CA and the name `kubernetes`, which kubeadm puts
in every API server certificate whatever the node's addresses are.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from installer.node import NodeError

API_PORT = 6443
DEFAULT_TIMEOUT = 240.0  # kubeadm's own default (controlPlaneComponentHealthCheck: 4m0s)
SERVER_NAME = "kubernetes"


def readyz_once(address: str, port: int, ca_file: Path, timeout: float = 5.0) -> tuple[bool, str]:
    """(ready, what it answered): one GET /readyz over TLS trusting only the cluster CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            tls.sendall(f"GET /readyz HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\nAccept: text/plain\r\n\r\n".encode())
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


def wait_for_api_server(address: str, ca_file: Path, port: int = API_PORT, timeout: float = DEFAULT_TIMEOUT, interval: float = 2.0,
                        echo: Callable[[str], None] = lambda line: None, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll https://ADDRESS:PORT/readyz until it answers 200; on time-out say what to look at."""
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}:{port}/readyz"
    echo(f"waiting up to {timeout:.0f}s for the API server at {url} (kubelet starts it from /etc/kubernetes/manifests)")
    started = clock()
    last = "no answer yet"
    while True:
        if not ca_file.is_file():
            last = f"{ca_file} is missing (did `kubeadm init phase certs all` run?)"
        else:
            ready, last = readyz_once(address, port, ca_file, timeout=min(5.0, max(timeout, 0.5)))
            if ready:
                echo(f"the API server is ready after {clock() - started:.0f}s")
                return
        if clock() - started >= timeout:
            raise NodeError(
                f"the API server at {url} was not ready within {timeout:.0f}s (last answer: {last}); "
                "look at `crictl ps -a` (did etcd and kube-apiserver start?), `crictl logs CONTAINER` and `journalctl -u kubelet`, "
                "then rerun airlock-node init to resume"
            )
        sleep(interval)
