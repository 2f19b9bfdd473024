"""The bundle as an OCI artifact, and nodes that install straight from a registry.

`airlock push` puts the whole bundle into a distribution registry (images as
images, everything else as one artifact); oras-py and skopeo read it back. A
first node serves the same artifact from its store. A second node in its own
network namespace, with no bundle file, joins from either over TLS and ends
with the same binaries and images as a node installed from the file. Hostile
registries are refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bundle.artifact import ARTIFACT_TYPE, EMPTY_DIGEST, REPOSITORY, TITLE
from tests.conftest import AIRLOCK, airlock, require
from tests.containerd import Containerd
from tests.test_install import IGNORE
from tests.test_two_nodes import SUBNET, netns, network  # noqa: F401  (the fixture)


def bundle_json(bundle: Path) -> tuple[bytes, bytes, dict]:
    with tarfile.open(bundle) as archive:
        manifest_bytes = archive.extractfile("bundle.json").read()
        signature = archive.extractfile("bundle.json.sig").read()
    return manifest_bytes, signature, json.loads(manifest_bytes)


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as archive:
        return {item.name: archive.extractfile(item).read() for item in archive if item.isfile() and not item.name.startswith("images/blobs/")}


@pytest.fixture
def distribution(tmp_path):
    require("docker-registry")
    from tests.upstream import DockerRegistry

    registry = DockerRegistry(tmp_path / "distribution")
    yield registry
    registry.close()


def push(bundle: Path, keys, host: str, work: Path) -> subprocess.CompletedProcess:
    return airlock("push", bundle, "--to", host, "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", work, check=True)


def test_push_makes_one_artifact_that_oras_and_skopeo_read(bundle, keys, distribution, tmp_path):
    require("skopeo")
    import oras.client

    manifest_bytes, signature, document = bundle_json(bundle)
    tag = f"{document['name']}-{document['serial']}"
    first = push(bundle, keys, f"{distribution.host}/site", tmp_path / "work")
    assert f"{distribution.host}/site/{REPOSITORY}:{tag}" in first.stdout
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{distribution.host}/site/{REPOSITORY}:{tag}"],
                         capture_output=True, check=True).stdout
    artifact = json.loads(raw)
    assert artifact["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert artifact["artifactType"] == ARTIFACT_TYPE
    assert artifact["config"]["digest"] == EMPTY_DIGEST and artifact["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    titles = [layer["annotations"][TITLE] for layer in artifact["layers"]]
    files = members(bundle)
    assert titles[:2] == ["bundle.json", "bundle.json.sig"]
    assert sorted(titles[2:]) == sorted(name for name in files if name not in ("bundle.json", "bundle.json.sig"))
    for layer in artifact["layers"]:
        name = layer["annotations"][TITLE]
        assert layer["digest"] == "sha256:" + hashlib.sha256(files[name]).hexdigest()
    # oras-py pulls every layer to its bundle path, byte for byte.
    client = oras.client.OrasClient(hostname=distribution.host, insecure=True)
    out = tmp_path / "pulled"
    client.pull(target=f"{distribution.host}/site/{REPOSITORY}:{tag}", outdir=str(out))
    assert (out / "bundle.json").read_bytes() == manifest_bytes and (out / "bundle.json.sig").read_bytes() == signature
    for name, data in files.items():
        assert (out / name).read_bytes() == data, name
    # A rerun moves nothing: every blob and manifest is already there.
    again = push(bundle, keys, f"{distribution.host}/site", tmp_path / "work")
    assert " 0 blobs uploaded, 0 mounted" in again.stdout


def installed_files(root: Path) -> dict[str, str]:
    """sha256 and mode of every binary and CNI plugin a node installed."""
    found = {}
    for directory in ("usr/local/bin", "usr/local/sbin", "opt/cni/bin"):
        for path in sorted((root / directory).glob("*")) if (root / directory).is_dir() else ():
            if path.is_file() and not path.name.startswith("."):
                found[f"{directory}/{path.name}"] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mode & 0o7777:o}"
    return found


def test_second_node_joins_from_the_first_nodes_registry_over_tls_with_no_bundle_file(network, node_bundle, keys, tmp_path):  # noqa: F811
    require("containerd", "ctr", "runc", "openssl")
    first, second = network
    pki = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", pki, "--name", f"{SUBNET}.1", check=True)
    pub = keys["ed25519"] / "airlock.pub"
    env = {**os.environ, "AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log")}
    daemons, server = [], None
    try:
        one = Containerd(Path(f"/tmp/ctd-fa{os.getpid()}"), netns=first)
        daemons.append(one)
        config_one = tmp_path / "one.yaml"
        config_one.write_text(json.dumps({
            "nodeName": "cp1", "advertiseAddress": f"{SUBNET}.1",
            "registry": {"listen": f"{SUBNET}.1:5443", "tlsCert": str(pki / "registry.crt"), "tlsKey": str(pki / "registry.key"), "ca": str(pki / "ca.crt")},
        }))
        root_one = tmp_path / "one"
        init = netns(first, AIRLOCK, "init", node_bundle, "--key", pub, "--root", root_one, "--config", config_one,
                     "--ignore-preflight-errors", IGNORE, "--containerd-address", one.socket, env=env, timeout=600)
        assert init.returncode == 0, init.stderr
        server = subprocess.Popen(
            ["ip", "netns", "exec", first, AIRLOCK, "registry", "serve", "--store", str(root_one / "var/lib/airlock/store"),
             "--listen", f"{SUBNET}.1:5443", "--tls-cert", str(pki / "registry.crt"), "--tls-key", str(pki / "registry.key"), "--no-access-log"],
            stderr=subprocess.DEVNULL,
        )
        wait_for(first, f"{SUBNET}.1", 5443)
        two = Containerd(Path(f"/tmp/ctd-fb{os.getpid()}"), netns=second)
        daemons.append(two)
        config_two = tmp_path / "two.yaml"
        config_two.write_text(json.dumps({
            "nodeName": "worker1", "controlPlaneEndpoint": f"{SUBNET}.1:6443", "token": "abcdef.0123456789abcdef",
            "caCertHashes": ["sha256:" + "1" * 64],
        }))
        root_two = tmp_path / "two"
        source = f"https://{SUBNET}.1:5443"
        # Without the site CA the first node's certificate is refused, and nothing is written.
        untrusted = netns(second, AIRLOCK, "join", "--from", source, "--key", pub, "--root", root_two, "--config", config_two,
                          "--ignore-preflight-errors", IGNORE, "--containerd-address", two.socket, env=env, timeout=600)
        assert untrusted.returncode == 1 and "not trusted" in untrusted.stderr and "--ca" in untrusted.stderr
        assert not (root_two / "usr/local/bin").exists()
        join = netns(second, AIRLOCK, "join", "--from", source, "--ca", pki / "ca.crt", "--key", pub, "--root", root_two, "--config", config_two,
                     "--ignore-preflight-errors", IGNORE, "--containerd-address", two.socket, env=env, timeout=600)
        assert join.returncode == 0, join.stderr
        assert f"from {source} (airlock/bundle:" in join.stderr and "members" in join.stderr and "fetched" in join.stderr
        _, _, document = bundle_json(node_bundle)
        expected = {image["reference"]: image["digest"] for image in document["images"]}
        assert two.image_digests() == expected == one.image_digests()
        assert installed_files(root_two) == installed_files(root_one) and installed_files(root_two)
        hosts = (root_two / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
        assert f'[host."{source}"]' in hosts and f'ca = "{pki / "ca.crt"}"' in hosts
        # Only this node's members came over: no image blob, and the store holds the bundle's files only.
        blobs = {path.name for path in (root_two / "var/lib/airlock/store/blobs/sha256").iterdir()}
        image_blobs = {entry["sha256"] for entry in document["files"] if entry["path"].startswith("images/blobs/")}
        assert blobs and not blobs & image_blobs
        assert (root_two / f"var/lib/airlock/bundles/{document['serial']}.json").read_bytes() == bundle_json(node_bundle)[0]
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        for daemon in daemons:
            daemon.close()


def wait_for(namespace: str, host: str, port: int) -> None:
    import time

    deadline = time.monotonic() + 20
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    while netns(namespace, sys.executable, "-c", probe).returncode != 0:
        assert time.monotonic() < deadline, f"nothing listens on {host}:{port}"
        time.sleep(0.2)


class TlsDistribution:
    """CNCF distribution serving HTTPS on a loopback port with a certificate from `airlock registry cert`."""

    def __init__(self, root: Path, pki: Path):
        import shutil
        import time
        import urllib.request

        from tests.upstream import free_port

        root.mkdir(parents=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = root / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
            "http": {"addr": self.host, "tls": {"certificate": str(pki / "registry.crt"), "key": str(pki / "registry.key")}},
        }))
        self.process = subprocess.Popen([shutil.which("docker-registry"), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import ssl

        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"https://{self.host}/v2/", timeout=1, context=context):
                    return
            except OSError:
                assert time.monotonic() < deadline and self.process.poll() is None, "docker-registry did not start"
                time.sleep(0.1)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_a_node_joins_from_a_distribution_registry_after_push(bundle, keys, containerd, tmp_path):
    require("docker-registry", "containerd", "ctr", "runc")
    pki = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", pki, "--name", "127.0.0.1", check=True)
    site = TlsDistribution(tmp_path / "site", pki)
    pub = keys["ed25519"] / "airlock.pub"
    env = {"AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log"), "REQUESTS_CA_BUNDLE": str(pki / "ca.crt")}
    try:
        airlock("push", bundle, "--to", f"{site.host}/site", "--key", pub, "--work-dir", tmp_path / "work", env=env, check=True)
        config = tmp_path / "worker.yaml"
        config.write_text(json.dumps({"nodeName": "worker1", "controlPlaneEndpoint": "127.0.0.1:6443", "token": "abcdef.0123456789abcdef",
                                      "caCertHashes": ["sha256:" + "1" * 64]}))
        root = tmp_path / "node"
        join = airlock("join", "--from", f"https://{site.host}/site", "--ca", pki / "ca.crt", "--key", pub, "--root", root, "--config", config,
                       "--ignore-preflight-errors", IGNORE, "--containerd-address", containerd.socket, env=env)
        assert join.returncode == 0, join.stderr
        _, _, document = bundle_json(bundle)
        assert containerd.image_digests() == {image["reference"]: image["digest"] for image in document["images"]}
        hosts = (root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
        assert f'[host."https://{site.host}/v2/site"]' in hosts and "override_path = true" in hosts
        # The same binaries as a node installed from the file (its images are not the point here).
        reference = tmp_path / "reference"
        from_file = airlock("join", bundle, "--key", pub, "--root", reference, "--config", config, "--ignore-preflight-errors", IGNORE,
                            "--skip-phases", "images,kubeadm-join", env=env)
        assert from_file.returncode == 0, from_file.stderr
        assert installed_files(root) == installed_files(reference) and installed_files(root)
        # Only amd64 members came over: the arm64 binaries and every image blob stayed on the registry.
        stored = {path.name for path in (root / "var/lib/airlock/store/blobs/sha256").iterdir()}
        for entry in document["files"]:
            if "linux-arm64/" in entry["path"] or entry["path"].startswith("images/blobs/"):
                assert entry["sha256"] not in stored, entry["path"]
    finally:
        site.close()
