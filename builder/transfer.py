"""HTTP transfers on the build host: the requests transport of bundle/resume.py and bundle/netpolicy.py.

Every request goes through a `Send` callable so the same retry and resume
logic serves plain release downloads (a requests session) and registry
blobs (oras-py's authenticated request). Retries, resume with Range and
the size caps are bundle/resume.py's (the node's too); which redirects are
followed and where credentials go is bundle/netpolicy.py's (`PolicySession`).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import requests

from builder.errors import FetchError, HttpStatusError
from builder.progress import Progress
from bundle import netpolicy
from bundle.netpolicy import CredentialScope
from bundle.resume import CHUNK, Answer, Attempts, GiveUp, Refused, Transient, fetch_resumable, retrying
from bundle.store import BlobStore, DigestMismatch

# send(method, url, headers, stream, data=None) -> response
Send = Callable[..., requests.Response]
T = TypeVar("T")


def retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


# The build host retries the way the node does: bundle/resume.py's one routine (attempts, backoff, Retry-After).
RetryPolicy = Attempts


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


@dataclass(frozen=True)
class Fetched:
    """A small document read whole: its bytes and the headers they came with."""

    body: bytes
    headers: Mapping[str, str]


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


# What to do about a server that answers plain HTTP where TLS was asked for; a command names its own flag.
PLAIN_HTTP_HINT = "give its URL as http://"
CA_HINT = "trust its CA with REQUESTS_CA_BUNDLE=/path/to/ca.pem (a PEM file holding the CA certificate)"


class PolicySession(requests.Session):
    """A requests session that asks bundle/netpolicy.py before it follows a redirect or sends a credential.

    Each registry the build talks to is registered with `scope_for`; its credentials and tokens go only to its
    own origin and to a token realm it named (judged when its 401 names it, before oras-py asks the realm).
    A request to anywhere else goes without its Authorization header; a redirect goes without it as soon as
    the chain leaves the first origin.
    """

    def __init__(self, timeout=(15, 60)):
        super().__init__()
        self._timeout = timeout
        self.headers["User-Agent"] = "airlock"
        self.max_redirects = netpolicy.MAX_REDIRECTS
        self._scopes: dict[netpolicy.Origin, CredentialScope] = {}
        self._lock = threading.Lock()
        adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=64)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def scope_for(self, base: str) -> CredentialScope:
        """The credential scope of the registry at `base`; an http:// base was asked for, so it counts as --insecure for that origin."""
        origin = netpolicy.Origin.of(base)
        with self._lock:
            return self._scopes.setdefault(origin, CredentialScope(origin, frozenset({origin}) if origin.scheme == "http" else frozenset()))

    def _may_authorize(self, url: str) -> bool:
        with self._lock:
            scopes = list(self._scopes.values())
        return any(scope.credential_refusal(url) is None for scope in scopes)

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        headers = kwargs.get("headers") or {}
        if any(name.lower() == "authorization" for name in headers) and not self._may_authorize(url):
            kwargs["headers"] = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        response = super().request(method, url, **kwargs)
        challenge = response.headers.get("WWW-Authenticate", "") if response.status_code == 401 else ""
        realm = challenge_realm(challenge)
        if realm is not None:
            with self._lock:
                scope = self._scopes.get(netpolicy.Origin.of(response.url))
            reason = scope.allow_realm(realm) if scope is not None else None
            if reason is not None:
                response.close()
                raise FetchError(f"{response.url}: {reason}")
        return response

    def get_redirect_target(self, response):
        location = super().get_redirect_target(response)
        if location:
            first = (response.history[0] if response.history else response).request.url
            reason = netpolicy.redirect_refusal(netpolicy.Origin.of(first), response.url, location, len(response.history) + 1)
            if reason is not None:
                response.close()
                raise FetchError(f"{first}: {reason}")
        return location

    def rebuild_auth(self, prepared_request, response):
        """No Authorization once a redirect chain has left the origin it started at (Go's rule, CVE-2024-45336 included)."""
        first = netpolicy.Origin.of((response.history[0] if response.history else response).request.url)
        visited = [netpolicy.Origin.of(hop.url) for hop in [*response.history, response]] + [netpolicy.Origin.of(prepared_request.url)]
        if any(origin != first for origin in visited):
            prepared_request.headers.pop("Authorization", None)


def challenge_realm(challenge: str) -> str | None:
    """The realm a `WWW-Authenticate: Bearer realm="..."` or `Basic realm=` challenge names (Bearer's is a URL), or None."""
    scheme, _, rest = challenge.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip().lower() == "realm":
            return value.strip().strip('"')
    return None


class Http:
    """A small, careful HTTP client; one instance is shared by a build's threads."""

    def __init__(self, progress: Progress, policy: RetryPolicy | None = None, timeout=(15, 60), session=None, plain_http_hint: str = PLAIN_HTTP_HINT):
        self.progress = progress
        self.plain_http_hint = plain_http_hint
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.session = session or PolicySession(timeout)

    def send(self, method: str, url: str, headers: dict, stream: bool, data=None) -> requests.Response:
        return self.session.request(method, url, headers=headers, stream=stream, data=data, timeout=self.timeout)

    def _retrying(self, url: str, once: Callable[[], T]) -> T:
        """`once` with retries on transient failures; a failure no retry will cure is said at once."""

        def attempt() -> T:
            try:
                return once()
            except _TRANSIENT as error:
                self._no_retry_cures(url, error)
                raise Transient(_describe(error)) from None
            except requests.RequestException as error:
                raise FetchError(f"{url}: {_describe(error)}") from None

        try:
            return retrying(url, attempt, self.policy, on_retry=lambda reason, delay: self.progress.log(f"retrying {url} in {delay:.1f}s ({reason})"))
        except GiveUp as error:
            raise FetchError(str(error)) from None

    def _no_retry_cures(self, url: str, error: Exception) -> None:
        refused = tls_failure(error)
        if refused is not None:
            # A handshake fails the same way every time: say why, and how to fix it, at once.
            raise FetchError(f"{url}: {describe_tls(refused, self.plain_http_hint)}") from None
        if unresolvable(error):
            # No answer will come from waiting: this host is offline, or the name only exists on the internet.
            raise FetchError(
                f"{url}: the name {urlsplit(url).hostname} does not resolve (no network or no DNS here); "
                "on a host without internet access point --release-url, --github-url and --registry-mirror HOST=URL at mirrors it can reach"
            ) from None

    def call(self, method: str, url: str, send: Send, headers: dict | None = None, body=None) -> requests.Response:
        """One request with retries on transient failures; any other answer is returned for the caller to judge.

        `body` is bytes, or a callable returning a fresh file object for each attempt.
        """

        def once() -> requests.Response:
            data = body() if callable(body) else body
            try:
                response = send(method, url, dict(headers or {}), False, data=data)
            finally:
                if hasattr(data, "close"):
                    data.close()
            _raise_if_retryable(response)
            return response

        return self._retrying(url, once)

    def get_bytes(self, url: str, limit: int = 1 << 20, headers: dict | None = None, send: Send | None = None, missing_ok: bool = False) -> Fetched | None:
        """GET a small document (label, checksum file, manifest) with retries; the body is read and capped.

        With `missing_ok`, a 404 answers None (a signature that may or may not be published); without it, a 404 fails.
        """
        return self.fetch_bytes("GET", url, limit, headers, send, missing_ok=missing_ok)

    def fetch_bytes(
        self,
        method: str,
        url: str,
        limit: int = 1 << 20,
        headers: dict | None = None,
        send: Send | None = None,
        body: bytes | None = None,
        missing_ok: bool = False,
    ) -> Fetched | None:
        """One request with retries whose answer is a small document (GET, or a POST of `body` to a query API), read and capped."""
        send = send or self.send

        def once() -> Fetched | None:
            response = send(method, url, dict(headers or {}), True, data=body)
            if missing_ok and response.status_code == 404:
                response.close()
                return None
            _check_status(url, response)
            content = bytearray()
            for chunk in response.iter_content(64 << 10):
                content += chunk
                if len(content) > limit:
                    response.close()
                    raise FetchError(f"{url}: answer is larger than {limit} bytes; refusing it")
            self.progress.advance(len(content))
            return Fetched(bytes(content), response.headers)

        return self._retrying(url, once)

    def head(self, url: str, headers: dict | None = None, send: Send | None = None) -> requests.Response | None:
        """HEAD with retries; None when the server answers 4xx (the caller falls back to GET)."""
        send = send or self.send

        def once() -> requests.Response | None:
            response = send("HEAD", url, dict(headers or {}), False)
            _raise_if_retryable(response)
            return response if response.ok else None

        return self._retrying(url, once)

    def download(
        self,
        url: str,
        store: BlobStore,
        expected: str | None = None,
        headers: dict | None = None,
        send: Send | None = None,
        count_total: bool = False,
        size: int | None = None,
        tap=None,
    ) -> str:
        """Download `url` into `store`, resuming a partial download; return its digest.

        With `expected`, a cached blob means no request at all, and a mismatch
        fails naming the URL, the expected and the actual digest. With `size`
        (a descriptor's), not one byte more is accepted. `tap` sees the blob's
        bytes as they are stored (builder.contents reads what is inside).
        """
        if expected and store.exists(expected):
            return expected
        send = send or self.send
        with store.partial(expected or f"url:{url}", tap=tap) as part:
            if expected and store.exists(expected):
                return expected  # another build sharing this cache fetched it while we waited
            self.progress.advance(part.size, network=False)
            sink = _CountedPart(part, self.progress)
            counted = [not count_total]

            def open_at(offset: int) -> Answer:
                request_headers = dict(headers or {})
                if offset:
                    request_headers["Range"] = f"bytes={offset}-"
                response = send("GET", url, request_headers, True)
                if response.status_code == 416 and offset and expected and part.digest == expected:
                    response.close()
                    return Answer(206, f"bytes {offset}-{offset - 1}/{offset}", lambda amount: b"", lambda: None)  # all of it was here
                if response.status_code != 416:
                    _check_status(url, response)
                if not counted[0] and response.status_code in (200, 206):
                    length = response.headers.get("Content-Length", "")
                    self.progress.add_total((offset if response.status_code == 206 else 0) + int(length) if length.isdigit() else 0)
                    counted[0] = True
                chunks = response.iter_content(CHUNK)
                return Answer(response.status_code, response.headers.get("Content-Range"), lambda amount: next(chunks, b""), response.close)

            def transient_open(offset: int) -> Answer:
                try:
                    answer = open_at(offset)
                except _TRANSIENT as error:
                    self._no_retry_cures(url, error)
                    raise Transient(_describe(error)) from None
                except requests.RequestException as error:
                    raise FetchError(f"{url}: {_describe(error)}") from None
                read = answer.read

                def guarded(amount: int) -> bytes:
                    try:
                        return read(amount)
                    except _TRANSIENT as error:
                        raise Transient(_describe(error)) from None

                answer.read = guarded
                return answer

            try:
                fetch_resumable(url, transient_open, sink, size, self.policy,
                                on_retry=lambda reason, delay: self.progress.log(f"retrying {url} in {delay:.1f}s ({reason})"))
            except GiveUp as error:
                raise FetchError(str(error)) from None
            except Refused as error:
                raise FetchError(str(error)) from None
            try:
                return part.commit(expected, what=url)
            except DigestMismatch as error:
                raise FetchError(f"{url}: checksum mismatch: expected {error.expected}, got {error.actual}") from None


class _CountedPart:
    """A partial blob as the resume routine's sink, counted into the progress display."""

    def __init__(self, part, progress: Progress):
        self._part = part
        self._progress = progress

    @property
    def size(self) -> int:
        return self._part.size

    def write(self, data: bytes) -> None:
        self._part.write(data)
        self._progress.advance(len(data))

    def reset(self) -> None:
        self._progress.advance(-self._part.size, network=False)
        self._part.reset()


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception behind it: causes, contexts, urllib3's `reason`, exceptions among the args.

    `reason` is an exception on urllib3's errors but a string on ssl's (`CERTIFICATE_VERIFY_FAILED`):
    only exceptions are followed.
    """
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]


def unresolvable(error: BaseException) -> bool:
    """Whether a connection failed because the host name does not resolve (not worth a retry)."""
    from urllib3.exceptions import NameResolutionError

    return any(isinstance(current, NameResolutionError | socket.gaierror) for current in causes(error))


def tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed connection (a handshake that no retry will change), or None."""
    return next((current for current in causes(error) if isinstance(current, ssl.SSLError)), None)


# OpenSSL's words when the other end answered something that is not TLS at all (a plain HTTP server).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure", "http request", "packet length too long", "unknown protocol")


def describe_tls(error: ssl.SSLError, plain_http_hint: str) -> str:
    """One line: what the TLS failure was and what to do about it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or error.reason or "certificate verify failed"
        return f"TLS: the server's certificate is not trusted ({detail}); {CA_HINT}"
    text = str(error)
    if any(words in text for words in _NOT_TLS):
        return f"TLS handshake failed: the server answered plain HTTP, not HTTPS; {plain_http_hint}"
    reason = error.reason or text
    return f"TLS handshake failed ({reason}); check that the address is an HTTPS server, or {CA_HINT}"


def _raise_if_retryable(response: requests.Response) -> None:
    if retryable_status(response.status_code):
        response.close()
        raise Transient(f"HTTP {response.status_code}", _retry_after(response.headers.get("Retry-After")))


def _check_status(url: str, response: requests.Response) -> None:
    if response.status_code in (200, 206):
        return
    _raise_if_retryable(response)
    response.close()
    raise HttpStatusError(f"{url}: HTTP {response.status_code} {response.reason}", response.status_code)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
