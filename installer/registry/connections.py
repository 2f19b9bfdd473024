"""HTTP/1.1 connections for the node registry: one asyncio event loop, every resource bounded.

A connection costs a file descriptor and a few kilobytes, never a thread, so
thousands of idle or slow ones cannot starve the server. What a client may
hold is capped, and what it may take is timed:

- connections: at most `max_connections`; a new one past the cap closes the
  connection that has waited longest for a complete request (idle,
  slow-loris, half-open or mid-handshake), so a client that sends its request
  at once always gets in;
- headers: `header_bytes` and `header_count` per request, `buffered_bytes`
  over all connections (the longest waiting go first past it);
- time: `handshake_timeout` for TLS, `header_timeout` from a request's first
  byte to its last header, `idle_timeout` between kept-alive requests, and
  `send_timeout` without any progress while a response goes out.

Blob bodies go out with sendfile (plain HTTP) or in bounded chunks (TLS).
Requests carry no body here: a GET or HEAD with one is refused and the
connection closed, so a body is never read as the next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import resource
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TextIO

from installer.registry.api import API_HEADER, ApiError, Response, error_response

SWEEP_SECONDS = 0.25
STALLED_SECONDS = 1.0  # a response without progress this long may be dropped to let a new client in at the cap
SENDFILE_CHUNK = 4 << 20  # progress is checked between chunks: a 4 MiB chunk within send_timeout
TLS_CHUNK = 256 << 10
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_UNPRINTABLE = re.compile(r'[^\x21-\x7e]|["\\]')


@dataclass(frozen=True)
class Limits:
    max_connections: int = 4096
    header_bytes: int = 64 << 10
    header_count: int = 100
    buffered_bytes: int = 64 << 20
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    send_timeout: float = 60.0


def printable(text: str) -> str:
    """Text for a log line: anything but printable ASCII (escape sequences, quotes) as \\xNN."""
    return _UNPRINTABLE.sub(lambda match: "".join(f"\\x{byte:02x}" for byte in match.group().encode()), text)


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    keep_alive: bool


def parse_head(head: bytes, limits: Limits) -> Request:
    """One request line and its headers (without the final CRLF CRLF); BadRequest when malformed."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts[0].decode(), parts[1].decode("latin-1"), parts[2]
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    if not _TARGET.fullmatch(target):
        raise BadRequest(400, "the request target must be an absolute path of printable ASCII")
    if len(lines) - 1 > limits.header_count:
        raise BadRequest(431, f"more than {limits.header_count} header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obsolete line folding
            raise BadRequest(400, "malformed header field")
        key = name.decode().lower()
        if key in headers:
            if key in ("content-length", "transfer-encoding", "host", "range"):
                raise BadRequest(400, f"{key} given twice")
            headers[key] += ", " + value.strip(b" \t").decode("latin-1")
        else:
            headers[key] = value.strip(b" \t").decode("latin-1")
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version == b"HTTP/1.1" else "keep-alive" in tokens
    return Request(method, target, headers, keep_alive)


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length")
    if length is not None and not length.isdigit():
        raise BadRequest(400, "malformed Content-Length")
    return "transfer-encoding" in headers or (length is not None and int(length.lstrip("0") or "0") > 0)


def _head_bytes(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    for key, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {key} would split the response")  # media types are checked at load; never reached
        lines.append(f"{key}: {value}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One client: waits for a request (bounded in time and bytes), answers it, waits again."""

    def __init__(self, server: Server):
        self.server = server
        self.transport: asyncio.BaseTransport | None = None
        self.peer = "-"
        self.buffer = bytearray()
        self.scanned = 0  # bytes of buffer already searched for the end of the headers
        self.deadline = 0.0
        self.busy = False  # a response is going out
        self.progress = 0.0  # when the response last made progress
        self.task: asyncio.Task | None = None
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        self.tls: ssl.SSLObject | None = None  # created on the first bytes: a silent client costs no TLS state
        self.incoming: ssl.MemoryBIO | None = None
        self.outgoing: ssl.MemoryBIO | None = None
        self.handshaking = False
        self.closing = False  # the last response is being flushed before the close
        self.peer_done = False  # the client sent EOF
        self.closed = False

    # -- lifecycle
    def connection_made(self, transport) -> None:
        if self.transport is not None:
            return
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "-"
        server = self.server
        if not server.admit(self):
            transport.abort()
            return
        if server.tls is not None:
            self.handshaking = True
            self._wait(server.limits.handshake_timeout)
        else:
            self._wait(server.limits.header_timeout)

    # -- TLS as a codec over the plain transport (memory BIOs): one protocol, one transport, our own flow control
    def _tls_received(self, data: bytes) -> None:
        if self.tls is None:
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = self.server.tls.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.incoming.write(data)
        try:
            if self.handshaking:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    self._flush_tls()
                    return
                self.handshaking = False
                self._flush_tls()
                self._wait(self.server.limits.header_timeout)
            while True:
                try:
                    plain = self.tls.read(64 << 10)
                except ssl.SSLWantReadError:
                    break
                if not plain:
                    self.close()
                    return
                self._received(plain)
                if self.closed:
                    return
            self._flush_tls()
        except (ssl.SSLError, ssl.SSLZeroReturnError, OSError):
            self.close()

    def _flush_tls(self) -> None:
        pending = self.outgoing.read()
        if pending and not self.closed:
            self.transport.write(pending)

    def _send(self, data: bytes) -> None:
        if self.tls is None:
            self.transport.write(data)
        else:
            self.tls.write(data)
            self._flush_tls()

    def connection_lost(self, exc) -> None:
        self.close()

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the blob being sent; otherwise close now.
        self.peer_done = True
        return self.busy

    def close(self) -> None:
        """Forget this connection and drop it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.server.forget(self)
        if self.buffer:
            self.server.buffered -= len(self.buffer)
            self.buffer = bytearray()
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    # -- flow control for what we write
    def pause_writing(self) -> None:
        # A client that does not read gets nothing more read from it either, until it catches up.
        self.write_paused = True
        self.progress = time.monotonic()
        if not self.busy and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.progress = time.monotonic()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        elif not self.busy and not self.closing and not self.closed:
            self.transport.resume_reading()
            self._process()

    # -- reading requests
    def _wait(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.server.waiting_since(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.server.tls is not None:
            self._tls_received(data)
        else:
            self._received(data)

    def _received(self, data: bytes) -> None:
        if self.closing:
            return  # the answer is out and the connection closing: nothing more is read
        if not self.buffer and not self.busy:
            # The first byte of a request: from here the whole head must arrive within header_timeout.
            self.deadline = min(self.deadline, time.monotonic() + self.server.limits.header_timeout)
        self.buffer += data
        self.server.buffered += len(data)
        self._process()
        self.server.enforce_budget()

    def _process(self) -> None:
        limits = self.server.limits
        try:
            while not self.closed and not self.closing and not self.busy and not self.write_paused:
                while self.buffer[:2] == b"\r\n":  # stray CRLF between requests (RFC 9112 section 2.2)
                    del self.buffer[:2]
                    self.server.buffered -= 2
                end = self.buffer.find(b"\r\n\r\n", max(0, self.scanned - 3))
                if end < 0:
                    self.scanned = len(self.buffer)
                    if len(self.buffer) > limits.header_bytes:
                        raise BadRequest(431, f"request head larger than {limits.header_bytes} bytes")
                    return
                if end + 4 > limits.header_bytes:
                    raise BadRequest(431, f"request head larger than {limits.header_bytes} bytes")
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                self.server.buffered -= end + 4
                self.scanned = 0
                self._answer(parse_head(head, limits))
        except BadRequest as error:
            self._refuse(error)
        except Exception as error:  # noqa: BLE001 - one bad request must not take the server down
            print(f"registry: internal error answering {self.peer}: {error!r}", file=sys.stderr, flush=True)
            self.close()

    def _refuse(self, error: BadRequest) -> None:
        code = "UNSUPPORTED" if error.status != 431 else "SIZE_INVALID"
        response = error_response(ApiError(error.status, code, str(error)), "GET")
        started = time.monotonic()
        self._write(response, keep_alive=False)
        self.server.log(self.peer, "-", "-", response.status, len(response.body), started)
        self.close_after_write()

    def close_after_write(self) -> None:
        """Close once the response is flushed; a client that never reads it is dropped after send_timeout."""
        if self.transport is not None and not self.closed and not self.closing:
            self.closing = True
            self.progress = time.monotonic()
            self.server.not_waiting(self)
            self.server.buffered -= len(self.buffer)
            self.buffer = bytearray()
            if self.tls is not None:
                try:
                    self.tls.unwrap()  # close_notify, best effort
                except (ssl.SSLError, OSError):
                    pass
                self._flush_tls()
            self.transport.close()

    def _answer(self, request: Request) -> None:
        started = time.monotonic()
        self.server.not_waiting(self)
        method = request.method
        if _has_body(request.headers):
            # We never read request bodies; one left unread would be parsed as the next request.
            status = 400 if method in ("GET", "HEAD") else 405
            message = "a GET or HEAD request carries no body" if status == 400 else "this registry is read-only"
            extra = (("Allow", "GET, HEAD"),) if status == 405 else ()
            response = error_response(ApiError(status, "UNSUPPORTED", message, extra), method)
            request.keep_alive = False
        else:
            response = self.server.app(method, request.target, request.headers)
        if response.blob is None:
            self._write(response, request.keep_alive)
            self.server.log(self.peer, method, request.target, response.status, len(response.body), started)
            if not request.keep_alive:
                self.close_after_write()
            else:
                self._wait(limits_after(self))
            return
        self.busy = True
        self.progress = time.monotonic()
        self.transport.pause_reading()
        self._send(_head_bytes(response.status, response.headers, request.keep_alive))
        self.task = self.server.loop.create_task(self._send_blob(response, request, started))
        # Closed however the task ends, even when it is cancelled before it starts.
        self.task.add_done_callback(lambda _task, fd=response.blob.fd: os.close(fd))

    async def _send_blob(self, response: Response, request: Request, started: float) -> None:
        blob = response.blob
        sent = 0
        try:
            if self.server.tls is None:
                with open(blob.fd, "rb", closefd=False) as handle:
                    while sent < blob.length:
                        count = min(SENDFILE_CHUNK, blob.length - sent)
                        sent += await self.server.loop.sendfile(self.transport, handle, blob.offset + sent, count, fallback=False)
                        self.progress = time.monotonic()
            else:
                while sent < blob.length:
                    chunk = os.pread(blob.fd, min(TLS_CHUNK, blob.length - sent), blob.offset + sent)
                    if not chunk:
                        raise ConnectionError("blob shorter than its size")
                    self._send(chunk)
                    sent += len(chunk)
                    self.progress = time.monotonic()
                    if self.write_paused:
                        self.drained = self.server.loop.create_future()
                        await self.drained
                        self.drained = None
        except (asyncio.CancelledError, OSError, ConnectionError, RuntimeError):
            self.server.log(self.peer, request.method, request.target, response.status, sent, started)
            self.close()
            return
        self.task = None
        self.busy = False
        self.server.log(self.peer, request.method, request.target, response.status, sent, started)
        if not request.keep_alive or self.peer_done or self.closed:
            self.close_after_write()
            return
        self._wait(limits_after(self))
        if not self.write_paused:
            self.transport.resume_reading()
            self._process()

    def _write(self, response: Response, keep_alive: bool) -> None:
        self._send(_head_bytes(response.status, response.headers, keep_alive) + response.body)


def limits_after(connection: _Connection) -> float:
    """How long a kept-alive connection may wait for its next request: idle time, or header time if one has begun."""
    limits = connection.server.limits
    return limits.header_timeout if connection.buffer else limits.idle_timeout


class Server:
    """The listening socket and every connection on it; `serve_forever` runs the loop in the calling thread."""

    def __init__(self, app: Callable[[str, str, dict], Response], sock: socket.socket, tls: ssl.SSLContext | None, limits: Limits, access_log: TextIO | None):
        self.app = app
        self.socket = sock
        self.server_address = sock.getsockname()
        self.tls = tls
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Each connection may hold a blob open as well: two descriptors apiece, and a reserve for the rest.
        self.limits = dataclasses.replace(limits, max_connections=max(16, min(limits.max_connections, (soft - 64) // 2)))
        self.access_log = access_log
        self.connections: set[_Connection] = set()
        self.waiting: OrderedDict[_Connection, None] = OrderedDict()  # oldest wait first
        self.buffered = 0
        self.evicted = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stop_requested = False
        self._stopped = threading.Event()

    # -- bookkeeping, all on the loop's thread
    def admit(self, connection: _Connection) -> bool:
        if len(self.connections) >= self.limits.max_connections and not self._evict_oldest():
            return False
        self.connections.add(connection)
        return True

    def _evict_oldest(self) -> bool:
        """Drop the connection that has waited longest for a complete request, else the longest stalled response."""
        if self.waiting:
            victim = next(iter(self.waiting))
        else:
            stalled = [c for c in self.connections if time.monotonic() - c.progress >= STALLED_SECONDS]
            if not stalled:
                return False
            victim = min(stalled, key=lambda connection: connection.progress)
        self.evicted += 1
        victim.close()
        return True

    def waiting_since(self, connection: _Connection) -> None:
        self.waiting[connection] = None
        self.waiting.move_to_end(connection)

    def not_waiting(self, connection: _Connection) -> None:
        self.waiting.pop(connection, None)

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        self.waiting.pop(connection, None)

    def enforce_budget(self) -> None:
        while self.buffered > self.limits.buffered_bytes and self._evict_oldest():
            pass

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            expired = [c for c in self.waiting if now > c.deadline and not c.write_paused]
            for number, connection in enumerate(expired, 1):
                connection.close()
                if number % 256 == 0:
                    await asyncio.sleep(0)  # thousands expiring together: let the others' I/O in between
            send_timeout = self.limits.send_timeout
            for connection in list(self.connections):
                if (connection.busy or connection.write_paused or connection.closing) and now - connection.progress > send_timeout:
                    connection.close()

    def log(self, peer: str, method: str, target: str, status: int, size: int, started: float) -> None:
        if self.access_log is not None:
            elapsed = (time.monotonic() - started) * 1000
            self.access_log.write(f'{peer} "{printable(method)} {printable(target)}" {status} {size} {elapsed:.1f}ms\n')
            self.access_log.flush()

    # -- running
    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        listener = await self.loop.create_server(lambda: _Connection(self), sock=self.socket, backlog=1024)
        sweeper = self.loop.create_task(self._sweep())
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            listener.close()
            sweeper.cancel()
            for connection in list(self.connections):
                connection.close()
            await asyncio.sleep(0)

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """Serve until `shutdown()` (from another thread or a signal handler)."""
        try:
            asyncio.run(self._serve())
        finally:
            self._started.set()
            self._stopped.set()

    def stop_soon(self) -> None:
        """Ask the loop to stop; safe from a signal handler or another thread, also before it runs."""
        self._stop_requested = True
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)

    def share(self, workers: int) -> None:
        """This server is one of `workers` processes on the same socket: each takes its share of the caps."""
        self.limits = dataclasses.replace(
            self.limits, max_connections=max(16, self.limits.max_connections // workers), buffered_bytes=self.limits.buffered_bytes // workers
        )

    def shutdown(self) -> None:
        """Stop serving and wait until `serve_forever` has returned."""
        self._started.wait()
        self.stop_soon()
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


__all__ = ["API_HEADER", "Limits", "Server", "listening_socket", "parse_head", "printable"]
