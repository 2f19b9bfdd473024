"""Connection floods against a registry on loopback, and a legitimate client timed through them.

Every attack runs from this process only, against 127.0.0.1, for as long as
its `with` block lasts: idle connections that never send a byte, half-open
requests that stop before their last header, slow-loris clients trickling one
byte at a time (reconnecting when dropped, as an attacker would), TLS
connections that never start their handshake, and thousands of connections
closed at once.
"""

from __future__ import annotations

import http.client
import resource
import selectors
import socket
import ssl
import threading
import time
from contextlib import contextmanager

HALF_OPEN_HEAD = b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nUser-Agent: half-open\r\n"


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect_many(port: int, count: int, first_bytes: bytes = b"", timeout: float = 30) -> list[socket.socket]:
    """`count` TCP connections to 127.0.0.1:port, each having sent `first_bytes`; those the server refused are left out."""
    selector = selectors.DefaultSelector()
    pending, connected = {}, []
    deadline = time.monotonic() + timeout
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        pending[sock.fileno()] = sock
        # Keep the number of connects in flight below the listen backlog.
        while len(pending) >= 512 and time.monotonic() < deadline:
            _drain(selector, pending, connected, first_bytes, 0.5)
    while pending and time.monotonic() < deadline:
        _drain(selector, pending, connected, first_bytes, 0.5)
    for sock in pending.values():
        selector.unregister(sock)
        sock.close()
    selector.close()
    return connected


def _drain(selector, pending: dict, connected: list, first_bytes: bytes, wait: float) -> None:
    for key, _ in selector.select(wait):
        sock = key.fileobj
        selector.unregister(sock)
        del pending[sock.fileno()]
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            sock.close()
            continue
        if first_bytes:
            try:
                sock.send(first_bytes)
            except OSError:
                sock.close()
                continue
        connected.append(sock)


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
    sockets.clear()


@contextmanager
def idle(port: int, count: int):
    sockets = connect_many(port, count)
    try:
        yield sockets
    finally:
        close_all(sockets)


@contextmanager
def half_open(port: int, count: int):
    sockets = connect_many(port, count, HALF_OPEN_HEAD)
    try:
        yield sockets
    finally:
        close_all(sockets)


@contextmanager
def slow_loris(port: int, count: int, interval: float = 1.0):
    """`count` clients each sending one more header byte every `interval` seconds, reconnecting when dropped."""
    sockets = connect_many(port, count, b"G")
    stop = threading.Event()
    stats = {"dropped": 0}

    def trickle() -> None:
        while not stop.wait(interval):
            dropped = 0
            for index, sock in enumerate(sockets):
                try:
                    sock.send(b"a")
                except OSError:
                    sock.close()
                    sockets[index] = None
                    dropped += 1
            stats["dropped"] += dropped
            alive = [sock for sock in sockets if sock is not None]
            if dropped and not stop.is_set():
                alive += connect_many(port, dropped, b"G", timeout=5)
            sockets[:] = alive

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join()
        close_all(sockets)


@contextmanager
def stalled_handshakes(port: int, count: int):
    """TLS connections that never send their ClientHello."""
    with idle(port, count) as sockets:
        yield sockets


def legitimate_get(port: int, path: str, context: ssl.SSLContext | None = None, timeout: float = 10) -> tuple[int, bytes, float]:
    """One GET on a fresh connection, as a pulling client makes it: (status, body, seconds)."""
    started = time.perf_counter()
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"})
        response = connection.getresponse()
        body = response.read()
        return response.status, body, time.perf_counter() - started
    finally:
        connection.close()


def latencies(port: int, paths: list[str], rounds: int, context: ssl.SSLContext | None = None, timeout: float = 10) -> list[float]:
    """Seconds per legitimate GET (each path, `rounds` times); a failed GET counts as the client timeout."""
    samples = []
    for _ in range(rounds):
        for path in paths:
            try:
                status, _, seconds = legitimate_get(port, path, context, timeout)
            except OSError:
                status, seconds = 0, timeout
            samples.append(seconds if status == 200 else timeout)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
