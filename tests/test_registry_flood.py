"""The registry keeps serving a legitimate pull while its port is flooded (loopback only, bounded, stops by itself).

Each test holds an attack open and asserts only functional outcomes: the
legitimate GET of a manifest and of a blob succeeded within its client
timeout, the attacker's connections were cut by the server's deadlines and
caps, and the server's memory stayed bounded. Latency figures under each
attack come from `python -m bench.registry_flood_bench`.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests import flood
from tests.conftest import AIRLOCK, airlock, require
from tests.ocilayout import Layout
from tests.test_load import rss_kib
from tests.upstream import free_port

CLIENT_TIMEOUT = 10  # seconds a legitimate client waits for its answer
HEADER_TIMEOUT = 3
MAX_CONNECTIONS = 1000


class FloodedServer:
    def __init__(self, store: Path, tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        argv = [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{self.port}", "--no-access-log",
                "--max-connections", str(MAX_CONNECTIONS), "--header-timeout", str(HEADER_TIMEOUT), "--idle-timeout", str(HEADER_TIMEOUT)]  # fmt: skip
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("airlock registry serve did not start") from None
                time.sleep(0.1)

    def close(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    store = Layout(tmp_path_factory.mktemp("flood-store"))
    image = store.add("registry.example/flood/app:1", "oci", payload_bytes=1 << 20)
    layer = next(digest for digest, data in image.blobs.items() if len(data) > 1000)
    return store.root, ["/v2/flood/app/manifests/1?ns=registry.example", f"/v2/flood/app/blobs/{layer}?ns=registry.example"]


@pytest.fixture(scope="module")
def server(layout):
    flood.raise_fd_limit()  # the server inherits it; its own cap stays at MAX_CONNECTIONS
    running = FloodedServer(layout[0])
    yield running
    assert running.close() == 0  # still alive, and SIGTERM is a clean stop


def legitimate_pull_succeeds(port: int, paths: list[str], context: ssl.SSLContext | None = None) -> None:
    for path in paths:
        status, body, _ = flood.legitimate_get(port, path, context, CLIENT_TIMEOUT)
        assert status == 200 and body, path


def test_thousands_of_idle_connections(server, layout):
    if flood.raise_fd_limit() < 6000:
        pytest.skip("this process may not open 6000 files (ulimit -Hn)")
    legitimate_pull_succeeds(server.port, layout[1])
    with flood.idle(server.port, 5000) as sockets:
        assert len(sockets) >= MAX_CONNECTIONS  # the flood did reach past the cap
        legitimate_pull_succeeds(server.port, layout[1])
        assert rss_kib(server.process.pid) < 256 * 1024
        # The cap holds: the server converges to at most MAX_CONNECTIONS of them open (plus a few files of its own).
        # On a busy machine it may still be accepting the backlog and closing the oldest: wait, bounded, for that.
        deadline = time.monotonic() + 60
        while (open_files := len(os.listdir(f"/proc/{server.process.pid}/fd"))) > MAX_CONNECTIONS + 32 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert open_files <= MAX_CONNECTIONS + 32


def test_half_open_and_slow_loris_requests(server, layout):
    flood.raise_fd_limit()
    with flood.half_open(server.port, 1500), flood.slow_loris(server.port, 1000, interval=0.5) as loris:
        for _ in range(3):
            legitimate_pull_succeeds(server.port, layout[1])
            time.sleep(HEADER_TIMEOUT / 2)
        time.sleep(HEADER_TIMEOUT + 1)
        # No trickle keeps a connection: the header deadline (or the cap) cut the slow clients.
        assert loris["dropped"] >= 1000
        legitimate_pull_succeeds(server.port, layout[1])


def test_a_slow_header_is_cut_at_the_deadline(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
        try:
            while time.monotonic() - started < HEADER_TIMEOUT + 5:
                sock.sendall(b"X")
                time.sleep(0.5)
            pytest.fail("the server kept a request whose headers never ended")
        except OSError:
            pass
        assert time.monotonic() - started < HEADER_TIMEOUT + 3


@pytest.mark.parametrize("head, status", [
    (b"GET /v2/ HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", b"431"),
    (b"GET /v2/ HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", b"431"),
    (b"GET /v2/ HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10), b"431"),  # unfinished: refused before it ends
])  # fmt: skip
def test_header_bytes_and_count_are_capped(server, head, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass  # refused and closed while we were still sending
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert answer.split(b" ")[1:2] == [status]


def test_thousands_of_connections_closed_at_once(server, layout):
    flood.raise_fd_limit()
    sockets = flood.connect_many(server.port, 3000, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in sockets:
        # RST rather than FIN: the harshest close for the server to absorb.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    flood.close_all(sockets)
    legitimate_pull_succeeds(server.port, layout[1])


def test_tls_handshakes_that_never_start(layout, tmp_path):
    require("openssl")
    flood.raise_fd_limit()
    pki = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", pki, "--name", "127.0.0.1", check=True)
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    running = FloodedServer(layout[0], tls=(pki / "registry.crt", pki / "registry.key"))
    try:
        with flood.stalled_handshakes(running.port, 2000) as sockets:
            legitimate_pull_succeeds(running.port, layout[1], context)
            time.sleep(HEADER_TIMEOUT + 1.5)
            # Every stalled handshake was cut by the handshake deadline or the cap.
            open_ones = 0
            for sock in sockets:
                sock.setblocking(False)
                try:
                    open_ones += sock.recv(1) != b""
                except BlockingIOError:
                    open_ones += 1
                except OSError:
                    pass
            assert open_ones == 0
            legitimate_pull_succeeds(running.port, layout[1], context)
    finally:
        assert running.close() == 0


def test_a_client_that_half_closes_still_gets_its_blob(server, layout):
    """shutdown(SHUT_WR) after the request (as `nc -q` does) is not a reason to cut the answer short."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(f"GET {layout[1][1]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(1 << 20):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    assert head.startswith(b"HTTP/1.1 200 ") and length > 256 << 10 and len(body) == length
