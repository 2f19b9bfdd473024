"""A read-only OCI distribution registry over the node's content store.

Serves the pull side of the distribution API from an OCI image layout
(`index.json` + `blobs/sha256/`): manifests by tag or digest, blobs with
Range, `tags/list` and `_catalog` with paging. Names resolve the ways
containerd and other clients send them: `/v2/{repo}/…?ns={host}` (a mirror),
`/v2/{host}/{repo}/…` (direct use, or a mirror with `override_path`), with
or without `ns`. Nothing is ever written; a malformed name or digest is
refused before it touches the filesystem.

This module decides: what the store holds (`StoreView`, one immutable
reading of `index.json`) and what each request answers (`Registry.handle`,
a `Response` value). `installer.registry.connections` does the socket work, and
`installer.registry.serving` binds, forks workers and stops on a signal.

A new `index.json` (an upgrade merging into the store) is picked up on the
next request. An image the store holds but cannot serve safely (a manifest
that is not a JSON object, a media type that is not one) is refused with a
logged reason; every other image is still served.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from bundle.errors import AirlockError, JsonObjectError
from bundle.jsonobject import parse_object
from bundle.oci import MAX_MANIFEST_BYTES, media_type_of
from bundle.reference import DIGEST, DOCKER_HUB, HOST, NAME, TAG
from bundle.store import CONTAINERD_NAME, REF_NAME, read_layout_index, sha256_digest

MAX_PAGE = 1000
MAX_NESTING = 8  # index -> index -> … -> manifest; real images use two levels
# RFC 6838 section 4.2: type "/" subtype, each a restricted-name (no parameters, no whitespace, no CR/LF).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_ROUTE = re.compile(r"(.+)/(manifests|blobs|tags)/([^/]+)")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SMALL_BLOB = 256 << 10  # blobs up to this size are read and sent like a manifest; larger ones go out with sendfile
API_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


class RegistryError(AirlockError):
    pass


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class BlobBody:
    """An open blob to send: `length` bytes from `offset`; whoever sends it closes `fd`."""

    fd: int
    offset: int
    length: int


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    blob: BlobBody | None = None

    @property
    def length(self) -> int:
        return self.blob.length if self.blob else len(self.body)


def error_response(error: ApiError, method: str) -> Response:
    data = json.dumps({"errors": [{"code": error.code, "message": error.message}]}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), API_HEADER, *error.headers]
    return Response(error.status, headers, data if method != "HEAD" else b"")


class Content:
    """Manifests and blobs of the store, opened so that nothing outside it is ever read.

    Every lookup of stored bytes goes through here: a blob is a regular file
    directly under `blobs/sha256/` (no symlink at any step, no device or fifo)
    and a manifest also hashes to its name.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise RegistryError(f"--store {root}: {error.strerror}; point --store at an unpacked image store (an OCI layout)") from None

    def close(self) -> None:
        os.close(self._root_fd)

    def index_stamp(self) -> tuple | None:
        try:
            info = os.stat("index.json", dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def read_index(self) -> bytes | None:
        try:
            fd = os.open("index.json", _OPEN_FLAGS, dir_fd=self._root_fd)
        except FileNotFoundError:
            return None
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RegistryError(f"{self.root}/index.json is not a regular file")
            return handle.read(64 << 20)

    def open_blob(self, digest: str) -> tuple[int, int] | None:
        """(fd, size) of a stored blob, or None when the store holds no regular file by that name."""
        hex_digest = digest[len("sha256:") :]
        try:
            blobs = os.open("blobs", _DIR_FLAGS, dir_fd=self._root_fd)
            try:
                algorithm = os.open("sha256", _DIR_FLAGS, dir_fd=blobs)
            finally:
                os.close(blobs)
            try:
                fd = os.open(hex_digest, _OPEN_FLAGS, dir_fd=algorithm)
            finally:
                os.close(algorithm)
        except OSError:
            return None  # missing, or a symlink (ELOOP/ENOTDIR) somewhere on the way
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return fd, info.st_size

    def read_manifest(self, digest: str) -> bytes:
        opened = self.open_blob(digest)
        if opened is None:
            raise ValueError(f"{digest} is not a regular file in the store")
        fd, size = opened
        with open(fd, "rb") as handle:
            if size > MAX_MANIFEST_BYTES:
                raise ValueError(f"{digest} is {size} bytes, more than a manifest may be ({MAX_MANIFEST_BYTES})")
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        if sha256_digest(data) != digest:
            raise ValueError(f"{digest} does not hash to its name")
        return data


class Refused(Exception):
    """An image the store names but that cannot be served safely."""


@dataclass
class StoreView:
    """One immutable reading of the store's index: what names, tags and digests exist."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # repository -> tag -> digest
    reachable: dict[str, frozenset[str]] = field(default_factory=dict)  # repository -> every digest under it
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)
    refused: list[str] = field(default_factory=list)  # "reference: why", one per image not served
    _closures: dict[str, frozenset[str]] = field(default_factory=dict)  # manifest digest -> digests under it

    @classmethod
    def load(cls, content: Content) -> StoreView:
        view = cls()
        data = content.read_index()
        if data is None:
            return view
        reachable: dict[str, set[str]] = {}
        for descriptor in read_layout_index(data):
            annotations = descriptor.get("annotations") if isinstance(descriptor, dict) else None
            if not isinstance(annotations, dict):
                continue
            reference = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
            if not isinstance(reference, str):
                continue
            name, _, tag = reference.rpartition(":")
            digest = descriptor.get("digest", "")
            if not name or "/" not in name or not NAME.fullmatch(name) or not isinstance(digest, str) or not DIGEST.fullmatch(digest) or not TAG.fullmatch(tag):
                continue
            try:
                closure = view._walk(content, digest, 0)
            except Refused as why:
                view.refused.append(f"{reference}: {why}")
                continue
            view.tags.setdefault(name, {})[tag] = digest
            reachable.setdefault(name, set()).update(closure)
        view.reachable = {name: frozenset(digests) for name, digests in reachable.items()}
        return view

    def _walk(self, content: Content, digest: str, depth: int) -> frozenset[str]:
        """Every digest reachable from a manifest or index (itself included); each manifest is read and checked once."""
        closure = self._closures.get(digest)
        if closure is not None:
            return closure  # the same manifest under another name
        if depth > MAX_NESTING:
            raise Refused(f"indexes nested more than {MAX_NESTING} deep")
        try:
            data = content.read_manifest(digest)
            document = parse_object(data, f"manifest {digest}", MAX_MANIFEST_BYTES)
        except JsonObjectError as error:
            raise Refused(str(error)) from None
        except ValueError as error:
            raise Refused(f"manifest {digest} unreadable: {error}") from None
        media_type = media_type_of(document)
        if not isinstance(media_type, str) or not MEDIA_TYPE.fullmatch(media_type):
            raise Refused(f"manifest {digest} has no valid media type ({str(media_type)[:80]!r})")
        children, config, layers = document.get("manifests") or [], document.get("config") or {}, document.get("layers") or []
        blobs = [config, *layers] if isinstance(layers, list) else None
        if not isinstance(children, list) or blobs is None or not all(isinstance(d, dict) for d in [*children, *blobs]):
            raise Refused(f"manifest {digest}: manifests, config and layers must be descriptors (JSON objects)")
        found = {digest}
        for child in children:
            child_digest = child.get("digest", "")
            # An index may name platforms the bundle does not carry; only those present are served.
            if isinstance(child_digest, str) and DIGEST.fullmatch(child_digest) and content.open_blob(child_digest) is not None:
                found |= self._walk(content, child_digest, depth + 1)
        for blob in blobs:
            blob_digest = blob.get("digest", "")
            if isinstance(blob_digest, str) and DIGEST.fullmatch(blob_digest):
                found.add(blob_digest)
        self.manifests[digest] = (media_type, data)
        closure = self._closures[digest] = frozenset(found)
        return closure

    # The one place a request finds stored content: by repository and tag or digest.
    def manifest(self, name: str, reference: str) -> tuple[str, str, bytes]:
        """(digest, media type, bytes) of a manifest in a repository, or ApiError."""
        if ":" in reference:
            if not DIGEST.fullmatch(reference):
                raise ApiError(400, "DIGEST_INVALID", "invalid digest")
            digest = reference if reference in self.reachable[name] else None
        else:
            # A reference that is not a valid tag names no manifest: 404, as for any unknown tag.
            digest = self.tags[name].get(reference) if TAG.fullmatch(reference) else None
        if digest is None or digest not in self.manifests:
            raise ApiError(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, data = self.manifests[digest]
        return digest, media_type, data

    def blob(self, name: str, digest: str) -> str:
        if not DIGEST.fullmatch(digest):
            raise ApiError(400, "DIGEST_INVALID", "invalid digest")
        if digest not in self.reachable[name]:
            raise ApiError(404, "BLOB_UNKNOWN", "blob unknown to registry")
        return digest


def lexical(text: str) -> tuple[str, str]:
    """The spec's lexical order: case-insensitive, ties broken by the exact string."""
    return text.lower(), text


class Registry:
    """The shared state of a running registry: the store and its current view; answers requests."""

    def __init__(self, root: Path, log: Callable[[str], None] | None = None):
        self.content = Content(root)
        if self.content.index_stamp() is None:
            raise RegistryError(f"{root}: no index.json here; point --store at an unpacked image store (an OCI layout)")
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stamp: tuple | None = None
        self._view = StoreView()
        self.view()

    def view(self) -> StoreView:
        stamp = self.content.index_stamp()
        if stamp != self._stamp:
            # index.json is replaced by rename, so a reader never sees half of one.
            try:
                view = StoreView.load(self.content)
            except (AirlockError, ValueError) as error:
                self._log(f"store index unusable, serving the previous one: {error}")
                return self._view
            for reason in view.refused:
                self._log(f"refusing image {reason}")
            self._view, self._stamp = view, stamp
        return self._view

    def resolve_name(self, view: StoreView, path_name: str, namespace: str | None) -> str:
        if not NAME.fullmatch(path_name):
            raise ApiError(400, "NAME_INVALID", "invalid repository name")
        candidates = []
        if namespace is not None:
            if not HOST.fullmatch(namespace):
                raise ApiError(400, "NAME_INVALID", "invalid ns parameter")
            host = DOCKER_HUB if namespace in ("index.docker.io", "registry-1.docker.io") else namespace
            candidates.append(f"{host}/{path_name}")
            if host == DOCKER_HUB and "/" not in path_name:
                candidates.append(f"{DOCKER_HUB}/library/{path_name}")
            # A mirror host with a path prefix (`/v2/registry.k8s.io` + override_path) still gets `?ns=`: the name is whole already.
            first, _, rest = path_name.partition("/")
            if rest and (first == namespace or first == host):
                candidates.append(f"{host}/{rest}")
                if host == DOCKER_HUB and "/" not in rest:
                    candidates.append(f"{DOCKER_HUB}/library/{rest}")
        else:
            candidates.append(path_name)
            candidates.append(f"{DOCKER_HUB}/{path_name}")
            if "/" not in path_name:
                candidates.append(f"{DOCKER_HUB}/library/{path_name}")
        for candidate in candidates:
            if candidate in view.tags:
                return candidate
        if namespace is None:
            # A client that names no registry (containerd's `server` fallback) gets the one image of that path, if only one.
            matches = [name for name in view.tags if name.split("/", 1)[1] == path_name]
            if len(matches) == 1:
                return matches[0]
        raise ApiError(404, "NAME_UNKNOWN", "repository name not known to registry")

    def handle(self, method: str, target: str, headers: dict[str, str]) -> Response:
        """The answer to one request (method, request target, lower-cased headers); never raises ApiError."""
        try:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "UNSUPPORTED", "this registry is read-only", (("Allow", "GET, HEAD"),))
            return self._route(method, target, headers)
        except ApiError as error:
            return error_response(error, method)

    def _route(self, method: str, target: str, headers: dict[str, str]) -> Response:
        path, _, query_text = target.partition("?")
        try:
            query = parse_qs(query_text, keep_blank_values=True, max_num_fields=16)
        except ValueError:
            raise ApiError(400, "UNSUPPORTED", "too many query parameters") from None
        if path == "/healthz":
            return _document(method, b"ok\n", "text/plain")
        if path in ("/v2", "/v2/"):
            return _document(method, b"{}", "application/json")
        if not path.startswith("/v2/"):
            raise ApiError(404, "NOT_FOUND", "not found")
        rest = path[len("/v2/") :]
        view = self.view()
        if rest == "_catalog":
            return self._paged(method, "repositories", list(view.tags), query, "/v2/_catalog")
        match = _ROUTE.fullmatch(rest)
        if not match:
            raise ApiError(404, "NOT_FOUND", "not found")
        path_name, kind, reference = match.groups()
        namespace = (query.get("ns") or [None])[0] or None
        name = self.resolve_name(view, path_name, namespace)
        if kind == "tags":
            if reference != "list":
                raise ApiError(404, "NOT_FOUND", "not found")
            return self._paged(method, "tags", list(view.tags[name]), query, f"/v2/{path_name}/tags/list", {"name": path_name})
        if kind == "manifests":
            digest, media_type, data = view.manifest(name, reference)
            return _document(method, data, media_type, [("Docker-Content-Digest", digest), ("ETag", f'"{digest}"')])
        return self._blob(method, view.blob(name, reference), headers.get("range"))

    def _paged(self, method: str, key: str, items: list[str], query: dict, link_path: str, extra: dict | None = None) -> Response:
        items = sorted(items, key=lexical)
        count_text = (query.get("n") or [None])[0]
        last = (query.get("last") or [None])[0]
        if last is not None:
            items = [item for item in items if lexical(item) > lexical(last)]
        headers = []
        if count_text is not None:
            if not count_text.isdigit():
                raise ApiError(400, "PAGINATION_NUMBER_INVALID", "n must be a non-negative integer")
            count = MAX_PAGE if len(count_text) > 6 else min(int(count_text), MAX_PAGE)
            if len(items) > count:
                items = items[:count]
                if count:  # n=0 asks for nothing and gets no Link to follow
                    params = [("n", str(count)), ("last", items[-1])] + [("ns", ns) for ns in query.get("ns", [])[:1]]
                    headers.append(("Link", f'<{link_path}?{urlencode(params, safe="/:")}>; rel="next"'))
        document = {**(extra or {}), key: items}
        return _document(method, json.dumps(document).encode(), "application/json", headers)

    def _blob(self, method: str, digest: str, range_header: str | None) -> Response:
        opened = self.content.open_blob(digest)
        if opened is None:
            raise ApiError(404, "BLOB_UNKNOWN", "blob unknown to registry")
        fd, size = opened
        try:
            start, end, status = 0, size - 1, 200
            if range_header is not None:
                start, end = byte_range(range_header, size)
                status = 206
            length = end - start + 1
            headers = [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(length)),
                API_HEADER,
                ("Docker-Content-Digest", digest),
                ("ETag", f'"{digest}"'),
                ("Accept-Ranges", "bytes"),
                ("Cache-Control", "max-age=31536000"),
            ]
            if status == 206:
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            if method == "HEAD" or length == 0:
                os.close(fd)
                return Response(status, headers)
            if length <= SMALL_BLOB:
                data = os.pread(fd, length, start)
                os.close(fd)
                if len(data) != length:
                    raise ApiError(500, "UNKNOWN", "blob shorter than its size")
                return Response(status, headers, data)
            return Response(status, headers, blob=BlobBody(fd, start, length))
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise


def _document(method: str, data: bytes, content_type: str, headers: list | None = None) -> Response:
    all_headers = [("Content-Type", content_type), ("Content-Length", str(len(data))), API_HEADER, *(headers or [])]
    return Response(200, all_headers, data if method != "HEAD" else b"")


def _number(digits: str) -> int:
    """A Range bound; thousands of digits are just "very large", never an exception."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 1 << 62


def byte_range(header: str, size: int) -> tuple[int, int]:
    """(start, end) inclusive of a single `bytes=` range, or a 416 ApiError naming the blob's size."""
    unsatisfiable = ApiError(416, "RANGE_INVALID", f"range not satisfiable for a blob of {size} bytes", (("Content-Range", f"bytes */{size}"),))
    match = _RANGE.fullmatch(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise unsatisfiable
    first, last = match.groups()
    if first:
        start = _number(first)
        if last and _number(last) < start:
            raise unsatisfiable
        end = min(_number(last), size - 1) if last else size - 1
    else:
        suffix = _number(last)
        if suffix == 0:
            raise unsatisfiable
        start, end = max(0, size - suffix), size - 1
    if start >= size:
        raise unsatisfiable
    return start, end
