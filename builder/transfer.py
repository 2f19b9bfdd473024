"""HTTP transfers: retries with backoff, resume with Range, digests checked before use.

Every request goes through a `Send` callable so the same retry and resume
logic serves plain release downloads (a requests session) and registry
blobs (oras-py's authenticated request).
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests

from builder.errors import FetchError, HttpStatusError
from builder.progress import Progress
from bundle.store import BlobStore, DigestMismatch

# send(method, url, headers, stream, data=None) -> response
Send = Callable[..., requests.Response]
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, response: requests.Response | None = None) -> float:
        if response is not None:
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                return min(wait, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (0.75 + random.random() / 2)


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


class _Retry(Exception):
    def __init__(self, reason: str, response: requests.Response | None = None):
        super().__init__(reason)
        self.response = response


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, _Retry)


# What to do about a server that answers plain HTTP where TLS was asked for; a command names its own flag.
PLAIN_HTTP_HINT = "give its URL as http://"
CA_HINT = "trust its CA with REQUESTS_CA_BUNDLE=/path/to/ca.pem (a PEM file holding the CA certificate)"


class Http:
    """A small, careful HTTP client; one instance is shared by a build's threads."""

    def __init__(self, progress: Progress, policy: RetryPolicy | None = None, timeout=(15, 60), session=None, plain_http_hint: str = PLAIN_HTTP_HINT):
        self.progress = progress
        self.plain_http_hint = plain_http_hint
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "airlock"
        adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, url: str, headers: dict, stream: bool, data=None) -> requests.Response:
        return self.session.request(method, url, headers=headers, stream=stream, data=data, timeout=self.timeout)

    def call(self, method: str, url: str, send: Send, headers: dict | None = None, body=None) -> requests.Response:
        """One request with retries on transient failures; any other answer is returned for the caller to judge.

        `body` is bytes, or a callable returning a fresh file object for each attempt.
        """
        for attempt in range(1, self.policy.attempts + 1):
            data = body() if callable(body) else body
            try:
                response = send(method, url, dict(headers or {}), False, data=data)
                if retryable_status(response.status_code):
                    raise _Retry(f"HTTP {response.status_code}", response)
                return response
            except _TRANSIENT as error:
                self._give_up_or_wait(url, attempt, error)
            except requests.RequestException as error:
                raise FetchError(f"{url}: {_describe(error)}") from None
            finally:
                if hasattr(data, "close"):
                    data.close()
        raise AssertionError("unreachable")

    def _give_up_or_wait(self, url: str, attempt: int, error: Exception) -> None:
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
        response = error.response if isinstance(error, _Retry) else None
        if attempt >= self.policy.attempts:
            raise FetchError(f"{url}: {_describe(error)}; gave up after {attempt} attempts") from None
        delay = self.policy.delay(attempt, response)
        self.progress.log(f"retrying {url} in {delay:.1f}s ({_describe(error)})")
        time.sleep(delay)

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
        for attempt in range(1, self.policy.attempts + 1):
            try:
                response = send(method, url, dict(headers or {}), True, data=body)
                if missing_ok and response.status_code == 404:
                    response.close()
                    return None
                _check_status(url, response)
                body = bytearray()
                for chunk in response.iter_content(64 << 10):
                    body += chunk
                    if len(body) > limit:
                        raise FetchError(f"{url}: answer is larger than {limit} bytes; refusing it")
                self.progress.advance(len(body))
                return Fetched(bytes(body), response.headers)
            except _TRANSIENT as error:
                self._give_up_or_wait(url, attempt, error)
            except requests.RequestException as error:
                raise FetchError(f"{url}: {_describe(error)}") from None
        raise AssertionError("unreachable")

    def head(self, url: str, headers: dict | None = None, send: Send | None = None) -> requests.Response | None:
        """HEAD with retries; None when the server answers 4xx (the caller falls back to GET)."""
        send = send or self.send
        for attempt in range(1, self.policy.attempts + 1):
            try:
                response = send("HEAD", url, dict(headers or {}), False)
                if retryable_status(response.status_code):
                    raise _Retry(f"HTTP {response.status_code}", response)
                return response if response.ok else None
            except _TRANSIENT as error:
                self._give_up_or_wait(url, attempt, error)
            except requests.RequestException as error:
                raise FetchError(f"{url}: {_describe(error)}") from None
        return None

    def download(
        self,
        url: str,
        store: BlobStore,
        expected: str | None = None,
        headers: dict | None = None,
        send: Send | None = None,
        count_total: bool = False,
        tap=None,
    ) -> str:
        """Download `url` into `store`, resuming a partial download; return its digest.

        With `expected`, a cached blob means no request at all, and a mismatch
        fails naming the URL, the expected and the actual digest. `tap` sees the
        blob's bytes as they are stored (builder.contents reads what is inside).
        """
        if expected and store.exists(expected):
            return expected
        send = send or self.send
        with store.partial(expected or f"url:{url}", tap=tap) as part:
            if expected and store.exists(expected):
                return expected  # another build sharing this cache fetched it while we waited
            counted = False
            self.progress.advance(part.size, network=False)
            for attempt in range(1, self.policy.attempts + 1):
                try:
                    request_headers = dict(headers or {})
                    if part.size:
                        request_headers["Range"] = f"bytes={part.size}-"
                    response = send("GET", url, request_headers, True)
                    if response.status_code == 416 and part.size:
                        response.close()
                        if expected and part.digest == expected:
                            break
                        self.progress.advance(-part.size, network=False)
                        part.reset()
                        raise _Retry("server refused the resume range; starting over")
                    _check_status(url, response)
                    if response.status_code == 206:
                        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                        if not match or int(match.group(1)) != part.size:
                            response.close()
                            self.progress.advance(-part.size, network=False)
                            part.reset()
                            raise _Retry("server answered a different range; starting over")
                    elif part.size:
                        self.progress.advance(-part.size, network=False)
                        part.reset()
                    if count_total and not counted:
                        length = response.headers.get("Content-Length", "")
                        self.progress.add_total(part.size + int(length) if length.isdigit() else 0)
                        counted = True
                    for chunk in response.iter_content(CHUNK):
                        part.write(chunk)
                        self.progress.advance(len(chunk))
                    break
                except _TRANSIENT as error:
                    self._give_up_or_wait(url, attempt, error)
                except requests.RequestException as error:
                    raise FetchError(f"{url}: {_describe(error)}") from None
            try:
                return part.commit(expected, what=url)
            except DigestMismatch as error:
                raise FetchError(f"{url}: checksum mismatch: expected {error.expected}, got {error.actual}") from None


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


def _check_status(url: str, response: requests.Response) -> None:
    if response.status_code in (200, 206):
        return
    response.close()
    if retryable_status(response.status_code):
        raise _Retry(f"HTTP {response.status_code}", response)
    raise HttpStatusError(f"{url}: HTTP {response.status_code} {response.reason}", response.status_code)


def _describe(error: Exception) -> str:
    if isinstance(error, _Retry):
        return str(error)
    return f"{type(error).__name__}: {error}"
