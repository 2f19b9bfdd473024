"""Install from a registry: the bundle artifact fetched over HTTPS with the standard library only.

`RegistrySource` finds the bundle artifact (`PREFIX/airlock/bundle:NAME-SERIAL`,
see bundle/artifact.py) on a registry — the first node's, or the site's —
and hands the verify phase bundle.json and its signature before anything
else is fetched. It is a bundle source (bundle/source.py) like a bundle file:
the unpack phase's `verify_stream` asks it for single members by the sha256
the signed bundle.json names, and each streams into the sink the verifier
gives (a partial file in staging), hashed once as it arrives, never longer
than bundle.json says; a rerun after a kill continues the partial file with
a Range request.

Only http.client and ssl: the node's one-file installer carries no requests
or oras. What may be followed, where a token may go, the deadlines (per socket
read, per member, per run) and the size caps are bundle/netpolicy.py's; the
retries and the resume are bundle/resume.py's, the same the build host uses.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urljoin, urlsplit

from bundle import netpolicy
from bundle.artifact import ARTIFACT_TYPE, REPOSITORY, TITLE, parse_tag
from bundle.errors import AirlockError, BundleError, JsonObjectError
from bundle.jsonobject import parse_object
from bundle.manifest import IMAGE_BLOBS, MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, FileEntry, Manifest
from bundle.netpolicy import MAX_DISCARDED_BODY, MAX_TAG_LIST, MAX_TOKEN_ANSWER, Clock, CredentialScope, Deadlines, read_timeout
from bundle.oci import MAX_MANIFEST_BYTES as MAX_OCI_MANIFEST_BYTES
from bundle.oci import OCI_MANIFEST
from bundle.reference import HOST, NAME, TAG
from bundle.resume import Answer, Attempts, GiveUp, Refused, Transient, fetch_resumable, retrying
from bundle.source import Delivery, Sink

CHUNK = 1 << 20
ATTEMPTS = 5
PARALLEL_FETCHES = 4
BACKOFF = 0.5
_RETRY_STATUS = {429, 500, 502, 503, 504}
_REDIRECT_STATUS = {301, 302, 303, 307, 308}


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
    """One kept-alive connection to the registry, reopened after any failure; every rule it follows is bundle/netpolicy.py's."""

    def __init__(self, origin: Origin, context: ssl.SSLContext | None, deadlines: Deadlines | None = None, attempts: int = ATTEMPTS, run: Clock | None = None):
        self.origin = origin
        self._context = context
        self.deadlines = deadlines or Deadlines()
        self.attempts = Attempts(attempts, BACKOFF)
        self.run = run or Clock(self.deadlines.run, "the --from transfer")
        self.policy_origin = netpolicy.Origin.of(origin.url)
        self.scope = CredentialScope(self.policy_origin, frozenset({self.policy_origin}) if origin.scheme == "http" else frozenset())
        self._connection: http.client.HTTPConnection | None = None
        self._token: str | None = None
        self._redirected: http.client.HTTPConnection | None = None
        self.received = 0  # body bytes read, for the benchmark's "bytes moved"

    def _connect_to(self, scheme: str, netloc: str, clocks: tuple[Clock, ...]) -> http.client.HTTPConnection:
        """A new connection to `netloc`, refused when the address it reached is one the policy keeps a client away from."""
        timeout = read_timeout(self.deadlines, self.run, *clocks)
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(netloc, timeout=timeout, context=self._context)
        else:
            connection = http.client.HTTPConnection(netloc, timeout=timeout)
        connection.connect()
        peer = connection.sock.getpeername()[0]
        reason = netpolicy.address_refusal(self.policy_origin, peer)
        if reason is not None:
            connection.close()
            raise RemoteError(f"{scheme}://{netloc}: {reason}")
        return connection

    def _connect(self, clocks: tuple[Clock, ...] = ()) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = self._connect_to(self.origin.scheme, self.origin.host, clocks)
        return self._connection

    def close(self) -> None:
        for connection in (self._connection, self._redirected):
            if connection is not None:
                connection.close()
        self._connection = self._redirected = None

    def url(self, path: str) -> str:
        return f"{self.origin.scheme}://{self.origin.host}{path}"

    def open(self, path: str, headers: dict | None = None, clocks: tuple[Clock, ...] = ()) -> http.client.HTTPResponse:
        """GET `path`; retries connection failures, 5xx and 429 with backoff; any other status is returned."""
        try:
            return retrying(self.url(path), lambda: self.open_once(path, headers, clocks)[0], self.attempts, (self.run, *clocks))
        except GiveUp as error:
            raise RemoteError(f"{error}; is the registry up?") from None

    def open_once(self, path: str, headers: dict | None, clocks: tuple[Clock, ...]) -> tuple[http.client.HTTPResponse, socket.socket]:
        """One attempt: the answer and the socket it came over; `Transient` for what another attempt may cure."""
        for _ in range(2):  # a second time only after a 401 challenge got a token
            all_headers = {"User-Agent": "airlock-node", **(headers or {})}
            if self._token:
                all_headers["Authorization"] = f"Bearer {self._token}"
            try:
                connection = self._connect(clocks)
                connection.sock.settimeout(read_timeout(self.deadlines, self.run, *clocks))
                connection.request("GET", path, headers=all_headers)
                sock = connection.sock  # kept: http.client lets go of it when the answer says Connection: close
                response = connection.getresponse()
                if response.status == 401 and self._token is None and self._authenticate(response, clocks):
                    self.close()  # whatever body the challenge had stays unread: start clean
                    continue
                if response.status in _REDIRECT_STATUS and response.getheader("Location"):
                    response.read(MAX_DISCARDED_BODY)
                    response, sock = self._follow(self.url(path), response.getheader("Location"), headers, clocks)
            except ssl.SSLCertVerificationError as error:
                self.close()
                raise RemoteError(
                    f"{self.url(path)}: the registry's certificate is not trusted ({error.verify_message}); pass --ca with the site CA"
                ) from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise Transient(f"{type(error).__name__}: {error}") from None
            if response.status in _RETRY_STATUS:
                response.read(MAX_DISCARDED_BODY)
                self.close()
                raise Transient(f"HTTP {response.status}")
            return response, sock
        raise AssertionError("unreachable")

    def _follow(self, current: str, location: str, headers: dict | None, clocks: tuple[Clock, ...]) -> tuple[http.client.HTTPResponse, socket.socket]:
        """A redirect (blob storage behind Harbor or S3-backed distribution): its own connection, never our token."""
        for hop in range(1, netpolicy.MAX_REDIRECTS + 2):
            reason = netpolicy.redirect_refusal(self.policy_origin, current, location, hop)
            if reason is not None:
                raise RemoteError(reason)
            current = urljoin(current, location)
            target = urlsplit(current)
            if self._redirected is not None:
                self._redirected.close()
            connection = self._redirected = self._connect_to(target.scheme, target.netloc, clocks)
            connection.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers={"User-Agent": "airlock-node", **(headers or {})})
            sock = connection.sock
            response = connection.getresponse()
            if response.status not in _REDIRECT_STATUS or not response.getheader("Location"):
                return response, sock
            response.read(MAX_DISCARDED_BODY)
            location = response.getheader("Location")
        raise AssertionError("unreachable: redirect_refusal counts the hops")

    def _authenticate(self, response: http.client.HTTPResponse, clocks: tuple[Clock, ...]) -> bool:
        """An anonymous pull token, for registries that want one even for public repositories (Harbor, distribution with token auth).

        The realm is asked over its own connection with every hop judged by the network policy: an https
        registry's realm stays https after redirects too, and nothing but the registry's own origin gets a token.
        """
        challenge = response.getheader("WWW-Authenticate") or ""
        if not challenge.lower().startswith("bearer "):
            return False
        fields = dict(part.split("=", 1) for part in _split_challenge(challenge[len("bearer ") :]) if "=" in part)
        realm = fields.get("realm", "").strip('"')
        reason = self.scope.allow_realm(realm)
        if reason is not None:
            raise RemoteError(reason)
        query = {key: fields[key].strip('"') for key in ("service", "scope") if key in fields}
        current = f"{realm}?{urlencode(query)}" if query else realm
        for hop in range(netpolicy.MAX_REDIRECTS + 2):
            target = urlsplit(current)
            connection = self._connect_to(target.scheme, target.netloc, clocks)
            try:
                connection.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers={"User-Agent": "airlock-node"})
                answer = connection.getresponse()
                if answer.status in _REDIRECT_STATUS and answer.getheader("Location"):
                    location = answer.getheader("Location")
                    reason = netpolicy.redirect_refusal(self.policy_origin, current, location, hop + 1) or self.scope.realm_refusal(urljoin(current, location))
                    if reason is not None:
                        raise RemoteError(f"the token realm {realm}: {reason}")
                    current = urljoin(current, location)
                    continue
                if answer.status != 200:
                    return False
                data = answer.read(MAX_TOKEN_ANSWER + 1)
            finally:
                connection.close()
            try:
                document = parse_object(data, f"the token realm {realm}", MAX_TOKEN_ANSWER)
            except JsonObjectError:
                document = {}  # no token in it
            self._token = document.get("token") or document.get("access_token")
            if self._token is not None and not isinstance(self._token, str):
                self._token = None
            return bool(self._token)
        return False

    def read_small(self, path: str, limit: int, accept: str = "") -> bytes:
        """A whole small answer (a manifest, bundle.json, a tag list), refused when larger than `limit`."""
        response = self.open(path, {"Accept": accept} if accept else None)
        if response.status != 200:
            response.read(MAX_DISCARDED_BODY)
            hint = {401: "; the node pulls anonymously: make the repository public to it", 403: "; the node pulls anonymously: make the repository public to it",
                    404: "; check the prefix, --tag, and that `airlock push` (or the first node's init) put the bundle there"}
            raise RemoteError(f"{self.url(path)}: HTTP {response.status}{hint.get(response.status, '')}")
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.close()
            raise RemoteError(f"{self.url(path)}: {declared} bytes, over the {limit} byte cap")
        data = bytearray()
        try:
            while len(data) <= limit:
                if self.run.refusal():
                    self.close()
                    raise RemoteError(f"{self.url(path)}: {self.run.refusal()}")
                chunk = response.read1(limit + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise RemoteError(f"{self.url(path)}: the answer broke off ({error}); rerun to try again") from None
        if len(data) > limit:
            self.close()
            raise RemoteError(f"{self.url(path)}: over the {limit} byte cap")
        # read1 leaves an answer read to its Content-Length open, and http.client refuses the next request on the
        # connection (ResponseNotReady): closing it keeps the connection for the next request instead of an attempt lost.
        response.close()
        self.received += len(data)
        return bytes(data)


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
    """A bundle artifact in a registry, a bundle source (bundle/source.py) like a file: signed head first, then members by digest."""

    streamed = False
    parallel = PARALLEL_FETCHES

    def __init__(self, origin: Origin, ca: Path | None = None, tag: str | None = None, deadlines: Deadlines | None = None, attempts: int = ATTEMPTS):
        if tag is not None and not (TAG.match(tag) and parse_tag(tag)):
            raise RemoteError(f"--tag {tag!r}: expected NAME-SERIAL, like k8s-7")
        self.origin = origin
        self.tag = tag
        self.asked_tag = tag  # what the operator named; the newest tag when they named none (see signed_head)
        self.newest_serial: int | None = None  # the highest serial the registry's tag list showed, when it was read
        self.deadlines = deadlines or Deadlines()
        self.run = Clock(self.deadlines.run, "the --from transfer")
        self._settings = (ssl_context(ca) if origin.scheme == "https" else None, self.deadlines, attempts, self.run)
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
        data = self.client.read_small(f"/v2/{quote(self.origin.repository)}/tags/list", MAX_TAG_LIST, "application/json")
        try:
            tags = parse_object(data, "tags/list", MAX_TAG_LIST).get("tags") or []
        except JsonObjectError:
            raise RemoteError(f"{self.client.url('/v2/' + self.origin.repository + '/tags/list')}: not a tag list") from None
        found = [(parse_tag(tag), tag) for tag in tags if isinstance(tag, str) and parse_tag(tag)]
        if not found:
            raise RemoteError(f"{self.origin.url}: no bundle in {self.origin.repository}; push one with `airlock push`, or check the prefix")
        serial = max(parsed[1] for parsed, _ in found)
        self.newest_serial = serial
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
            document = parse_object(data, path, MAX_OCI_MANIFEST_BYTES)
            layers = document["layers"]
            kind = document.get("artifactType") or document["config"]["mediaType"]
            head = [(layer["annotations"][TITLE], layer["digest"], layer["size"]) for layer in layers[:2]]
        except (ValueError, KeyError, TypeError, IndexError):
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

    def deliveries(self, wanted: list[FileEntry]) -> Iterator[Delivery]:
        """Each member asked for, by the digest bundle.json names, largest first (the long transfers overlap the many small ones)."""
        for entry in sorted(wanted, key=lambda entry: -entry.size):
            yield Delivery(entry.path, entry.size, lambda sink, entry=entry: self.fill(entry, sink))

    def mismatch(self, entry: FileEntry) -> str:
        return f"; {self.client.url(self._path('blobs', 'sha256:' + entry.sha256))} served a different member"

    def fill(self, entry: FileEntry, sink: Sink) -> None:
        """Stream one member into `sink`, continuing from what it holds (an earlier attempt's or an earlier run's bytes).

        Never more than the size bundle.json lists; a short or broken answer is resumed with Range a bounded
        number of times (bundle/resume.py), then refused as truncated; the member and the whole run each have
        a deadline (bundle/netpolicy.py). The verifier that handed over `sink` hashes and judges the bytes.
        """
        path = self._path("blobs", "sha256:" + entry.sha256)
        url = self.client.url(path)
        client = self.client
        member = Clock(self.deadlines.member, f"fetching {entry.path}")
        counted = _Counted(sink, client)

        def open_at(offset: int) -> Answer:
            response, sock = client.open_once(path, {"Range": f"bytes={offset}-"} if offset else None, (member,))
            if response.status not in (200, 206):
                response.read(MAX_DISCARDED_BODY)
                if response.status == 404:
                    raise BundleError(f"{url}: the registry does not have this member (HTTP 404); push the whole bundle there", entry.path)
                raise BundleError(f"{url}: HTTP {response.status}", entry.path)

            def read(amount: int) -> bytes:
                try:
                    sock.settimeout(read_timeout(self.deadlines, self.run, member))
                    return response.read1(amount)
                except (OSError, http.client.HTTPException) as error:
                    client.close()
                    raise Transient(f"{type(error).__name__}: {error}") from None

            return Answer(response.status, response.getheader("Content-Range"), read, lambda: None if response.isclosed() else client.close())

        try:
            fetch_resumable(url, open_at, counted, entry.size, client.attempts, (self.run, member))
        except GiveUp as error:
            client.close()
            raise BundleError(f"truncated: {url} sent {sink.size} of {entry.size} bytes: {error}; rerun to resume", entry.path) from None
        except Refused as error:
            client.close()
            raise BundleError(str(error), entry.path) from None

    def close(self) -> None:
        for client in self._clients:
            client.close()


class _Counted:
    """The verifier's sink for one member, as the resume routine sees it, counting what arrives for the benchmark's "bytes moved"."""

    def __init__(self, sink: Sink, client: Client):
        self._sink = sink
        self._client = client

    @property
    def size(self) -> int:
        return self._sink.size

    def write(self, data: bytes) -> None:
        self._sink.write(data)
        self._client.received += len(data)

    def reset(self) -> None:
        self._sink.reset()
