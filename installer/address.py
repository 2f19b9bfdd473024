"""The node's own address, chosen the same way every time.

kubeadm picks the address of the default route's interface; air-gapped nodes
often have no default route, and then kubeadm has nothing to pick. airlock
decides instead, in this order, and gives the same address to kubeadm
(`advertiseAddress`) and to kubelet (`--node-ip`):

1. node.yaml `advertiseAddress`;
2. the source address of the route to `controlPlaneEndpoint` (`ip route get`);
3. the node's single global address (IPv4 first, then IPv6).

Never a loopback, link-local, multicast or all-zeros address: kubelet refuses
such a node IP and kubeadm cannot advertise one (an endpoint on this node's
loopback leads to rule 3). Anything else is ambiguous (several global
addresses, or none), and preflight refuses it, naming `advertiseAddress`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from dataclasses import dataclass

from installer.node import NodeConfig
from installer.nodeschema import unusable_reason


class AmbiguousAddress(Exception):
    """No single address can be chosen; the text says what was found."""


@dataclass(frozen=True)
class Choice:
    address: str
    reason: str


def _ip(argv: list[str]) -> object | None:
    try:
        result = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not result.stdout.strip():
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def endpoint_host(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint[1:].partition("]")[0]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def endpoint_addresses(endpoint: str) -> list[str]:
    """The IP addresses of controlPlaneEndpoint's host: itself, or what the node's resolver (/etc/hosts) says."""
    name = endpoint_host(endpoint)
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({answer[4][0] for answer in answers}, key=lambda a: (ipaddress.ip_address(a).version, a))


def route_source(destination: str) -> str | None:
    """The source address the kernel would use to reach `destination`, or None when there is no route."""
    routes = _ip(["route", "get", destination])
    if isinstance(routes, list) and routes and isinstance(routes[0], dict):
        source = routes[0].get("prefsrc")
        if isinstance(source, str):
            return str(ipaddress.ip_address(source))
    return None


def global_addresses() -> list[str]:
    """Every global-scope address on the node's interfaces (no loopback, no link-local)."""
    links = _ip(["address", "show"])
    found = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if info.get("scope") != "global" or "local" not in info:
                continue
            address = ipaddress.ip_address(info["local"])
            if address.is_loopback or address.is_link_local:
                continue
            found.append(str(address))
    return sorted(set(found), key=lambda a: (ipaddress.ip_address(a).version, a))


def node_addresses() -> list[str]:
    """Every address on the node's interfaces, any scope (what kubelet searches for its --node-ip)."""
    links = _ip(["address", "show"])
    found = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if isinstance(info, dict) and isinstance(info.get("local"), str):
                found.append(str(ipaddress.ip_address(info["local"])))
    return found


def choose(config: NodeConfig, routes=route_source, addresses=global_addresses, resolve=endpoint_addresses) -> Choice:
    """The node's address and why; AmbiguousAddress when node.yaml must say it."""
    if config.advertise_address:
        return Choice(config.advertise_address, "advertiseAddress in node.yaml")
    if config.control_plane_endpoint:
        for destination in resolve(config.control_plane_endpoint):
            source = routes(destination)
            # An endpoint on this node's own loopback says nothing about the node's address: fall through to rule 3.
            if source and not unusable_reason(source):
                return Choice(source, f"source address of the route to controlPlaneEndpoint {config.control_plane_endpoint}")
    candidates = addresses()
    for version in (4, 6):
        of_version = [a for a in candidates if ipaddress.ip_address(a).version == version]
        if len(of_version) == 1:
            return Choice(of_version[0], f"the node's only global IPv{version} address")
        if len(of_version) > 1:
            raise AmbiguousAddress(f"the node has several global IPv{version} addresses ({', '.join(of_version)}) and no route to controlPlaneEndpoint decides")
    raise AmbiguousAddress("the node has no global (non-loopback) address and no route to controlPlaneEndpoint decides")
