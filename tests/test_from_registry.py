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
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bundle.artifact import ARTIFACT_TYPE, EMPTY_DIGEST, REPOSITORY, TITLE
from tests.conftest import AIRLOCK, airlock, airlock_node, node_command, require
from tests.containerd import Containerd
from tests.test_install import IGNORE
from tests.test_two_nodes import SUBNET, netns, network  # noqa: F401  (the fixture)
from tests.test_upgrade import bundles, releases  # noqa: F401  (module fixtures: a full bundle and a delta on it)


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
    """docs/existing-registry.md's push and `skopeo inspect --raw` of the bundle artifact, at a local distribution."""
    require("skopeo")
    import oras.client

    manifest_bytes, signature, document = bundle_json(bundle)
    tag = f"{document['name']}-{document['serial']}"
    first = push(bundle, keys, f"{distribution.host}/site", tmp_path / "work")
    assert f"{distribution.host}/site/{REPOSITORY}:{tag}" in first.stdout
    # The node command it prints works on plain HTTP only with --insecure, so it says --insecure.
    assert f"nodes install from it: airlock-node join --from http://{distribution.host}/site --insecure --key airlock.pub --config node.yaml\n" in first.stdout
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
    """docs/multi-node.md's `--from` the first control plane, with existing-registry.md's `registry cert` and `registry
    serve` over TLS; cp1 and the worker are two network namespaces."""
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


@pytest.mark.parametrize("which", ["bundle", "node_bundle"])
def test_a_node_joins_from_a_distribution_registry_after_push(which, request, keys, containerd, tmp_path):
    """docs/multi-node.md's site registry: push, then a node joins `--from` it with the command push printed.
    Two-arch (every index pushed whole) and amd64-only (indexes narrowed by push, accepted by the images phase)."""
    require("docker-registry", "containerd", "ctr", "runc")
    bundle = request.getfixturevalue(which)
    pki = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", pki, "--name", "127.0.0.1", check=True)
    site = TlsDistribution(tmp_path / "site", pki)
    pub = keys["ed25519"] / "airlock.pub"
    env = {"AIRLOCK_STANDIN_LOG": str(tmp_path / "standin.log"), "REQUESTS_CA_BUNDLE": str(pki / "ca.crt")}
    try:
        pushed = airlock("push", bundle, "--to", f"{site.host}/site", "--key", pub, "--work-dir", tmp_path / "work", env=env, check=True)
        config = tmp_path / "worker.yaml"
        config.write_text(json.dumps({"nodeName": "worker1", "controlPlaneEndpoint": "127.0.0.1:6443", "token": "abcdef.0123456789abcdef",
                                      "caCertHashes": ["sha256:" + "1" * 64]}))
        root = tmp_path / "node"
        # The join command push printed, as written: the key and node.yaml where it says, plus the site CA it says to add.
        (hint,) = [line.split(": ", 1)[1].split("  (")[0] for line in pushed.stdout.splitlines() if line.startswith("nodes install from it: ")]
        argv = hint.split()
        assert argv[:2] == ["airlock-node", "join"] and "--insecure" not in argv
        shutil.copy(pub, tmp_path / "airlock.pub")
        shutil.copy(config, tmp_path / "node.yaml")
        join = subprocess.run([*node_command(), *argv[1:], "--ca", str(pki / "ca.crt"), "--root", str(root), "--ignore-preflight-errors", IGNORE,
                               "--containerd-address", str(containerd.socket)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**os.environ, **env})
        assert join.returncode == 0, join.stderr
        _, _, document = bundle_json(bundle)
        held = containerd.image_digests()
        assert set(held) == {image["reference"] for image in document["images"]}
        narrowed = 0
        for image in document["images"]:
            if held[image["reference"]] != image["digest"]:
                # Only an index push narrowed to the carried platforms, and the images phase said so.
                assert which == "node_bundle", image["reference"]
                assert f"{image['reference']}: {held[image['reference']]} is bundle.json's index {image['digest']} narrowed" in join.stdout + join.stderr
                narrowed += 1
        assert narrowed > 0 if which == "node_bundle" else narrowed == 0
        hosts = (root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
        assert f'[host."https://{site.host}/v2/site"]' in hosts and "override_path = true" in hosts
        # The same binaries as a node installed from the file (its images are not the point here).
        reference = tmp_path / "reference"
        from_file = airlock_node("join", bundle, "--key", pub, "--root", reference, "--config", config, "--ignore-preflight-errors", IGNORE,
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


class HostileRegistry:
    """A registry serving one bundle's artifact from memory, with faults a test switches on.

    `served` replaces the bytes served for a digest; `truncate` sends half of a blob then closes;
    `breaks` does that only for a digest's first N requests; `failures` answers a digest's first N requests
    with 503; `slow` trickles a blob out; `drip` sends a blob one byte every `drip_every` seconds.
    `location` answers blob requests with a 307 to that absolute URL instead; `challenge` answers every request
    without an Authorization header with 401 and that WWW-Authenticate value. `host` and `tls` (a server
    SSLContext) say where and how it listens; `authorizations` logs every Authorization header it got.
    """

    def __init__(self, bundle: Path, manifest_bytes: bytes | None = None, signature: bytes | None = None, host: str = "127.0.0.1", tls=None):
        import http.server
        import threading

        from bundle.artifact import EMPTY, build_artifact

        original, original_signature, _ = bundle_json(bundle)
        manifest_bytes = manifest_bytes if manifest_bytes is not None else original
        signature = signature if signature is not None else original_signature
        self.artifact = build_artifact(manifest_bytes, signature)
        self.blobs = {"sha256:" + hashlib.sha256(data).hexdigest(): data for data in [manifest_bytes, signature, EMPTY, *members(bundle).values()]}
        self.served: dict[str, bytes] = {}
        self.tag = self.artifact.tag  # the tag it lists and serves the artifact under
        self.truncate: set[str] = set()
        self.breaks: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.slow: str | None = None
        self.drip: str | None = None
        self.drip_every = 2.0
        self.location: str | None = None
        self.challenge: str | None = None
        self.authorizations: list[str] = []
        self.answers: dict[str, bytes] = {}  # "tags/list" or "manifests" -> the body served instead
        self.redirect = False  # blobs answered with 307 to /storage/<digest>, which refuses any Authorization
        self.log: list[tuple[str, str]] = []
        self.sent: dict[str, int] = {}
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                registry.log.append((self.path, self.headers.get("Range") or ""))
                if self.headers.get("Authorization"):
                    registry.authorizations.append(self.headers["Authorization"])
                elif registry.challenge:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", registry.challenge)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                prefix = f"/v2/{REPOSITORY}/"
                if self.path == prefix + "tags/list":
                    tags = json.dumps({"name": REPOSITORY, "tags": [registry.tag]}).encode()
                    return self.answer(200, registry.answers.get("tags/list", tags))
                if self.path == prefix + f"manifests/{registry.tag}":
                    return self.answer(200, registry.answers.get("manifests", registry.artifact.data), "application/vnd.oci.image.manifest.v1+json")
                digest = self.path[len(prefix + "blobs/"):] if self.path.startswith(prefix + "blobs/") else ""
                if registry.location and digest:
                    self.send_response(307)
                    self.send_header("Location", registry.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if registry.redirect and digest:
                    self.send_response(307)
                    self.send_header("Location", f"/storage/{digest}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.startswith("/storage/"):
                    if self.headers.get("Authorization"):
                        return self.answer(400, b"storage takes no registry credentials")
                    digest = self.path[len("/storage/"):]
                if digest not in registry.blobs:
                    return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                if registry.failures.get(digest):
                    registry.failures[digest] -= 1
                    return self.answer(503, b"busy")
                data = registry.served.get(digest, registry.blobs[digest])
                start = int(self.headers["Range"][len("bytes="):].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                broken = registry.breaks.get(digest, 0)
                if broken:
                    registry.breaks[digest] = broken - 1
                if digest in registry.truncate or broken:
                    body = body[: len(body) // 2]
                    self.close_connection = True
                import time

                step = 1 if registry.drip == digest else 64 if registry.slow == digest else len(body) or 1
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset : offset + step])
                    self.wfile.flush()
                    registry.sent[digest] = registry.sent.get(digest, 0) + len(body[offset : offset + step])
                    if registry.slow == digest:
                        time.sleep(0.05)
                    if registry.drip == digest:
                        time.sleep(registry.drip_every)

            def answer(self, status, data, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        from tests.upstream import free_port

        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.server = http.server.ThreadingHTTPServer((host, self.port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


UNPACK_ONLY = "binaries,runtime,registry,kubelet,images,kubeadm-join,done"


def join_from(url: str, keys, root: Path, tmp_path: Path, *extra: str, wait: bool = True):
    config = tmp_path / "worker.yaml"
    config.write_text(json.dumps({"nodeName": "worker1", "controlPlaneEndpoint": "127.0.0.1:6443", "token": "abcdef.0123456789abcdef",
                                  "caCertHashes": ["sha256:" + "1" * 64]}))
    args = ["join", "--from", url, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
            "--ignore-preflight-errors", IGNORE, "--skip-phases", UNPACK_ONLY, *extra]
    if not wait:
        return subprocess.Popen([AIRLOCK, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return airlock(*args)


def member_digest(bundle: Path, path: str) -> str:
    return "sha256:" + hashlib.sha256(members(bundle)[path]).hexdigest()


def stored(root: Path, data: bytes) -> bool:
    """The node store holds `data` under its digest (where a member fetched --from ends up)."""
    blob = root / "var/lib/airlock/store/blobs/sha256" / hashlib.sha256(data).hexdigest()
    return blob.is_file() and blob.read_bytes() == data


def nothing_outside_staging(root: Path) -> bool:
    blobs = root / "var/lib/airlock/store/blobs/sha256"
    return not (root / "usr").exists() and not (root / "etc").exists() and not (blobs.is_dir() and any(blobs.iterdir()))


@pytest.fixture
def hostile(node_bundle):
    registries = []

    def make(**kwargs) -> HostileRegistry:
        registries.append(HostileRegistry(node_bundle, **kwargs))
        return registries[-1]

    yield make
    for registry in registries:
        registry.close()


def test_plain_http_needs_insecure(hostile, keys, tmp_path):
    registry = hostile()
    result = join_from(registry.url, keys, tmp_path / "root", tmp_path)
    assert result.returncode == 1 and "--insecure" in result.stderr and not registry.log


@pytest.mark.parametrize("answer, words", [("tags/list", "not a tag list"), ("manifests", "not an airlock bundle artifact")])
def test_a_registry_answering_deeply_nested_json_is_refused_in_one_line(answer, words, hostile, keys, tmp_path):
    registry = hostile()
    registry.answers[answer] = b"[" * 100000 + b"]" * 100000  # past the JSON parser's recursion limit, under the size caps
    root = tmp_path / "root"
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("airlock: error:")]
    assert f"{registry.url}/v2/{REPOSITORY}/" in line and words in line
    assert nothing_outside_staging(root)


@pytest.mark.parametrize("change", ["signature", "bundle.json"])
def test_a_registry_serving_an_unsigned_bundle_json_is_refused(change, hostile, node_bundle, keys, tmp_path):
    manifest_bytes, signature, document = bundle_json(node_bundle)
    if change == "signature":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    else:
        document["serial"] += 1  # a newer-looking bundle.json that nobody signed
        manifest_bytes = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    registry = hostile(manifest_bytes=manifest_bytes, signature=signature)
    root = tmp_path / "root"
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 1
    assert "phase verify" in result.stderr and "served a bundle.json that its signature does not cover" in result.stderr
    # Nothing but bundle.json and its signature was asked for.
    head = {"sha256:" + hashlib.sha256(data).hexdigest() for data in (manifest_bytes, signature)}
    assert {path.rsplit("/", 1)[1] for path, _ in registry.log if "/blobs/" in path} == head
    assert nothing_outside_staging(root)


def test_bundle_json_bytes_that_are_not_what_the_artifact_names_are_refused(hostile, node_bundle, keys, tmp_path):
    manifest_bytes, _, _ = bundle_json(node_bundle)
    registry = hostile()
    registry.served["sha256:" + hashlib.sha256(manifest_bytes).hexdigest()] = manifest_bytes.replace(b'"serial":', b'"serial": ')
    result = join_from(registry.url, keys, tmp_path / "root", tmp_path, "--insecure")
    assert result.returncode == 1 and "bundle.json: " in result.stderr and "served bytes with digest" in result.stderr


@pytest.mark.parametrize("how", ["flipped", "swapped"])
def test_a_member_that_is_not_what_bundle_json_lists_is_refused_by_name(how, hostile, node_bundle, keys, tmp_path):
    files = members(node_bundle)
    kubelet = files["bin/linux-amd64/kubelet"]
    registry = hostile()
    if how == "flipped":
        bad = kubelet[:100] + bytes([kubelet[100] ^ 1]) + kubelet[101:]
    else:
        other = files["bin/linux-amd64/kubeadm"]
        bad = (other * (len(kubelet) // len(other) + 1))[: len(kubelet)]  # another member's bytes, repeated to the listed size
    registry.served[member_digest(node_bundle, "bin/linux-amd64/kubelet")] = bad
    root = tmp_path / "root"
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 1, result.stderr
    # Members with the same bytes (the stand-in kubelet and kubectl) are fetched once; the error names one of them.
    same = [name for name, data in files.items() if data == kubelet]
    assert any(f"phase unpack: {name}: sha256 is" in result.stderr for name in same) and "served a different member" in result.stderr
    assert nothing_outside_staging(root)


def test_a_truncated_blob_is_refused_by_name(hostile, node_bundle, keys, tmp_path):
    registry = hostile()
    digest = member_digest(node_bundle, "bin/linux-amd64/kubeadm")
    registry.truncate.add(digest)
    root = tmp_path / "root"
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 1
    assert "bin/linux-amd64/kubeadm: truncated:" in result.stderr and "rerun to resume" in result.stderr
    # Each retry asked only for what it still lacked.
    ranges = [header for path, header in registry.log if path.endswith(digest)]
    assert ranges[0] == "" and all(header.startswith("bytes=") for header in ranges[1:]) and len(set(ranges)) == len(ranges) > 2
    assert nothing_outside_staging(root)


def test_5xx_answers_and_a_broken_stream_are_retried_and_resumed(hostile, node_bundle, keys, tmp_path):
    registry = hostile()
    kubeadm, kubelet = member_digest(node_bundle, "bin/linux-amd64/kubeadm"), member_digest(node_bundle, "bin/linux-amd64/kubelet")
    registry.failures[kubeadm] = 2
    registry.breaks[kubelet] = 1
    root = tmp_path / "root"
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 0, result.stderr
    assert len([1 for path, _ in registry.log if path.endswith(kubeadm)]) == 3
    resumed = [header for path, header in registry.log if path.endswith(kubelet)]
    assert resumed[0] == "" and resumed[-1].startswith("bytes=") and int(resumed[-1][6:-1]) > 0
    assert stored(root, members(node_bundle)["bin/linux-amd64/kubelet"])


def test_blobs_redirected_to_storage_are_followed(hostile, node_bundle, keys, tmp_path):
    registry = hostile()
    registry.redirect = True
    registry.breaks[member_digest(node_bundle, "bin/linux-amd64/kubeadm")] = 1
    result = join_from(registry.url, keys, tmp_path / "root", tmp_path, "--insecure")
    assert result.returncode == 0, result.stderr
    assert any(path.startswith("/storage/") and header.startswith("bytes=") for path, header in registry.log)


def test_a_kill_during_the_fetch_resumes_on_rerun(hostile, node_bundle, keys, tmp_path):
    import signal
    import time

    files = members(node_bundle)
    biggest = max(files, key=lambda name: len(files[name]) if "/linux-amd64/" in name else 0)
    digest = "sha256:" + hashlib.sha256(files[biggest]).hexdigest()
    registry = hostile()
    registry.slow = digest
    root = tmp_path / "root"
    process = join_from(registry.url, keys, root, tmp_path, "--insecure", wait=False)
    deadline = time.monotonic() + 60
    partial = None
    while partial is None or partial.stat().st_size < len(files[biggest]) // 4:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read() if process.poll() is not None else "too slow"
        time.sleep(0.02)
        partial = next(iter((root / "var/lib/airlock/staging").glob(f"*/.fetch/{digest[7:]}")), None)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert 0 < partial.stat().st_size < len(files[biggest])
    assert nothing_outside_staging(root)
    registry.slow = None
    again = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert again.returncode == 0, again.stderr
    headers = [header for path, header in registry.log if path.endswith(digest)]
    assert headers[0] == "" and headers[-1].startswith("bytes=") and int(headers[-1][6:-1]) > 0
    assert stored(root, files[biggest])


WRITES = re.compile(r"^(\d+)\s+(?:write|pwrite64|writev|pwritev|pwritev2|sendfile|sendfile64)\(\d+<([^>]*)>(.*)$")
COPIES = re.compile(r"^(\d+)\s+copy_file_range\(\d+<[^>]*>, [^,]+, \d+<([^>]*)>(.*)$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$")
RESULT = re.compile(r"\)\s+=\s+(\d+)$")


def bytes_written(trace: Path) -> dict[str, int]:
    """Bytes each file was given, from `strace -f -y` of write, pwrite, writev, sendfile and copy_file_range (a rename
    writes none). With several threads a call is split over an `<unfinished ...>` line and a `<... resumed>` one."""
    written: dict[str, int] = {}
    pending: dict[str, str] = {}  # thread id -> the file of its unfinished call
    for line in trace.read_text(errors="replace").splitlines():
        if match := WRITES.match(line) or COPIES.match(line):
            thread, path, rest = match.groups()
            if rest.endswith("<unfinished ...>"):
                pending[thread] = path
                continue
        elif (match := RESUMED.match(line)) and match.group(1) in pending:
            thread, rest = match.groups()
            path = pending.pop(thread)
        else:
            continue
        if result := RESULT.search(rest):
            written[path] = written.get(path, 0) + int(result.group(1))
    return written


def test_a_member_fetched_from_a_registry_is_written_to_disk_once(hostile, node_bundle, keys, tmp_path):
    """Measured with strace: every byte `join --from` writes, summed per file, for the files a member's bytes go to
    (the partial fetch, a staged copy, the store blob). Each member this node needs is written once in all."""
    require("strace")
    files = {name: data for name, data in members(node_bundle).items() if name not in ("bundle.json", "bundle.json.sig")}  # the head is no member
    registry = hostile()
    root = tmp_path / "root"
    trace = tmp_path / "trace"
    config = tmp_path / "worker.yaml"
    config.write_text(json.dumps({"nodeName": "worker1", "controlPlaneEndpoint": "127.0.0.1:6443", "token": "abcdef.0123456789abcdef",
                                  "caCertHashes": ["sha256:" + "1" * 64]}))
    syscalls = "trace=write,pwrite64,writev,pwritev,pwritev2,sendfile,sendfile64,copy_file_range"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-y", "-s", "0", "-e", syscalls, "-o", str(trace), AIRLOCK, "join", "--from", registry.url, "--insecure",
         "--key", str(keys["ed25519"] / "airlock.pub"), "--root", str(root), "--config", str(config),
         "--ignore-preflight-errors", IGNORE, "--skip-phases", UNPACK_ONLY],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    written = bytes_written(trace)
    fetched = {path.rsplit("/", 1)[1] for path, _ in registry.log if "/blobs/sha256:" in path}
    needed = {hashlib.sha256(data).hexdigest(): data for data in files.values() if "sha256:" + hashlib.sha256(data).hexdigest() in fetched}
    assert any(len(data) > 1 << 16 for data in needed.values()) and all(stored(root, data) for data in needed.values())
    # Where member bytes may land: a partial fetch, a staged copy (or its temporary), the store (or its partial).
    # bundle.json, its signature and the run's own records are not members.
    records = ("state.json", "bundle.json", ".complete", ".lock", "artifact.json")
    airlock = str(root / "var/lib/airlock")
    members_written = {path: count for path, count in written.items() if path.startswith(airlock) and not any(record in path for record in records)}
    assert sum(members_written.values()) == sum(len(data) for data in needed.values()), members_written
    for digest, data in needed.items():
        assert members_written.get(f"{airlock}/staging/{next(iter(os.listdir(airlock + '/staging')))}/.fetch/{digest}") == len(data), digest


def test_members_the_store_already_holds_are_not_fetched(hostile, node_bundle, keys, tmp_path):
    """What an installed base has (its files are kept in the store by digest) does not move again."""
    files = members(node_bundle)
    kept = [name for name in files if "/linux-amd64/" in name][:3]
    root = tmp_path / "root"
    blobs = root / "var/lib/airlock/store/blobs/sha256"
    blobs.mkdir(parents=True)
    for name in kept:
        (blobs / hashlib.sha256(files[name]).hexdigest()).write_bytes(files[name])
    registry = hostile()
    result = join_from(registry.url, keys, root, tmp_path, "--insecure")
    assert result.returncode == 0, result.stderr
    asked = {path.rsplit("/", 1)[1] for path, _ in registry.log if "/blobs/" in path}
    assert asked and not asked & {member_digest(node_bundle, name) for name in kept}
    staged = next((root / "var/lib/airlock/staging").iterdir())
    for name in kept:  # nor are they copied again: the later phases read them from the store, hashed again
        assert stored(root, files[name]) and not (staged / name).exists()
    assert f"fetched {len(asked) - 2} of " in result.stderr  # bundle.json and its signature came first, in the verify phase


def test_the_first_node_serves_the_artifact_push_makes_even_after_a_prune(node_bundle, keys, tmp_path):
    require("skopeo")
    from bundle.artifact import build_artifact
    from tests.test_registry import Served
    from tests.upstream import free_port

    root = tmp_path / "cp1"
    config = tmp_path / "cp1.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "registry": {"listen": f"127.0.0.1:{free_port()}"}}))
    init = airlock("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
                   "--ignore-preflight-errors", IGNORE, "--skip-phases", "images,kubeadm-init,cni")
    assert init.returncode == 0, init.stderr
    airlock("store", "prune", "--root", root, check=True)
    manifest_bytes, signature, document = bundle_json(node_bundle)
    expected = build_artifact(manifest_bytes, signature)
    served = Served(root / "var/lib/airlock/store")
    try:
        status, _, body = served.request("GET", f"/v2/{REPOSITORY}/tags/list")
        assert status == 200 and json.loads(body)["tags"] == [f"{document['name']}-{document['serial']}"]
        status, headers, body = served.request("GET", f"/v2/{REPOSITORY}/manifests/{expected.tag}")
        assert status == 200 and body == expected.data and headers["docker-content-digest"] == expected.digest
        for layer in [json.loads(body)["config"], *json.loads(body)["layers"]]:
            status, _, blob = served.request("GET", f"/v2/{REPOSITORY}/blobs/{layer['digest']}")
            assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{served.host}/{REPOSITORY}:{expected.tag}"],
                             capture_output=True, check=True).stdout
        assert raw == expected.data
    finally:
        served.close()


def test_from_urls_tags_and_the_members_a_node_needs():
    from datetime import UTC, datetime

    from bundle.artifact import parse_tag, tag_for
    from bundle.manifest import FileEntry, Manifest
    from installer.remote import Origin, RemoteError, needed_members

    origin = Origin.parse("https://harbor.corp.example:8443/site/k8s", insecure=False)
    assert (origin.host, origin.prefix, origin.repository) == ("harbor.corp.example:8443", "site/k8s", "site/k8s/airlock/bundle")
    assert origin.mirror() == "https://harbor.corp.example:8443/v2/site/k8s"
    assert Origin.parse("https://10.0.0.10:5443/", insecure=False).mirror() == "https://10.0.0.10:5443"
    for bad, insecure in (("http://10.0.0.10:5000", False), ("ftp://x", True), ("https://user@x", False), ("https://x/UPPER", False), ("https://x?a=1", False)):
        with pytest.raises(RemoteError):
            Origin.parse(bad, insecure)
    assert Origin.parse("http://10.0.0.10:5000", insecure=True).scheme == "http"

    def entry(path: str) -> FileEntry:
        return FileEntry(path, "a" * 64, 1, 0o644)

    now = datetime(2026, 1, 1, tzinfo=UTC)
    files = ["bin/linux-amd64/kubeadm", "bin/linux-arm64/kubeadm", "cni/linux-arm64/cni.tgz", "cni/linux-amd64/cni.tgz",
             "manifests/kube-flannel.yml", "sbom.spdx.json", "images/index.json", "images/oci-layout", "images/blobs/sha256/" + "a" * 64]
    manifest = Manifest("my bundle/x", 7, now, now, "stable", "v1.36.4", ("linux/amd64", "linux/arm64"), {}, tuple(map(entry, files)), ())
    assert [e.path for e in needed_members(manifest, "amd64")] == [
        "bin/linux-amd64/kubeadm", "cni/linux-amd64/cni.tgz", "manifests/kube-flannel.yml", "sbom.spdx.json", "images/index.json", "images/oci-layout"]
    assert tag_for(manifest) == "my_bundle_x-7" and parse_tag("my_bundle_x-7") == ("my_bundle_x", 7) and parse_tag("latest") is None


def test_a_worker_upgrades_from_the_first_node_fetching_only_what_its_base_lacks(bundles, keys, tmp_path):  # noqa: F811
    """cp1 installs the full bundle, then the delta, from files; a worker joins --from cp1 at the full serial, then upgrades --from it."""
    from tests.test_install import node_config
    from tests.test_registry import Served
    from tests.test_upgrade import NEW, node
    from tests.upstream import free_port

    cp1, worker, log = tmp_path / "cp1", tmp_path / "worker", tmp_path / "standin.log"
    (tmp_path / "cp1-config").mkdir()
    (tmp_path / "worker-config").mkdir()
    config = node_config(tmp_path / "cp1-config", free_port())
    assert node("init", bundles["full"], keys, cp1, config, log, None, "--skip-phases", "images,kubeadm-init,cni").returncode == 0
    upgraded = node("upgrade", bundles["delta"], keys, cp1, config, log, None, "--skip-phases", "images")
    assert upgraded.returncode == 0, upgraded.stderr
    access = tmp_path / "access.log"
    served = Served(cp1 / "var/lib/airlock/store", log=access)
    try:
        source = ["--from", f"http://{served.host}", "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--root", worker,
                  "--config", node_config(tmp_path / "worker-config", free_port(), nodeName="worker1", controlPlaneEndpoint="127.0.0.1:6443",
                                          token="abcdef.0123456789abcdef", caCertHashes=["sha256:" + "1" * 64]),
                  "--ignore-preflight-errors", IGNORE]
        env = {"AIRLOCK_STANDIN_LOG": str(log), "AIRLOCK_STANDIN_SERVER_VERSION": NEW}
        # The newest serial there is the delta: a new node is told to install its base first.
        refused = airlock("join", *source, "--skip-phases", "images,kubeadm-join", env=env)
        assert refused.returncode == 1 and "install that base first" in refused.stderr
        full = bundle_json(bundles["full"])[2]
        joined = airlock("join", *source, "--tag", f"{full['name']}-{full['serial']}", "--skip-phases", "images,kubeadm-join", env=env)
        assert joined.returncode == 0, joined.stderr
        since = access.stat().st_size
        upgrade = airlock("upgrade", *source, "--skip-phases", "images", env=env)
        assert upgrade.returncode == 0, upgrade.stderr
        time.sleep(0.2)
        asked = {line.split('"')[1].split()[1].rsplit("/", 1)[1] for line in access.read_text()[since:].splitlines() if f"/v2/{REPOSITORY}/blobs/" in line}
    finally:
        served.close()
    old = {entry["sha256"] for entry in full["files"]}
    manifest_bytes, signature, delta = bundle_json(bundles["delta"])
    changed = {"sha256:" + entry["sha256"] for entry in delta["files"] if entry["sha256"] not in old and not entry["path"].startswith("images/blobs/")}
    head = {"sha256:" + hashlib.sha256(data).hexdigest() for data in (manifest_bytes, signature)}
    assert changed and asked == changed | head
    assert NEW in (worker / "usr/local/bin/kubelet").read_text()
    assert json.loads((worker / "var/lib/airlock/state.json").read_text())["installed"]["serial"] == delta["serial"]
