"""Install from a registry: the bundle artifact fetched over HTTPS with the standard library only.

`RegistrySource` finds the bundle artifact (`PREFIX/airlock/bundle:NAME-SERIAL`,
see bundle/artifact.py) on a registry — the first node's, or the site's —
and hands the verify phase bundle.json and its signature before anything
else is fetched. The unpack phase then asks it for single members by the
sha256 the signed bundle.json names: each streams into a partial file in
staging, hashed as it arrives, never longer than bundle.json says, and a
rerun after a kill continues the partial file with a Range request.

Only urllib/http.client and ssl: the node's one-file installer carries no
requests or oras. Every request has a timeout; connection failures, 5xx and
429 answers are retried a bounded number of times, then named.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urljoin, urlsplit

from bundle.artifact import ARTIFACT_TYPE, REPOSITORY, TITLE, parse_tag
from bundle.errors import AirlockError, BundleError
from bundle.manifest import IMAGE_BLOBS, MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, FileEntry, Manifest
from bundle.oci import MAX_MANIFEST_BYTES as MAX_OCI_MANIFEST_BYTES
from bundle.oci import OCI_MANIFEST
from bundle.reference import HOST, NAME, TAG

CHUNK = 1 << 20
TIMEOUT = 30.0
ATTEMPTS = 5
BACKOFF = 0.5
_RETRY_STATUS = {429, 500, 502, 503, 504}
_REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 3


class RemoteError(AirlockError):
    """The registry could not be reached or answered something unusable."""


@dataclass(frozen=True)
class Origin:
    """`--from https://HOST[:PORT][/PREFIX]`, parsed once."""

    scheme: str
    host: str  # host[:port]
    prefix: str

    @classmethod
    def parse(cls, text: str, insecure: bool) -> Origin:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise RemoteError(f"--from {text!r}: expected https://HOST[:PORT][/PREFIX]")
        if parts.scheme == "http" and not insecure:
            raise RemoteError(f"--from {text}: plain HTTP sends the bundle unencrypted; use https:// with --ca, or pass --insecure")
        if "@" in parts.netloc or not HOST.match(parts.netloc):
            raise RemoteError(f"--from {text}: {parts.netloc!r} is not HOST[:PORT]")
        prefix = parts.path.strip("/")
        if prefix and not NAME.match(prefix):
            raise RemoteError(f"--from {text}: the prefix {prefix!r} is not a repository path (lowercase letters, digits, '/', '.', '_', '-')")
        return cls(parts.scheme, parts.netloc, prefix)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}" + (f"/{self.prefix}" if self.prefix else "")

    @property
    def repository(self) -> str:
        return f"{self.prefix}/{REPOSITORY}" if self.prefix else REPOSITORY

    def mirror(self) -> str:
        """What containerd's hosts.toml points at to pull the images pushed under this prefix."""
        return f"{self.scheme}://{self.host}" + (f"/v2/{self.prefix}" if self.prefix else "")


def ssl_context(ca: Path | None) -> ssl.SSLContext:
    """Verify the registry against the site CA `ca` and the system's trusted CAs; hostname checked."""
    context = ssl.create_default_context()  # the system's CAs: blob storage a registry redirects to may use a public one
    if ca:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as error:
            raise RemoteError(f"--ca {ca}: cannot load it as a PEM CA certificate ({error})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Client:
    """One kept-alive connection to the registry, reopened after any failure."""

    def __init__(self, origin: Origin, context: ssl.SSLContext | None, timeout: float = TIMEOUT, attempts: int = ATTEMPTS):
        self.origin = origin
        self._context = context
        self.timeout = timeout
        self.attempts = attempts
        self._connection: http.client.HTTPConnection | None = None
        self._token: str | None = None
        self._redirected: http.client.HTTPConnection | None = None
        self.received = 0  # body bytes read, for the benchmark's "bytes moved"

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.origin.scheme == "https":
                self._connection = http.client.HTTPSConnection(self.origin.host, timeout=self.timeout, context=self._context)
            else:
                self._connection = http.client.HTTPConnection(self.origin.host, timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        for connection in (self._connection, self._redirected):
            if connection is not None:
                connection.close()
        self._connection = self._redirected = None

    def url(self, path: str) -> str:
        return f"{self.origin.scheme}://{self.origin.host}{path}"

    def open(self, path: str, headers: dict | None = None) -> http.client.HTTPResponse:
        """GET `path`; retries connection failures, 5xx and 429 with backoff; any other status is returned."""
        failure = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            all_headers = {"User-Agent": "airlock-node", **(headers or {})}
            if self._token:
                all_headers["Authorization"] = f"Bearer {self._token}"
            try:
                connection = self._connect()
                connection.request("GET", path, headers=all_headers)
                response = connection.getresponse()
            except ssl.SSLCertVerificationError as error:
                self.close()
                raise RemoteError(
                    f"{self.url(path)}: the registry's certificate is not trusted ({error.verify_message}); pass --ca with the site CA"
                ) from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                failure = f"{type(error).__name__}: {error}"
                continue
            if response.status == 401 and self._token is None and self._authenticate(response):
                self.close()  # whatever body the challenge had stays unread: start clean
                continue
            if response.status in _REDIRECT_STATUS and response.getheader("Location"):
                response.read(64 << 10)
                try:
                    response = self._follow(urljoin(self.url(path), response.getheader("Location")), headers)
                except (OSError, http.client.HTTPException) as error:
                    failure = f"{type(error).__name__}: {error}"
                    continue
            if response.status in _RETRY_STATUS:
                failure = f"HTTP {response.status}"
                response.read(64 << 10)
                self.close()
                continue
            return response
        raise RemoteError(f"{self.url(path)}: no usable answer after {self.attempts} attempts ({failure}); is the registry up?")

    def _follow(self, url: str, headers: dict | None) -> http.client.HTTPResponse:
        """A redirect (blob storage behind Harbor or S3-backed distribution): its own connection, never our token."""
        for _ in range(MAX_REDIRECTS):
            target = urlsplit(url)
            if target.scheme == "https":
                connection = http.client.HTTPSConnection(target.netloc, timeout=self.timeout, context=self._context)
            elif target.scheme == "http" and self.origin.scheme == "http":
                connection = http.client.HTTPConnection(target.netloc, timeout=self.timeout)
            else:
                raise RemoteError(f"{url}: the registry redirects to plain HTTP or an unknown scheme; refused")
            if self._redirected is not None:
                self._redirected.close()
            self._redirected = connection
            connection.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers={"User-Agent": "airlock-node", **(headers or {})})
            response = connection.getresponse()
            if response.status not in _REDIRECT_STATUS or not response.getheader("Location"):
                return response
            response.read(64 << 10)
            url = urljoin(url, response.getheader("Location"))
        raise RemoteError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _authenticate(self, response: http.client.HTTPResponse) -> bool:
        """An anonymous pull token, for registries that want one even for public repositories (Harbor, distribution with token auth)."""
        challenge = response.getheader("WWW-Authenticate") or ""
        if not challenge.lower().startswith("bearer "):
            return False
        fields = dict(part.split("=", 1) for part in _split_challenge(challenge[len("bearer ") :]) if "=" in part)
        realm = fields.get("realm", "").strip('"')
        if not realm.startswith("https://") and not (realm.startswith("http://") and self.origin.scheme == "http"):
            return False
        query = {key: fields[key].strip('"') for key in ("service", "scope") if key in fields}
        request = urllib.request.Request(f"{realm}?{urlencode(query)}" if query else realm, headers={"User-Agent": "airlock-node"})
        try:
            handler = urllib.request.HTTPSHandler(context=self._context)
            with urllib.request.build_opener(handler).open(request, timeout=self.timeout) as answer:
                document = json.loads(answer.read(64 << 10))
        except (OSError, ValueError, RecursionError):
            return False
        self._token = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        return bool(self._token)

    def read_small(self, path: str, limit: int, accept: str = "") -> bytes:
        """A whole small answer (a manifest, bundle.json, a tag list), refused when larger than `limit`."""
        response = self.open(path, {"Accept": accept} if accept else None)
        if response.status != 200:
            response.read(64 << 10)
            hint = {401: "; the node pulls anonymously: make the repository public to it", 403: "; the node pulls anonymously: make the repository public to it",
                    404: "; check the prefix, --tag, and that `airlock push` (or the first node's init) put the bundle there"}
            raise RemoteError(f"{self.url(path)}: HTTP {response.status}{hint.get(response.status, '')}")
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.close()
            raise RemoteError(f"{self.url(path)}: {declared} bytes, over the {limit} byte cap")
        try:
            data = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise RemoteError(f"{self.url(path)}: the answer broke off ({error}); rerun to try again") from None
        if len(data) > limit:
            self.close()
            raise RemoteError(f"{self.url(path)}: over the {limit} byte cap")
        self.received += len(data)
        return data


def _split_challenge(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def needed_members(manifest: Manifest, arch: str) -> list[FileEntry]:
    """What a node of `arch` fetches: its architecture's bin/ and cni/ members and every shared file; never image blobs."""
    needed = []
    for entry in manifest.files:
        if entry.path.startswith(IMAGE_BLOBS):
            continue
        top, _, rest = entry.path.partition("/")
        if top in ("bin", "cni") and rest.startswith("linux-") and not rest.startswith(f"linux-{arch}/"):
            continue
        needed.append(entry)
    return needed


class RegistrySource:
    """A bundle artifact in a registry, read like a bundle file: signed head first, then members by digest."""

    def __init__(self, origin: Origin, ca: Path | None = None, tag: str | None = None, timeout: float = TIMEOUT, attempts: int = ATTEMPTS):
        if tag is not None and not (TAG.match(tag) and parse_tag(tag)):
            raise RemoteError(f"--tag {tag!r}: expected NAME-SERIAL, like k8s-7")
        self.origin = origin
        self.tag = tag
        self._settings = (ssl_context(ca) if origin.scheme == "https" else None, timeout, attempts)
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self._head: tuple[bytes, bytes] | None = None

    @property
    def client(self) -> Client:
        """This thread's connection (members are fetched several at a time, each over its own)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = Client(self.origin, *self._settings)
            with self._lock:
                self._clients.append(client)
        return client

    @property
    def received(self) -> int:
        return sum(client.received for client in self._clients)

    def describe(self) -> str:
        return f"{self.origin.url} ({self.origin.repository}:{self.tag or '?'})"

    def _path(self, kind: str, reference: str) -> str:
        return f"/v2/{quote(self.origin.repository)}/{kind}/{quote(reference, safe=':')}"

    def newest_tag(self) -> str:
        """The NAME-SERIAL tag with the highest serial; refused when two bundle names tie."""
        data = self.client.read_small(f"/v2/{quote(self.origin.repository)}/tags/list", 4 << 20, "application/json")
        try:
            tags = json.loads(data).get("tags") or []
        except (ValueError, AttributeError, RecursionError):
            raise RemoteError(f"{self.client.url('/v2/' + self.origin.repository + '/tags/list')}: not a tag list") from None
        found = [(parse_tag(tag), tag) for tag in tags if isinstance(tag, str) and parse_tag(tag)]
        if not found:
            raise RemoteError(f"{self.origin.url}: no bundle in {self.origin.repository}; push one with `airlock push`, or check the prefix")
        serial = max(parsed[1] for parsed, _ in found)
        newest = sorted(tag for parsed, tag in found if parsed[1] == serial)
        if len(newest) > 1:
            raise RemoteError(f"{self.origin.url}: several bundles have serial {serial} ({', '.join(newest)}); pick one with --tag")
        return newest[0]

    def signed_head(self) -> tuple[bytes, bytes]:
        """bundle.json and its signature, each checked against the artifact manifest's digest; not yet trusted."""
        if self._head is not None:
            return self._head
        self.tag = self.tag or self.newest_tag()
        path = self._path("manifests", self.tag)
        data = self.client.read_small(path, MAX_OCI_MANIFEST_BYTES, OCI_MANIFEST)
        try:
            document = json.loads(data)
            layers = document["layers"]
            kind = document.get("artifactType") or document["config"]["mediaType"]
            head = [(layer["annotations"][TITLE], layer["digest"], layer["size"]) for layer in layers[:2]]
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            raise RemoteError(f"{self.client.url(path)}: not an airlock bundle artifact") from None
        if kind != ARTIFACT_TYPE or [title for title, _, _ in head] != [MANIFEST_NAME, SIGNATURE_NAME]:
            raise RemoteError(f"{self.client.url(path)}: not an airlock bundle artifact (type {kind!r})")
        (_, manifest_digest, _), (_, signature_digest, _) = head
        manifest_bytes = self._blob_bytes(manifest_digest, MAX_MANIFEST_BYTES, MANIFEST_NAME)
        signature = self._blob_bytes(signature_digest, MAX_SIGNATURE_BYTES, SIGNATURE_NAME)
        self._head = (manifest_bytes, signature)
        return self._head

    def _blob_bytes(self, digest: str, limit: int, what: str) -> bytes:
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise BundleError(f"the artifact names {digest!r}, not a sha256 digest", what)
        data = self.client.read_small(self._path("blobs", digest), limit)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BundleError(f"{self.origin.url} served bytes with digest {actual}, not the {digest} its artifact names", what)
        return data

    def fetch(self, entry: FileEntry, partial: Path) -> None:
        """Stream one member into `partial`, resuming what an earlier run left; return only when its sha256 matched.

        Never accepts more than the size bundle.json lists; a short or broken answer is resumed with Range
        a bounded number of times, then refused as truncated.
        """
        url = self.client.url(self._path("blobs", "sha256:" + entry.sha256))
        partial.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "a+b", buffering=0) as handle:  # unbuffered: what a kill interrupts is on disk, to resume from
            digest = hashlib.sha256()
            handle.seek(0)
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            have = handle.tell()
            if have > entry.size:
                handle.truncate(0)
                digest, have = hashlib.sha256(), 0
            failure = ""
            for attempt in range(self.client.attempts):
                if have == entry.size:
                    break
                if attempt:
                    time.sleep(BACKOFF * attempt)
                response = self.client.open(self._path("blobs", "sha256:" + entry.sha256), {"Range": f"bytes={have}-"} if have else None)
                if response.status == 200 and have:
                    # The registry ignored the range: start over.
                    handle.truncate(0)
                    handle.seek(0)
                    digest, have = hashlib.sha256(), 0
                elif response.status == 206:
                    if not (response.getheader("Content-Range") or "").startswith(f"bytes {have}-"):
                        self.client.close()
                        raise BundleError(f"{url} answered a Range request with the wrong part ({response.getheader('Content-Range')})", entry.path)
                elif response.status != 200:
                    response.read(64 << 10)
                    if response.status == 404:
                        raise BundleError(f"{url}: the registry does not have this member (HTTP 404); push the whole bundle there", entry.path)
                    raise BundleError(f"{url}: HTTP {response.status}", entry.path)
                try:
                    while have < entry.size:
                        chunk = response.read1(min(CHUNK, entry.size - have))
                        if not chunk:
                            break
                        handle.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        self.client.received += len(chunk)
                    if have == entry.size and response.read(1):
                        self.client.close()
                        raise BundleError(f"{url} sent more than the {entry.size} bytes bundle.json lists", entry.path)
                except (OSError, http.client.HTTPException) as error:
                    failure = f"{type(error).__name__}: {error}"
                if have < entry.size:
                    handle.flush()
                    self.client.close()
                    failure = failure or "the connection closed early"
            if have < entry.size:
                raise BundleError(f"truncated: {url} sent {have} of {entry.size} bytes in {self.client.attempts} attempts ({failure}); rerun to resume", entry.path)
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != entry.sha256:
            partial.unlink(missing_ok=True)
            raise BundleError(f"sha256 is {digest.hexdigest()} but bundle.json lists {entry.sha256}; {url} served a different member", entry.path)

    def close(self) -> None:
        for client in self._clients:
            client.close()
