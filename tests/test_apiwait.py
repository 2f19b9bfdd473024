"""airlock waits for a new API server itself (kubeadm's init-side wait-control-plane phase is hidden).

A real TLS server on loopback plays the API server's /readyz: not ready, then ready; one signed by
another CA; and nothing listening at all.
"""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest

from installer.apiwait import readyz_once, wait_for_api_server
from installer.certs import issue
from installer.node import NodeError


class ReadyzServer:
    """HTTPS /readyz that answers 503 `not_ready` times, then 200 ok."""

    def __init__(self, directory, not_ready: int):
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
                self.send_response(status if self.path == "/readyz" else 404)
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
    assert "ready after" in lines[-1]


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
