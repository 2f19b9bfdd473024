"""A fleet of nodes on this machine for the Ansible collection: each node its own network namespace (its own
address, no route out), its own --root and staging directory, reached through the collection's netns connection.

kubeadm and kubelet in the bundle are the STAND-INS (tests/standin): the fleet proves order, parallelism,
idempotence and failure handling of the fan-out, never that a cluster came up.

The nodes share one switch: every node's eth0 is one end of a veth pair whose other end is a port of a bridge in a
namespace of its own, so the nodes reach each other's addresses (and nothing else). With `from_first`, the first
control plane serves its registry over TLS (the CA and certificate from `airlock-node registry cert`) and the workers
install `--from` it (the role's airlock_from / airlock_from_ca) instead of being copied the bundle; the registry's
access log tells what it served to whom (`served`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.conftest import node_command
from tests.nodenet import NodeNetwork
from tests.upstream import free_port

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
# What airlock's own preflight cannot have on a test node (no br_netfilter, a shared machine, not a fresh root), as in test_install.
IGNORE = "module-br_netfilter,swap,port-6443,port-2379,port-2380,port-10250,port-10257,port-10259,root,disk-space,existing-kubernetes"
REGISTRY_PORT = 5443
# installer/connections.py's access log: PEER "METHOD TARGET" STATUS BYTES ELAPSEDms
ACCESS = re.compile(r'^(\S+) "(\S+) (\S+)" (\d{3}) (\d+) ')


@dataclass
class Node:
    name: str
    group: str
    network: NodeNetwork
    home: Path
    environment: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.home / "root"

    def installed(self) -> dict | None:
        state = self.root / "var/lib/airlock/state.json"
        return json.loads(state.read_text()).get("installed") if state.exists() else None

    def received(self) -> int:
        """Bytes this node's eth0 has received (its veth's counter): what reached it over the fleet's switch."""
        (link,) = json.loads(subprocess.run(["ip", "-n", self.network.name, "-j", "-s", "link", "show", "eth0"],
                                            capture_output=True, text=True, check=True).stdout)
        return link["stats64"]["rx"]["bytes"]


class Switch:
    """A bridge in a namespace of its own; `plug` moves a node's far veth end onto it."""

    def __init__(self):
        self.name = f"airlock-switch-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.ports = 0
        self._ip("link", "add", "br0", "type", "bridge")
        self._ip("link", "set", "br0", "up")

    def _ip(self, *argv: str, namespace: str | None = None) -> None:
        subprocess.run(["ip", "-n", namespace or self.name, *argv], check=True, capture_output=True)

    def plug(self, network: NodeNetwork) -> None:
        self.ports += 1
        port = f"port{self.ports}"
        self._ip("link", "set", "eth0-far", "down", namespace=network.name)
        self._ip("link", "set", "eth0-far", "name", port, namespace=network.name)
        self._ip("link", "set", port, "netns", self.name, namespace=network.name)
        self._ip("link", "set", port, "master", "br0")
        self._ip("link", "set", port, "up")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


class FirstRegistry:
    """What airlock-registry.service runs on the first control plane, started the way systemd would: once init's
    registry phase has enabled the unit (its wants/ link appears under the node's root). Its access log is kept."""

    def __init__(self, node: Node, pki: Path, log: Path):
        self.node, self.pki, self.log = node, pki, log
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._start_when_enabled, daemon=True)
        self._watcher.start()

    @property
    def url(self) -> str:
        return f"https://{self.node.network.address}:{REGISTRY_PORT}"

    def _start_when_enabled(self) -> None:
        wants = self.node.root / "etc/systemd/system/multi-user.target.wants/airlock-registry.service"
        while not self._stop.wait(0.1):
            if wants.is_symlink():
                with open(self.log, "ab") as log:
                    self.process = subprocess.Popen(
                        [*self.node.network.prefix, *node_command(), "registry", "serve", "--store", str(self.node.root / "var/lib/airlock/store"),
                         "--listen", f"{self.node.network.address}:{REGISTRY_PORT}",
                         "--tls-cert", str(self.pki / "registry.crt"), "--tls-key", str(self.pki / "registry.key")],
                        stdout=subprocess.DEVNULL, stderr=log,
                    )
                return

    def served(self) -> dict[str, int]:
        """Bytes of successful answers per client address, from the access log."""
        found: dict[str, int] = {}
        for line in self.log.read_text().splitlines() if self.log.exists() else ():
            match = ACCESS.match(line)
            if match and match.group(4) in ("200", "206"):
                found[match.group(1)] = found.get(match.group(1), 0) + int(match.group(5))
        return found

    def close(self) -> None:
        self._stop.set()
        self._watcher.join()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Run:
    returncode: int
    stdout: str
    results: list[dict]
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host: ok, changed, failed, …"""
        found = {}
        for line in self.stdout.split("PLAY RECAP", 1)[-1].splitlines():
            if " : " in line:
                host, counts = line.split(" : ", 1)
                found[host.strip()] = {key: int(value) for key, value in (pair.split("=") for pair in counts.split())}
        return found

    def interval(self, host: str, task: str) -> tuple[datetime, datetime]:
        (result,) = [r for r in self.results if r["host"] == host and r["task"].endswith(task) and r["start"]]
        return datetime.fromisoformat(result["start"]), datetime.fromisoformat(result["end"])


def from_floor(bundle: Path, arch: str = "amd64") -> int:
    """Bytes of the bundle a worker joining --from fetches: bundle.json, its signature and the members
    installer.remote.needed_members picks for its architecture (never image blobs)."""
    import tarfile

    from bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
    from installer.remote import needed_members

    with tarfile.open(bundle) as archive:
        manifest = Manifest.parse(archive.extractfile(MANIFEST_NAME).read())
        heads = sum(archive.getmember(name).size for name in (MANIFEST_NAME, SIGNATURE_NAME))
    return heads + sum(entry.size for entry in needed_members(manifest, arch))


class Fleet:
    def __init__(self, work: Path, bundle: Path, public_key: Path, node_pyz: Path, control_planes: int = 2, workers: int = 12,
                 from_first: bool = False):
        self.work = work
        self.bundle, self.public_key, self.node_pyz = bundle, public_key, node_pyz
        self.nodes: list[Node] = []
        self.registry: FirstRegistry | None = None
        self.switch = Switch()
        names = [("cp1", "first")] + [(f"cp{i + 2}", "control_plane") for i in range(control_planes)] + [(f"worker{i + 1}", "workers") for i in range(workers)]
        try:
            for index, (name, group) in enumerate(names):
                network = NodeNetwork(f"192.0.2.{10 + index}")
                self.nodes.append(Node(name, group, network, work / "nodes" / name))
                self.switch.plug(network)
            if from_first:
                pki = work / "pki"
                subprocess.run([*node_command(), "registry", "cert", "--ca-out", str(pki), "--name", self.first.network.address],
                               check=True, capture_output=True)
                self.first.home.mkdir(parents=True, exist_ok=True)
                self.registry = FirstRegistry(self.first, pki, work / "registry-access.log")
        except BaseException:
            self.close()
            raise
        collections = work / "collections/ansible_collections/airlock"
        collections.mkdir(parents=True, exist_ok=True)
        if not (collections / "cluster").exists():
            (collections / "cluster").symlink_to(ROOT / "ansible")
        self.first.home.mkdir(parents=True, exist_ok=True)

    @property
    def first(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def inventory(self) -> Path:
        groups: dict[str, dict] = {"first": {"hosts": {}}, "control_plane": {"hosts": {}}, "workers": {"hosts": {}}}
        for node in self.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            registry = {"listen": f"127.0.0.1:{free_port()}"}
            if self.registry is not None and node is self.first:
                pki = self.registry.pki
                registry = {"listen": f"{node.network.address}:{REGISTRY_PORT}", "tlsCert": str(pki / "registry.crt"),
                            "tlsKey": str(pki / "registry.key"), "ca": str(pki / "ca.crt")}
            groups[node.group]["hosts"][node.name] = {
                "airlock_netns": node.network.name,
                "airlock_root": str(node.root),
                "airlock_stage": str(node.home / "stage"),
                "airlock_node_config": {"nodeName": node.name, "advertiseAddress": node.network.address, "registry": registry},
                "airlock_environment": {"AIRLOCK_STANDIN_LOG": str(node.home / "standin.log"), **node.environment},
            }
        if self.registry is not None:
            # docs/fleet.md: the workers install --from the first control plane's registry; nothing copies them the bundle.
            groups["workers"]["vars"] = {"airlock_from": self.registry.url, "airlock_from_ca": str(self.registry.pki / "ca.crt")}
        document = {
            "all": {
                "vars": {
                    "ansible_connection": "airlock.cluster.netns",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "airlock_node_pyz": str(self.node_pyz),
                    "airlock_trusted_key": str(self.public_key),
                    "airlock_bundle": str(self.bundle),
                    # The stand-in kubelet is never started under --root: the images phase has no containerd here.
                    "airlock_extra_args": ["--ignore-preflight-errors", IGNORE, "--skip-phases", "images"],
                },
                "children": groups,
            }
        }
        path = self.work / "inventory.yml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def play(self, playbook: str, forks: int = 8, extra: tuple[str, ...] = (), timeout: float = 900) -> Run:
        timeline = self.work / f"timeline-{time.monotonic_ns()}.jsonl"
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(self.work / "collections"),
            "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "tests/ansible_callbacks"),
            "ANSIBLE_CALLBACKS_ENABLED": "timeline",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(self.work / "ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "AIRLOCK_TIMELINE": str(timeline),
        }
        started = time.monotonic()
        result = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", str(self.inventory()), "--forks", str(forks), str(ROOT / "ansible/playbooks" / playbook), *extra],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
        seconds = time.monotonic() - started
        results = [json.loads(line) for line in timeline.read_text().splitlines()] if timeline.exists() else []
        return Run(result.returncode, result.stdout + result.stderr, results, seconds)

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()
        for node in self.nodes:
            node.network.close()
        self.switch.close()
