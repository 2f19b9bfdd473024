"""The Ansible collection (ansible/, airlock.cluster) brings up 1 first + 2 control planes + 12 workers on this machine.

Each node is its own network namespace with its own address and --root, reached through the collection's
netns connection; kubeadm and kubelet are the bundle's STAND-INS (see tests/fleet.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import NODE_PYZ, require
from tests.fleet import ANSIBLE_PLAYBOOK, Fleet, from_floor
from tests.test_node_day2 import write_admin_conf

INSTALL = "Install with airlock-node"


def most_at_once(intervals) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def started_fleet(node_bundle, keys, tmp_path, control_planes: int, workers: int, from_first: bool = False) -> Iterator[Fleet]:
    require("nsenter", "ip", ANSIBLE_PLAYBOOK)
    # The controller's own copy: the runs compare what they copy with what a node holds.
    pyz = tmp_path / "airlock-node.pyz"
    shutil.copyfile(NODE_PYZ, pyz)
    nodes = Fleet(tmp_path, node_bundle, keys["ed25519"] / "airlock.pub", pyz, control_planes=control_planes, workers=workers, from_first=from_first)
    # What `kubeadm init phase kubeconfig` would write on the first node (the stand-in does not); token create reads it.
    write_admin_conf(nodes.first.root, "https://192.0.2.10:6443")
    try:
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def fleet(node_bundle, keys, tmp_path):
    yield from started_fleet(node_bundle, keys, tmp_path, control_planes=2, workers=12)


def test_the_playbook_brings_up_the_fleet_in_order_in_batches_and_a_rerun_changes_nothing(fleet):
    fleet.node("worker5").environment = {"AIRLOCK_STANDIN_FAIL": "join"}  # its kubeadm join fails
    run = fleet.play("cluster.yml", forks=15)
    recap = run.recap()
    assert run.returncode == 2 and recap["worker5"]["failed"] == 1, run.stdout[-3000:]
    # One failing worker stops no other (max_fail_percentage): every other node is installed, in its role.
    roles = {node.name: (node.installed() or {}).get("role") for node in fleet.nodes}
    assert roles.pop("worker5") is None
    assert roles == {"cp1": "first-control-plane", "cp2": "control-plane", "cp3": "control-plane",
                     **{f"worker{i}": "worker" for i in range(1, 13) if i != 5}}, run.stdout[-3000:]
    # Order: init, then each control plane alone, then the workers; the workers overlap.
    init, cp2, cp3 = run.interval("cp1", INSTALL), run.interval("cp2", INSTALL), run.interval("cp3", INSTALL)
    workers = [run.interval(f"worker{i}", INSTALL) for i in range(1, 13)]
    assert init[1] <= cp2[0] and cp2[1] <= cp3[0] and cp3[1] <= min(start for start, _ in workers)
    assert most_at_once(workers) >= 3, workers
    # Join material came from `airlock-node token create` on the first node: one --control-plane per control plane.
    calls = (fleet.first.home / "standin.log").read_text().splitlines()
    creates = [c for c in calls if c.startswith("kubeadm token create")]
    assert sum("--certificate-key" in c for c in creates) == 2 and len(creates) >= 3
    for name in ("cp2", "cp3"):
        (join,) = [c for c in (fleet.node(name).home / "standin.log").read_text().splitlines() if c.startswith("kubeadm join")]
        document = yaml.safe_load((fleet.node(name).home / "stage/node.yaml").read_text())
        assert document["controlPlaneEndpoint"] == "192.0.2.10:6443" and len(document["certificateKey"]) == 64
        assert document["nodeName"] == name and document["advertiseAddress"] == fleet.node(name).network.address
    worker = yaml.safe_load((fleet.node("worker1").home / "stage/node.yaml").read_text())
    assert "certificateKey" not in worker and worker["token"] and worker["caCertHashes"][0].startswith("sha256:")

    # The rerun, worker5 mended: it joins, with a fresh token for its batch; nothing else changes.
    fleet.node("worker5").environment = {}
    again = fleet.play("cluster.yml", forks=15)
    assert again.returncode == 0, again.stdout[-3000:]
    assert fleet.node("worker5").installed()["role"] == "worker"
    changed = {(r["host"], r["task"].split(" : ")[-1]) for r in again.results if r["changed"]}
    token = "Ask the first control plane for join material"
    assert {task for host, task in changed if host != "worker5"} == {token}, changed
    assert ("worker5", INSTALL) in changed
    assert not [r for r in again.results if r["task"].endswith(INSTALL) and r["host"] != "worker5" and r["status"] != "skipped"]
    # And once every node is done: a run with zero changes, and no token made.
    third = fleet.play("cluster.yml", forks=15)
    assert third.returncode == 0, third.stdout[-3000:]
    assert {host: counts["changed"] for host, counts in third.recap().items()} == {node.name: 0 for node in fleet.nodes}
    assert not [r for r in third.results if r["task"].endswith(token) and r["status"] != "skipped"]

@pytest.fixture
def fleet_from_first(node_bundle, keys, tmp_path):
    yield from started_fleet(node_bundle, keys, tmp_path, control_planes=1, workers=3, from_first=True)


def test_workers_install_from_the_first_control_planes_registry_and_are_served_only_their_members(fleet_from_first, node_bundle):
    """docs/fleet.md's airlock_from: the workers get no bundle file; each is served by cp1's registry what a node of its
    architecture needs of the bundle (bundle.json, its signature, its members; no image blob), not the bundle."""
    fleet = fleet_from_first
    run = fleet.play("cluster.yml", forks=6)
    assert run.returncode == 0, run.stdout[-3000:]
    assert {node.name: (node.installed() or {}).get("role") for node in fleet.nodes} == {
        "cp1": "first-control-plane", "cp2": "control-plane", **{f"worker{i}": "worker" for i in (1, 2, 3)}}
    assert (fleet.node("cp2").home / "stage/k8s.tar").exists()
    floor, bundle_size = from_floor(node_bundle), node_bundle.stat().st_size
    served = fleet.registry.served()
    for name in ("worker1", "worker2", "worker3"):
        node = fleet.node(name)
        assert not (node.home / "stage/k8s.tar").exists()
        hosts = (node.root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
        assert f'[host."{fleet.registry.url}"]' in hosts, hosts
        # The floor plus the registry's small JSON answers (tag list, the artifact's manifest): never the image blobs.
        assert floor <= served[node.network.address] < floor + 64 * 1024 < bundle_size, (name, served, floor)
        assert node.received() >= served[node.network.address]
    assert set(served) == {fleet.node(name).network.address for name in ("worker1", "worker2", "worker3")}, served


def test_docs_fleet_commands_run_as_written(tmp_path):
    """docs/fleet.md: the collection builds and installs as written, its inventory parses into the three groups, and
    both playbook command lines are accepted (--syntax-check: there are no hosts here to run them on)."""
    import os
    import re
    import shlex
    import subprocess
    from pathlib import Path

    require(ANSIBLE_PLAYBOOK)
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs/fleet.md").read_text()
    (tmp_path / "ansible").symlink_to(root / "ansible")
    (inventory,) = [block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if block.startswith("# inventory.yml")]
    (tmp_path / "inventory.yml").write_text(inventory)
    bin_dir = Path(ANSIBLE_PLAYBOOK).parent
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"), "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    lines = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines() if line.startswith("ansible")]
    assert len(lines) == 4
    for line in lines:
        argv = shlex.split(line) + (["--syntax-check"] if line.startswith("ansible-playbook") else [])
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "collections/ansible_collections/airlock/cluster/playbooks/cluster.yml").exists()
    graph = subprocess.run(["ansible-inventory", "-i", "inventory.yml", "--graph"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    for group, hosts in (("first", ["cp1"]), ("control_plane", ["cp2", "cp3"]), ("workers", ["worker1", "worker2"])):
        section = graph.split(f"@{group}:", 1)[1].split("@", 1)[0]
        assert all(f"--{host}" in section for host in hosts), graph


UPGRADE = "Run airlock-node upgrade"
DRAIN, UNCORDON = "Drain this worker from the first control plane", "Uncordon this worker from the first control plane"
NEXT = "v1.37.2"  # the next minor after the node bundle's stable-1.36


@pytest.fixture
def small_fleet(node_bundle, keys, tmp_path):
    yield from started_fleet(node_bundle, keys, tmp_path, control_planes=1, workers=3)


def test_the_upgrade_playbook_upgrades_control_planes_one_at_a_time_then_workers_in_batches(small_fleet, upstream, node_bundle, keys, tmp_path):
    import json
    import tarfile

    from tests.conftest import build

    fleet = small_fleet
    up = fleet.play("cluster.yml", forks=5)
    assert up.returncode == 0, up.stdout[-3000:]
    write_admin_conf(fleet.node("cp2").root, "https://192.0.2.10:6443")
    with tarfile.open(node_bundle) as archive:
        serial = json.loads(archive.extractfile("bundle.json").read())["serial"]
    # The next minor, a higher serial.
    newer = tmp_path / "k8s-2.tar"
    build(upstream, keys, newer, NEXT, tmp_path / "cache", "--serial", str(serial + 1), check=True)
    # There is no API server behind the stand-ins: every node but the first is told the one it would find once the
    # first control plane is upgraded (without it, the node's own skew check refuses: kubelet newer than the API server).
    for node in fleet.nodes[1:]:
        node.environment = {"AIRLOCK_STANDIN_SERVER_VERSION": NEXT}
    extra = ("-e", f"airlock_bundle={newer}", "-e", "airlock_worker_batch=2")
    run = fleet.play("upgrade.yml", forks=5, extra=extra)
    assert run.returncode == 0, run.stdout[-4000:]
    for node in fleet.nodes:
        assert (node.installed() or {}).get("version") == NEXT and node.installed()["serial"] == serial + 1, node.name
    # Order: the first control plane, then the other, then the workers two at a time.
    cp1, cp2 = run.interval("cp1", UPGRADE), run.interval("cp2", UPGRADE)
    workers = {f"worker{i}": run.interval(f"worker{i}", UPGRADE) for i in (1, 2, 3)}
    assert cp1[1] <= cp2[0] and cp2[1] <= min(run.interval(name, DRAIN)[0] for name in workers)
    assert most_at_once([workers["worker1"], workers["worker2"]]) == 2, workers
    assert max(run.interval(name, UNCORDON)[1] for name in ("worker1", "worker2")) <= run.interval("worker3", DRAIN)[0]
    first_calls = (fleet.first.home / "standin.log").read_text().splitlines()
    assert f"kubeadm upgrade apply {NEXT} --yes" in first_calls
    for name in ("cp2", "worker1", "worker2", "worker3"):
        assert "kubeadm upgrade node" in (fleet.node(name).home / "standin.log").read_text().splitlines(), name
    # Each control plane drains itself with its own admin.conf; each worker is drained and uncordoned by the first
    # control plane, around its upgrade, and never holds admin credentials.
    cp2_admin = fleet.node("cp2").root / "etc/kubernetes/admin.conf"
    assert f"kubectl --kubeconfig {cp2_admin} drain cp2 --ignore-daemonsets --delete-emptydir-data --timeout=600s" in (
        fleet.node("cp2").home / "standin.log").read_text().splitlines()
    admin = fleet.first.root / "etc/kubernetes/admin.conf"
    for name in ("cp1", "worker1", "worker2", "worker3"):
        assert f"kubectl --kubeconfig {admin} drain {name} --ignore-daemonsets --delete-emptydir-data --timeout=600s" in first_calls, name
        assert f"kubectl --kubeconfig {admin} uncordon {name}" in first_calls, name
    for name in workers:
        drain, upgrade, uncordon = run.interval(name, DRAIN), run.interval(name, UPGRADE), run.interval(name, UNCORDON)
        assert drain[1] <= upgrade[0] and upgrade[1] <= uncordon[0], name
        assert not (fleet.node(name).root / "etc/kubernetes/admin.conf").exists()
        assert not [c for c in (fleet.node(name).home / "standin.log").read_text().splitlines() if " drain " in c or " uncordon " in c]

    # The rerun: every node already runs the bundle; nothing is drained, upgraded or changed.
    again = fleet.play("upgrade.yml", forks=5, extra=extra)
    assert again.returncode == 0, again.stdout[-3000:]
    assert {host: counts["changed"] for host, counts in again.recap().items()} == {node.name: 0 for node in fleet.nodes}
    assert not [r for r in again.results if r["task"].endswith((UPGRADE, DRAIN, UNCORDON)) and r["status"] != "skipped"]
    assert (fleet.first.home / "standin.log").read_text().splitlines() == first_calls
