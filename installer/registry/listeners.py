"""Who listens on a TCP address: the socket from /proc/net/tcp{,6}, its process from /proc/*/fd.

The images phase pulls from whatever answers on `registry.listen`; this is
how it tells the node's own registry from a process someone else started on
that port. Read-only, no dependencies beyond procfs (root reads every
process's descriptors; a non-root caller sees its own).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: str  # host:port as the kernel holds it (0.0.0.0 and :: answer every address)
    uid: int  # owner of the socket
    inode: int
    pid: int | None  # None when no readable process holds it
    program: str

    def describe(self) -> str:
        who = f"pid {self.pid} ({self.program})" if self.pid is not None else "a process airlock cannot see"
        return f"{who}, uid {self.uid}, listening on {self.address}"


def split_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def listeners_on(listen: str, proc: Path = Path("/proc")) -> list[Listener]:
    """Every listening TCP socket that answers connections to `listen` (its own address, or a wildcard on its port)."""
    host, port = split_listen(listen)
    wanted = _addresses(host)
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            address_hex, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) != port:
                continue
            address = _decode(address_hex, family)
            if address.is_unspecified or _plain(address) in wanted:
                inode = int(fields[9])
                pid = _owner(inode, proc)
                found.append(Listener(_format(address, port), int(fields[7]), inode, pid, _program(pid, proc)))
    return found


def parent_pids(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """`pid` and its ancestors, nearest first."""
    chain = [pid]
    while True:
        try:
            stat = (proc / str(chain[-1]) / "stat").read_text()
        except OSError:
            return chain
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent <= 1 or parent in chain:
            return chain
        chain.append(parent)


def _addresses(host: str) -> set:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except socket.gaierror:
        return set()


def _decode(text: str, family: int):
    # The kernel prints each 32-bit word of the address in host byte order.
    words = [int(text[i : i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(socket.inet_ntop(family, struct.pack(f"={len(words)}I", *words)))


def _plain(address):
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _format(address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _owner(inode: int, proc: Path) -> int | None:
    target = f"socket:[{inode}]"
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for descriptor in os.scandir(entry / "fd"):
                try:
                    if os.readlink(descriptor.path) == target:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def _program(pid: int | None, proc: Path) -> str:
    if pid is None:
        return "?"
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"
