"""The registry's serving process: the listening socket, TLS, worker processes and stop signals.

`installer.registry.api` decides what each request is answered (no sockets); `installer.registry.connections` does the
socket work; this module puts the two together and runs them until a stop signal.
"""

from __future__ import annotations

import os
import signal
import ssl
from pathlib import Path

from installer.registry.api import Registry, RegistryError
from installer.registry.connections import Limits, Server, listening_socket


def parse_listen(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        raise RegistryError(f"--listen {address!r}: expected HOST:PORT, like 127.0.0.1:5000 or :5000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as error:
        raise RegistryError(f"TLS certificate {cert} and key {key}: cannot load ({error}); check the paths and that they belong together") from None
    return context


def credential_paths() -> tuple[Path, Path]:
    """tls.crt and tls.key that systemd's LoadCredential= put in $CREDENTIALS_DIRECTORY."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise RegistryError("--tls-credentials: $CREDENTIALS_DIRECTORY is not set; run under systemd with LoadCredential=tls.crt:… and LoadCredential=tls.key:…")
    return Path(directory) / "tls.crt", Path(directory) / "tls.key"


def make_server(store: Path, listen: str, tls_cert: Path | None = None, tls_key: Path | None = None, access_log=None, limits=None):
    """A bound, not yet serving registry server (`serve_forever`, `shutdown`, `server_close`, `server_address`)."""
    if bool(tls_cert) != bool(tls_key):
        raise RegistryError("--tls-cert and --tls-key go together")
    context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    registry = Registry(store)
    host, port = parse_listen(listen)
    try:
        sock = listening_socket(host, port)
    except OSError as error:
        raise RegistryError(f"--listen {listen}: {error.strerror}") from None
    return Server(registry.handle, sock, context, limits or Limits(), access_log)


def serve_until_stopped(server, workers: int = 1) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and close cleanly.

    With `workers` > 1 the process forks that many servers in all, each with
    its own event loop on the one listening socket and its share of the
    connection cap; sendfile then runs on every core. A stop signal to the
    first reaches the others.
    """
    children = []
    if workers > 1:
        server.share(workers)
        parent = os.getpid()
        for _ in range(workers - 1):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    _die_with(parent, server)
                    _serve_with_signals(server)
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
    try:
        _serve_with_signals(server)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)


def _die_with(parent: int, server) -> None:
    """A worker stops when the first process dies, even by SIGKILL (Linux's parent-death signal)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        server.stop_soon()


def _serve_with_signals(server) -> None:
    previous = {sig: signal.signal(sig, lambda signum, frame: server.stop_soon()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
