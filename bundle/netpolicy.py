"""The network policy both transports ask: redirects, credentials, deadlines and size caps. No I/O here.

The node's standard-library client (installer/remote.py) and the build host's requests client
(builder/transfer.py, images.py, push.py) stay thin: before they follow a redirect, send a credential or a
token, connect to an address or accept more bytes, they ask a function here, which answers None (go on) or
the one reason why not. Tests call these functions without a network.

The rules:

- Redirects: at most `MAX_REDIRECTS` hops; each hop keeps the scheme or moves to https (never https to
  http); only http and https; never to a loopback, link-local, unspecified or multicast address unless the
  origin itself is one of that kind (a registry on 127.0.0.1 may send a client to 127.0.0.1, a registry on
  10.0.0.5 may not send it to 127.0.0.1 or 169.254.169.254). The address is checked once more after the
  connection is made (`address_refusal`), so a name that resolves to such an address is refused too.
- Credentials (Basic) and tokens (Bearer) go only to the registry's own origin (scheme, host and port) and
  to a token realm that registry named, and never over plain HTTP unless `--insecure` was given for that
  very origin. A realm of an https registry is https, after every redirect too. Once a redirect chain has
  left the registry's origin, nothing secret is sent for the rest of that chain (even if it comes back).
- Deadlines (`Deadlines`): per socket read, per member (or blob) and per run; the defaults are documented in
  docs/registry.md and `--deadlines read=30s,member=15m,run=4h` overrides them.
- Size caps: a blob is never accepted beyond the size its descriptor (or bundle.json) lists; small answers
  (manifests, tag lists, token answers, error bodies) have the caps below.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
MAX_TOKEN_ANSWER = 64 << 10  # a token answer is a few KiB of JSON
MAX_DISCARDED_BODY = 64 << 10  # what is read of a redirect's or an error's body before the connection is dropped
MAX_TAG_LIST = 4 << 20
_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class PolicyError(ValueError):
    """A URL or a setting the policy cannot judge (not http/https, no host, a malformed deadline)."""


@dataclass(frozen=True)
class Origin:
    """scheme, host and port: what a credential is bound to (RFC 6454's origin)."""

    scheme: str
    host: str  # lowercase, IPv6 without brackets
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise PolicyError(f"{url}: only http and https URLs are followed, not {parts.scheme or 'a relative URL'}")
        try:
            port = parts.port
        except ValueError:
            raise PolicyError(f"{url}: the port is not a number from 0 to 65535") from None
        if not parts.hostname or parts.username is not None or parts.password is not None:
            raise PolicyError(f"{url}: no host, or a user name in the URL")
        return cls(scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == _DEFAULT_PORTS[self.scheme] else f":{self.port}")


def address_kind(host: str) -> str | None:
    """"loopback", "link-local", "unspecified" or "multicast" for such an IP literal or `localhost`; None otherwise."""
    if host.rstrip(".").lower() in ("localhost", "localhost.localdomain") or host.rstrip(".").lower().endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind, test in (("loopback", "is_loopback"), ("link-local", "is_link_local"), ("unspecified", "is_unspecified"), ("multicast", "is_multicast")):
        if getattr(address, test):
            return kind
    return None


def address_refusal(origin: Origin, host: str) -> str | None:
    """Why a client talking to `origin` may not reach `host` (a name or the address it connected to), or None."""
    kind = address_kind(host)
    if kind is None or kind == address_kind(origin.host):
        return None
    return f"{host} is a {kind} address, and {origin} is not; refused (a registry may not point a client at this machine or its cloud metadata service)"


def redirect_refusal(origin: Origin, current: str, location: str, hops: int) -> str | None:
    """Why the `hops`-th redirect, from `current` to `location` (maybe relative), may not be followed; None if it may."""
    if hops > MAX_REDIRECTS:
        return f"more than {MAX_REDIRECTS} redirects from {origin}; refused"
    target = urljoin(current, location)
    try:
        here, there = Origin.of(current), Origin.of(target)
    except PolicyError as error:
        return f"a redirect to {target}: {error}"
    if here.scheme == "https" and there.scheme != "https":
        return f"{current} redirects to plain HTTP ({target}); refused, a redirect keeps https"
    return address_refusal(origin, there.host)


@dataclass
class CredentialScope:
    """Where one registry's credentials and tokens may go: its own origin and the realms it named.

    `insecure` lists the origins given with --insecure: only to those does anything secret go over plain HTTP.
    """

    registry: Origin
    insecure: frozenset[Origin] = frozenset()
    realms: set[Origin] = field(default_factory=set)

    def realm_refusal(self, realm: str) -> str | None:
        """Why the token realm `realm` that this registry named may not be asked (with or without credentials)."""
        try:
            there = Origin.of(realm)
        except PolicyError as error:
            return f"{self.registry} names the token realm {realm!r}: {error}"
        if there.scheme != "https" and not (there == self.registry and there in self.insecure):
            return (
                f"{self.registry} names the plain-HTTP token realm {realm}; refused: credentials and tokens go over plain HTTP "
                "only to the registry's own origin, and only with --insecure"
            )
        return address_refusal(self.registry, there.host)

    def allow_realm(self, realm: str) -> str | None:
        """Judge a realm the registry named; when it is acceptable, credentials may go to it from now on."""
        reason = self.realm_refusal(realm)
        if reason is None:
            self.realms.add(Origin.of(realm))
        return reason

    def credential_refusal(self, url: str, left_origin: bool = False) -> str | None:
        """Why a credential or a token may not be sent with a request to `url`; None if it may.

        `left_origin`: this request follows a redirect chain that has been elsewhere already.
        """
        try:
            there = Origin.of(url)
        except PolicyError as error:
            return str(error)
        if left_origin:
            return f"{url}: a redirect chain that left {self.registry} gets no credentials"
        if there != self.registry and there not in self.realms:
            return f"{url} is not {self.registry} nor a token realm it named; its credentials and tokens stay with it"
        if there.scheme != "https" and there not in self.insecure:
            return f"{url} is plain HTTP and --insecure was not given for {there}; its credentials stay unsent"
        return None


# -- deadlines ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise PolicyError(f"{text!r} is not a duration like 30s, 15m or 4h")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Deadlines:
    """How long a transfer may take: any one socket read, one member or blob, and the whole run."""

    read: float = 30.0
    member: float = 15 * 60.0
    run: float = 4 * 3600.0

    @classmethod
    def parse(cls, text: str) -> Deadlines:
        """`read=30s,member=15m,run=4h`, any subset; what is not named keeps its default."""
        values = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name not in ("read", "member", "run"):
                raise PolicyError(f"{item!r}: expected read=, member= or run= with a duration, like member=15m")
            values[name] = parse_duration(value)
        return cls(**values)

    def __str__(self) -> str:
        return f"read={self.read:g}s,member={self.member:g}s,run={self.run:g}s"


class Clock:
    """A deadline: started once, asked how much time is left. `now` is injectable so tests need no waiting."""

    def __init__(self, seconds: float, what: str, now=time.monotonic):
        self._now = now
        self.end = now() + seconds
        self.seconds = seconds
        self.what = what

    def left(self) -> float:
        return self.end - self._now()

    def refusal(self) -> str | None:
        """Why the transfer must stop now (its deadline passed), or None."""
        if self.left() <= 0:
            return f"{self.what} took longer than its {self.seconds:g}s deadline (--deadlines overrides it)"
        return None


def read_timeout(deadlines: Deadlines, *clocks: Clock) -> float:
    """The socket timeout for the next read: the per-read deadline, never past a running clock's end."""
    return max(0.01, min([deadlines.read, *(clock.left() for clock in clocks)]))


# -- size caps ---------------------------------------------------------------------------------------------


def size_refusal(url: str, received: int, cap: int, what: str = "the size its descriptor lists") -> str | None:
    """Why an answer that has reached `received` bytes must be dropped: more than `cap` (the listed size)."""
    if received > cap:
        return f"{url} sent more than {cap} bytes, {what}; refused"
    return None
