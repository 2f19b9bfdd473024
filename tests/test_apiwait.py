"""airlock waits for a new control plane itself, for what kubeadm's wait-control-plane phase waits for.

Real TLS servers on loopback play the API server's /readyz (not ready, then ready; one signed by
another CA; nothing listening at all) and the controller manager's /healthz and scheduler's /livez
(certificates they made themselves, as those components do).
"""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest
import yaml

from installer.apiwait import readyz_once, wait_for_api_server
from installer.certs import issue
from installer.node import NodeError


class ReadyzServer:
    """HTTPS /readyz that answers 503 `not_ready` times, then 200 ok."""

    def __init__(self, directory, not_ready: int, path: str = "/readyz"):
        _, cert, key = issue(directory, ["kubernetes", "kubernetes.default"], prefix="apiserver")
        self.ca = directory / "ca.crt"
        self.answers: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                status = 503 if len(server.answers) < not_ready else 200
                server.answers.append(status)
                body = b"[-]etcd failed: reason withheld\nreadyz check failed" if status == 503 else b"ok"
                self.send_response(status if self.path == path else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def apiserver(tmp_path):
    server = ReadyzServer(tmp_path / "pki", not_ready=2)
    yield server
    server.close()


def test_waits_until_readyz_answers_ok(apiserver):
    lines = []
    wait_for_api_server("127.0.0.1", apiserver.ca, port=apiserver.port, timeout=20, interval=0.05, echo=lines.append)
    assert apiserver.answers == [503, 503, 200]
    assert "kube-apiserver is healthy after" in lines[-1]


def test_times_out_naming_what_to_look_at(apiserver):
    with pytest.raises(NodeError) as raised:
        wait_for_api_server("127.0.0.1", apiserver.ca, port=apiserver.port, timeout=0.0, interval=0.01)
    message = str(raised.value)
    assert "HTTP 503" in message and "readyz check failed" in message
    assert "crictl ps -a" in message and "journalctl -u kubelet" in message and f"https://127.0.0.1:{apiserver.port}/readyz" in message


def test_a_server_from_another_ca_is_never_ready(apiserver, tmp_path):
    stranger = ReadyzServer(tmp_path / "other-pki", not_ready=0)
    try:
        ready, why = readyz_once("127.0.0.1", stranger.port, apiserver.ca)
        assert not ready and "TLS" in why and "CERTIFICATE_VERIFY_FAILED" in why
        assert stranger.answers == []
    finally:
        stranger.close()


def test_nothing_listening_and_no_ca_yet(apiserver, tmp_path):
    from tests.upstream import free_port

    ready, why = readyz_once("127.0.0.1", free_port(), apiserver.ca, timeout=1)
    assert not ready and "refused" in why.lower()
    with pytest.raises(NodeError, match="ca.crt is missing"):
        wait_for_api_server("127.0.0.1", tmp_path / "nowhere" / "ca.crt", port=free_port(), timeout=0.0)


def test_every_control_plane_component_is_waited_for_where_its_static_pod_listens(apiserver, tmp_path):
    from installer.apiwait import control_plane_checks, wait_for

    kcm = ReadyzServer(tmp_path / "kcm-pki", not_ready=1, path="/healthz")
    scheduler = ReadyzServer(tmp_path / "scheduler-pki", not_ready=3, path="/livez")
    try:
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        for name, port in (("kube-controller-manager", kcm.port), ("kube-scheduler", scheduler.port)):
            pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": name, "command": [name, "--bind-address=127.0.0.1", f"--secure-port={port}"]}]}}
            (manifests / f"{name}.yaml").write_text(yaml.safe_dump(pod))
        pod = {"spec": {"containers": [{"command": ["kube-apiserver", "--advertise-address=127.0.0.1", f"--secure-port={apiserver.port}"]}]}}
        (manifests / "kube-apiserver.yaml").write_text(yaml.safe_dump(pod))
        checks = control_plane_checks(manifests, "192.0.2.10", apiserver.ca)
        assert [check.url for check in checks] == [f"https://127.0.0.1:{apiserver.port}/readyz", f"https://127.0.0.1:{kcm.port}/healthz",
                                                   f"https://127.0.0.1:{scheduler.port}/livez"]
        lines: list[str] = []
        wait_for(checks, timeout=20, interval=0.05, echo=lines.append)
        assert apiserver.answers[-1] == kcm.answers[-1] == scheduler.answers[-1] == 200 and scheduler.answers.count(503) == 3
        assert {line.split()[0] for line in lines if "is healthy after" in line} == {"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        # Without static Pods yet: kubeadm's defaults (the API server on the node's address, the others on loopback).
        defaults = control_plane_checks(tmp_path / "none", "192.0.2.10", apiserver.ca)
        assert [check.url for check in defaults] == ["https://192.0.2.10:6443/readyz", "https://127.0.0.1:10257/healthz", "https://127.0.0.1:10259/livez"]
    finally:
        kcm.close()
        scheduler.close()


def test_a_component_that_never_answers_is_named(apiserver, tmp_path):
    from installer.apiwait import Check, wait_for
    from tests.upstream import free_port

    silent = Check("kube-scheduler", "127.0.0.1", free_port(), "/livez")
    with pytest.raises(NodeError) as raised:
        wait_for([Check("kube-apiserver", "127.0.0.1", apiserver.port, "/readyz", apiserver.ca), silent], timeout=0.5, interval=0.05)
    message = str(raised.value)
    assert f"kube-scheduler at {silent.url}" in message and "kube-apiserver at" not in message
