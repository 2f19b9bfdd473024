"""A fleet of nodes on this machine for the Ansible collection: each node its own network namespace (its own
address, no route out), its own --root and staging directory, reached through the collection's netns connection.

kubeadm and kubelet in the bundle are the STAND-INS (tests/standin): the fleet proves order, parallelism,
idempotence and failure handling of the fan-out, never that a cluster came up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.nodenet import NodeNetwork
from tests.upstream import free_port

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
# What airlock's own preflight cannot have on a test node (no br_netfilter, a shared machine, not a fresh root), as in test_install.
IGNORE = "module-br_netfilter,swap,port-6443,port-2379,port-2380,port-10250,port-10257,port-10259,root,disk-space,existing-kubernetes"


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


class Fleet:
    def __init__(self, work: Path, bundle: Path, public_key: Path, node_pyz: Path, control_planes: int = 2, workers: int = 12):
        self.work = work
        self.bundle, self.public_key, self.node_pyz = bundle, public_key, node_pyz
        self.nodes: list[Node] = []
        names = [("cp1", "first")] + [(f"cp{i + 2}", "control_plane") for i in range(control_planes)] + [(f"worker{i + 1}", "workers") for i in range(workers)]
        try:
            for index, (name, group) in enumerate(names):
                network = NodeNetwork(f"192.0.2.{10 + index}")
                self.nodes.append(Node(name, group, network, work / "nodes" / name))
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
            groups[node.group]["hosts"][node.name] = {
                "airlock_netns": node.network.name,
                "airlock_root": str(node.root),
                "airlock_stage": str(node.home / "stage"),
                "airlock_node_config": {
                    "nodeName": node.name,
                    "advertiseAddress": node.network.address,
                    "registry": {"listen": f"127.0.0.1:{free_port()}"},
                },
                "airlock_environment": {"AIRLOCK_STANDIN_LOG": str(node.home / "standin.log"), **node.environment},
            }
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
        for node in self.nodes:
            node.network.close()
