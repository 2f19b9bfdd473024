"""A node's network the way a data centre gives it: its own namespace, one address, no route out.

Each `NodeNetwork` is a network namespace holding one interface, eth0, with a
documentation address (192.0.2.0/24, RFC 5737), loopback up and no default
route (eth0 is one end of a veth pair whose other end, unconfigured, stays in
the namespace too: kernels without the dummy module have veth), so airlock has to find the node's address itself and must never fall
back to loopback. Commands run inside it through `nsenter --net=...`, which
keeps the cgroup mounts that `ip netns exec` would hide from containerd.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess

NODE_ADDRESS = "192.0.2.10"
_COUNTER = itertools.count()


class NodeNetwork:
    def __init__(self, address: str = NODE_ADDRESS, prefix_length: int = 24):
        self.address = address
        # Unique per process and call: tests of several workers and checkouts run on one machine at once.
        self.name = f"airlock-node-{os.getpid()}-{next(_COUNTER)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self.run(["ip", "link", "set", "lo", "up"])
            self.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-far"])
            self.run(["ip", "address", "add", f"{address}/{prefix_length}", "dev", "eth0"])
            self.run(["ip", "link", "set", "eth0-far", "up"])
            self.run(["ip", "link", "set", "eth0", "up"])
        except BaseException:
            self.close()
            raise

    @property
    def prefix(self) -> list[str]:
        """What to put before a command to run it on this node's network."""
        return ["nsenter", f"--net=/run/netns/{self.name}"]

    def run(self, argv: list, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run([*self.prefix, *map(str, argv)], check=check, **kwargs)

    def add_address(self, address: str, prefix_length: int = 24) -> None:
        self.run(["ip", "address", "add", f"{address}/{prefix_length}", "dev", "eth0"])

    def routes(self) -> str:
        return self.run(["ip", "route"]).stdout

    def __enter__(self) -> NodeNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def host_address() -> str:
    """This machine's own non-loopback address (the route's source towards a documentation address, else its first
    global address): what a test running on the host's network gives node.yaml as advertiseAddress."""
    for probe in (["ip", "-j", "route", "get", "192.0.2.1"], ["ip", "-j", "address", "show", "scope", "global"]):
        result = subprocess.run(probe, capture_output=True, text=True)
        if result.returncode != 0 or not result.stdout.strip():
            continue
        for entry in json.loads(result.stdout):
            candidates = [entry.get("prefsrc")] + [info.get("local") for info in entry.get("addr_info", [])]
            for candidate in filter(None, candidates):
                address = ipaddress.ip_address(candidate)
                if not (address.is_loopback or address.is_link_local):
                    return str(address)
    raise RuntimeError("this machine has no global address to stand for the node's (ip address show scope global)")

