"""A read-only OCI distribution registry over the node's content store.

Serves the pull side of the distribution API from an OCI image layout
(`index.json` + `blobs/sha256/`): manifests by tag or digest, blobs with
Range, `tags/list` and `_catalog` with paging. Names resolve two ways:
`/v2/{repo}/…?ns={host}` as containerd sends them to a mirror, and
`/v2/{host}/{repo}/…` for direct use. Nothing is ever written; any name or
digest that is malformed is refused before it touches the filesystem, and
blobs go out with sendfile.

A new `index.json` (an upgrade merging into the store) is picked up on the
next request: each request works on one immutable snapshot.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bundle.errors import AirlockError, StoreError
from bundle.oci import MAX_MANIFEST_BYTES, media_type_of
from bundle.reference import DIGEST, DOCKER_HUB, HOST, NAME, TAG
from bundle.store import CONTAINERD_NAME, REF_NAME, BlobStore, read_layout_index

MAX_PAGE = 1000

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RegistryError(AirlockError):
    pass


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    code: str
    message: str


@dataclass
class StoreView:
    """One immutable reading of the store's index: what names, tags and digests exist."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # repository -> tag -> digest
    reachable: dict[str, frozenset[str]] = field(default_factory=dict)  # repository -> every digest under it
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)
    _closures: dict[str, frozenset[str]] = field(default_factory=dict)  # manifest digest -> digests under it

    @classmethod
    def load(cls, store: BlobStore) -> StoreView:
        index_path = store.root / "index.json"
        try:
            data = index_path.read_bytes()
        except FileNotFoundError:
            return cls()
        view = cls()
        reachable: dict[str, set[str]] = {}
        for descriptor in read_layout_index(data):
            annotations = descriptor.get("annotations") or {}
            reference = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
            name, _, tag = reference.rpartition(":")
            digest = descriptor.get("digest", "")
            if not name or "/" not in name or not DIGEST.match(digest) or not TAG.match(tag):
                continue
            view.tags.setdefault(name, {})[tag] = digest
            reachable.setdefault(name, set()).update(view._walk(store, digest))
        view.reachable = {name: frozenset(digests) for name, digests in reachable.items()}
        return view

    def _walk(self, store: BlobStore, digest: str) -> frozenset[str]:
        """Every digest reachable from a manifest or index (itself included); each manifest is read and parsed once."""
        closure = self._closures.get(digest)
        if closure is not None:
            return closure  # the same manifest under another name
        data = store.read(digest, MAX_MANIFEST_BYTES)
        document = json.loads(data)
        self.manifests[digest] = (media_type_of(document), data)
        found = {digest}
        for child in document.get("manifests") or []:
            if DIGEST.match(child.get("digest", "")) and store.exists(child["digest"]):
                found |= self._walk(store, child["digest"])
        for blob in [document.get("config") or {}, *(document.get("layers") or [])]:
            if DIGEST.match(blob.get("digest", "")):
                found.add(blob["digest"])
        closure = self._closures[digest] = frozenset(found)
        return closure


class Registry:
    """The shared state of a running registry: the store and its current view."""

    def __init__(self, root: Path):
        self.store = BlobStore(root)
        if not (self.store.root / "index.json").is_file():
            raise RegistryError(f"{root}: no index.json here; point --store at an unpacked image store (an OCI layout)")
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._view = StoreView()
        self.view()

    def view(self) -> StoreView:
        try:
            info = os.stat(self.store.root / "index.json")
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    # index.json is replaced by rename, so a reader never sees half of one.
                    self._view = StoreView.load(self.store)
                    self._stamp = stamp
        return self._view

    def resolve_name(self, view: StoreView, path_name: str, namespace: str | None) -> str:
        if not NAME.match(path_name):
            raise ApiError(400, "NAME_INVALID", "invalid repository name")
        candidates = []
        if namespace:
            if not HOST.match(namespace):
                raise ApiError(400, "NAME_INVALID", "invalid ns parameter")
            host = DOCKER_HUB if namespace in ("index.docker.io", "registry-1.docker.io") else namespace
            candidates.append(f"{host}/{path_name}")
            if host == DOCKER_HUB and "/" not in path_name:
                candidates.append(f"{DOCKER_HUB}/library/{path_name}")
        else:
            candidates.append(path_name)
            candidates.append(f"{DOCKER_HUB}/{path_name}")
            if "/" not in path_name:
                candidates.append(f"{DOCKER_HUB}/library/{path_name}")
        for candidate in candidates:
            if candidate in view.tags:
                return candidate
        if not namespace:
            # A client that names no registry (containerd's `server` fallback) gets the one image of that path, if only one.
            matches = [name for name in view.tags if name.split("/", 1)[1] == path_name]
            if len(matches) == 1:
                return matches[0]
        raise ApiError(404, "NAME_UNKNOWN", "repository name not known to registry")


def parse_listen(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise RegistryError(f"--listen {address!r}: expected HOST:PORT, like 127.0.0.1:5000 or :5000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "airlock-registry"
    sys_version = ""
    timeout = 60  # seconds a client may stay silent before its connection is dropped

    registry: Registry
    access_log = None

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, in this connection's thread, not in the accept loop.
            self.request.do_handshake()

    def log_message(self, format: str, *args) -> None:
        pass

    def _log(self, status: int, size: int) -> None:
        if self.access_log is not None:
            elapsed = (time.monotonic() - self._started) * 1000
            line = f'{self.client_address[0]} "{self.command} {self.path}" {status} {size} {elapsed:.1f}ms\n'
            self.access_log.write(line)
            self.access_log.flush()

    # Writes of any kind are refused: the store is read-only.
    def _refuse_write(self) -> None:
        self._started = time.monotonic()
        self._error(ApiError(405, "UNSUPPORTED", "this registry is read-only"))

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def _dispatch(self, body: bool) -> None:
        self._started = time.monotonic()
        try:
            self._route(body)
        except ApiError as error:
            self._error(error)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except StoreError as error:
            self._error(ApiError(500, "UNKNOWN", f"store error: {error}"))

    def _route(self, body: bool) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain", body)
            return
        if path in ("/v2", "/v2/"):
            self._send(200, b"{}", "application/json", body)
            return
        if not path.startswith("/v2/") or "\x00" in path:
            raise ApiError(404, "NOT_FOUND", "not found")
        rest = path[len("/v2/") :]
        view = self.registry.view()
        if rest == "_catalog":
            names = sorted(view.tags)
            self._paged("repositories", names, query, body, "/v2/_catalog")
            return
        match = re.match(r"^(.+)/(manifests|blobs|tags)/([^/]+)$", rest)
        if not match:
            raise ApiError(404, "NOT_FOUND", "not found")
        path_name, kind, reference = match.groups()
        namespace = (query.get("ns") or [None])[0]
        name = self.registry.resolve_name(view, path_name, namespace)
        if kind == "tags":
            if reference != "list":
                raise ApiError(404, "NOT_FOUND", "not found")
            self._paged("tags", sorted(view.tags[name]), query, body, f"/v2/{path_name}/tags/list", extra={"name": path_name})
        elif kind == "manifests":
            self._manifest(view, name, reference, body)
        else:
            self._blob(view, name, reference, body)

    def _paged(self, key: str, items: list[str], query: dict, body: bool, link_path: str, extra: dict | None = None) -> None:
        count_text = (query.get("n") or [None])[0]
        last = (query.get("last") or [None])[0]
        if last:
            items = [item for item in items if item > last]
        headers = {}
        if count_text is not None:
            if not count_text.isdigit():
                raise ApiError(400, "PAGINATION_NUMBER_INVALID", "n must be a non-negative integer")
            count = min(int(count_text), MAX_PAGE)
            if len(items) > count:
                items = items[:count]
                headers["Link"] = f'<{link_path}?n={count}&last={items[-1] if items else ""}>; rel="next"'
        document = {**(extra or {}), key: items}
        self._send(200, json.dumps(document).encode(), "application/json", body, headers)

    def _manifest(self, view: StoreView, name: str, reference: str, body: bool) -> None:
        if reference.startswith("sha256:") or ":" in reference:
            if not DIGEST.match(reference):
                raise ApiError(400, "DIGEST_INVALID", "invalid digest")
            digest = reference
            if digest not in view.reachable[name] or digest not in view.manifests:
                raise ApiError(404, "MANIFEST_UNKNOWN", "manifest unknown")
        else:
            if not TAG.match(reference):
                raise ApiError(400, "TAG_INVALID", "invalid tag")
            digest = view.tags[name].get(reference)
            if digest is None:
                raise ApiError(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, data = view.manifests[digest]
        self._send(200, data, media_type, body, {"Docker-Content-Digest": digest, "ETag": f'"{digest}"'})

    def _blob(self, view: StoreView, name: str, digest: str, body: bool) -> None:
        if not DIGEST.match(digest):
            raise ApiError(400, "DIGEST_INVALID", "invalid digest")
        if digest not in view.reachable[name]:
            raise ApiError(404, "BLOB_UNKNOWN", "blob unknown to registry")
        try:
            handle = open(self.registry.store.path(digest), "rb")
        except FileNotFoundError:
            raise ApiError(404, "BLOB_UNKNOWN", "blob unknown to registry") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end = 0, size - 1
            status = 200
            range_header = self.headers.get("Range")
            if range_header:
                start, end = _parse_range(range_header, size)
                status = 206
            length = max(0, end - start + 1)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("ETag", f'"{digest}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "max-age=31536000")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if body and length:
                self.connection.sendfile(handle, start, length)
            self._log(status, length if body else 0)

    def _send(self, status: int, data: bytes, content_type: str, body: bool, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
        self._log(status, len(data) if body else 0)

    def _error(self, error: ApiError) -> None:
        data = json.dumps({"errors": [{"code": error.code, "message": error.message}]}).encode()
        headers = {"Allow": "GET, HEAD"} if error.status == 405 else None
        try:
            # A request body we will not read would poison a kept-alive connection.
            if self.headers.get("Content-Length") not in (None, "0") or self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            self._send(error.status, data, "application/json", self.command != "HEAD", headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        raise ApiError(416, "RANGE_INVALID", "only a single bytes=start-end range is supported")
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        raise ApiError(416, "RANGE_INVALID", f"range not satisfiable for a blob of {size} bytes")
    return start, end


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # A client that vanished mid-response is normal; anything else goes to stderr.
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            super().handle_error(request, client_address)


def make_server(store: Path, listen: str, tls_cert: Path | None = None, tls_key: Path | None = None, access_log=None) -> _Server:
    registry = Registry(store)
    host, port = parse_listen(listen)
    handler = type("Handler", (_Handler,), {"registry": registry, "access_log": access_log})
    server_class = _Server
    if ":" in host:
        server_class = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        server = server_class((host, port), handler)
    except OSError as error:
        raise RegistryError(f"--listen {listen}: {error.strerror}") from None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise RegistryError("--tls-cert and --tls-key go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(tls_cert), str(tls_key))
        except (OSError, ssl.SSLError) as error:
            raise RegistryError(f"--tls-cert/--tls-key: cannot load ({error})") from None
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def serve_until_stopped(server: _Server) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and close cleanly."""

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
