"""NO_PROXY read exactly the way the node's Go programs read it.

kubelet, containerd and kubeadm decide whether a request goes to the proxy
with golang.org/x/net/http/httpproxy (net/http's ProxyFromEnvironment).
Preflight must agree with them, or it passes while containerd sends registry
traffic to the proxy. The rules, from that package:

- entries are comma-separated, trimmed and lowercased; `*` anywhere means
  "no proxy for anything";
- `10.0.0.0/8`, `fd00::/8`: an IP network (CIDR) matches addresses in it, any port;
- `10.0.0.10`, `10.0.0.10:5000`, `[fd00::1]:5000`: an IP address, with an
  optional port that must then be the request's;
- `example.com` matches example.com and its subdomains; `.example.com` and
  `*.example.com` match subdomains only, never example.com itself; a name can
  carry a port (`example.com:5000`); names are compared as strings, so a name
  entry can also match an IP address that ends the same way;
- `localhost` and loopback addresses never go to the proxy, whatever NO_PROXY says;
- non-ASCII names are compared in their IDNA (ASCII) form.

Addresses are parsed as Go's net package parses them (ParseIP, ParseCIDR,
SplitHostPort): no leading zeros in IPv4 fields, no IPv6 zones, IPv4-mapped
IPv6 is the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union
from urllib.parse import urlsplit

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
DEFAULT_PORTS = {"http": "80", "https": "443", "socks5": "1080"}


def split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: (host, port), brackets removed, or None where Go returns an error."""
    last = text.rfind(":")
    if last < 0:
        return None
    start, end = 0, 0
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or close + 1 != last:
            return None
        host = text[1:close]
        start, end = 1, close + 1
    else:
        host = text[:last]
        if ":" in host:
            return None
    if "[" in text[start:] or "]" in text[end:]:
        return None
    return host, text[last + 1 :]


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    fields = text.split(".")
    if len(fields) != 4:
        return None
    for field in fields:
        if not field or not field.isascii() or not field.isdigit() or (len(field) > 1 and field[0] == "0") or int(field) > 255:
            return None
    return ipaddress.IPv4Address(text)


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    if "%" in text or not text.isascii():
        return None
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def parse_ip(text: str) -> Address | None:
    """Go's net.ParseIP; an IPv4-mapped IPv6 address is the IPv4 address, as in Go."""
    for char in text:
        if char == ".":
            return _ipv4(text)
        if char == ":":
            address = _ipv6(text)
            if address is not None and address.ipv4_mapped is not None:
                return address.ipv4_mapped
            return address
    return None


def parse_cidr(text: str) -> Network | None:
    """Go's net.ParseCIDR: ADDRESS/BITS (host bits may be set), or None."""
    address, slash, bits = text.partition("/")
    if not slash:
        return None
    parsed: Address | None = _ipv4(address)
    if parsed is None:
        parsed = _ipv6(address)
    if parsed is None or not bits or not bits.isascii() or not bits.isdigit() or int(bits) > parsed.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{parsed}/{int(bits)}", strict=False)


@dataclass(frozen=True)
class _Domain:
    suffix: str  # always starts with "."
    port: str
    match_host: bool  # the entry had no leading dot: the name itself matches too

    def matches(self, host: str, port: str | None) -> bool:
        if host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:]):
            return _port_matches(self.port, port)
        return False


def _port_matches(wanted: str, port: str | None) -> bool:
    # None: the request's port is not known, so only an entry for every port covers it.
    return wanted == "" or (port is not None and wanted == port)


@dataclass(frozen=True)
class NoProxy:
    """A parsed NO_PROXY value."""

    everything: bool = False
    networks: tuple[Network, ...] = ()
    addresses: tuple[tuple[Address, str], ...] = ()
    domains: tuple[_Domain, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NoProxy:
        networks: list[Network] = []
        addresses: list[tuple[Address, str]] = []
        domains: list[_Domain] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(everything=True)
            network = parse_cidr(entry)
            if network is not None:
                networks.append(network)
                continue
            split = split_host_port(entry)
            if split is not None:
                host, port = split
                if not host:
                    continue  # ":80": no host, ignored as Go ignores it
                if host.startswith("[") and host.endswith("]"):
                    host = host[1:-1]
            else:
                host, port = entry, ""
            address = parse_ip(host)
            if address is not None:
                addresses.append((address, port))
                continue
            if not host:
                continue
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            domains.append(_Domain(_ascii(host if not match_host else "." + host), port, match_host))
        return cls(False, tuple(networks), tuple(addresses), tuple(domains))

    def bypasses(self, host: str, port: str | None) -> bool:
        """True when a request to `host` on `port` does not go to the proxy (port None: on any port)."""
        if host == "localhost":
            return True
        address = parse_ip(host)
        if address is not None and address.is_loopback:
            return True
        if self.everything:
            return True
        name = host.strip().lower()
        if address is not None:
            if any(address in network for network in self.networks if network.version == address.version):
                return True
            if any(address == listed and _port_matches(wanted, port) for listed, wanted in self.addresses):
                return True
        return any(domain.matches(name, port) for domain in self.domains)

    def bypasses_network(self, network: Network) -> bool:
        """True when no address of `network` goes to the proxy, on any port."""
        if self.everything or network.is_loopback:
            return True
        if any(network.version == listed.version and network.subnet_of(listed) for listed in self.networks):
            return True
        return network.num_addresses == 1 and self.bypasses(str(network.network_address), None)


def request_target(url: str) -> tuple[str, str]:
    """(host, port) of a URL as Go's httpproxy sees it (url.Hostname, url.Port): the scheme's port when none is given."""
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    host, port = hostport, ""
    colon = hostport.rfind(":")
    if colon >= 0 and all(char in "0123456789" for char in hostport[colon + 1 :]):
        host, port = hostport[:colon], hostport[colon + 1 :]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return _ascii(host), port or DEFAULT_PORTS.get(parts.scheme.lower(), "")


def _ascii(name: str) -> str:
    """Non-ASCII names in their IDNA (ASCII) form, as httpproxy compares them."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name
