"""Nodes pull the bundle's images from `airlock registry serve`; real clients prove it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bundle.store import layout_index, read_layout_index
from tests.conftest import AIRLOCK, airlock, require
from tests.upstream import free_port


class Served:
    """`airlock registry serve` as a subprocess on a free loopback port."""

    def __init__(self, store: Path, tls: tuple[Path, Path] | None = None, log: Path | None = None):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        argv = [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", self.host]
        if tls:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.stderr = open(log or os.devnull, "wb")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket_connect(self.port):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("airlock registry serve did not start") from None
                time.sleep(0.1)

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def close(self) -> int:
        self.process.terminate()
        code = self.process.wait(15)
        self.stderr.close()
        return code


def socket_connect(port: int):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.fixture(scope="module")
def served(store):
    server = Served(store)
    yield server
    assert server.close() == 0  # SIGTERM is a clean stop


def mirror_toml(upstream: str, host: str, scheme: str = "http", ca: Path | None = None) -> str:
    text = f'server = "https://{upstream}"\n\n[host."{scheme}://{host}"]\n  capabilities = ["pull", "resolve"]\n'
    return text + (f'  ca = "{ca}"\n' if ca else "")


def bundle_images(bundle: Path) -> dict[str, str]:
    import tarfile

    with tarfile.open(bundle) as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
    return {image["reference"]: image["digest"] for image in manifest["images"]}


def test_containerd_pulls_every_image_through_the_mirror_and_runs_one(bundle, served, containerd):
    for upstream in ("registry.k8s.io", "docker.io"):
        containerd.hosts(upstream, mirror_toml(upstream, served.host))
    expected = bundle_images(bundle)
    for reference in expected:
        containerd.pull(reference, platforms="linux/amd64,linux/arm64")
    assert containerd.image_digests() == expected
    run = containerd.ctr("run", "--rm", "registry.k8s.io/pause:3.10", "probe", "/bin/busybox", "cat", "/etc/airlock-test-image")
    assert run.stdout.strip() == "registry.k8s.io/pause:3.10 amd64"


def test_skopeo_reads_and_copies_over_http(bundle, served, tmp_path):
    require("skopeo")
    for reference, digest in bundle_images(bundle).items():
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{served.host}/{reference}"], capture_output=True, check=True
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{served.host}/registry.k8s.io/etcd:3.5.15-0", f"oci:{tmp_path / 'copy'}:etcd"],
        check=True,
    )
    index = read_layout_index((tmp_path / "copy" / "index.json").read_bytes())
    assert index[0]["digest"] == bundle_images(bundle)["registry.k8s.io/etcd:3.5.15-0"]


def test_tls_with_the_generated_ca(bundle, store, containerd, tmp_path):
    require("skopeo", "openssl")
    certs = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", certs, "--name", "127.0.0.1", "--name", "registry.airlock.test", check=True)
    assert oct(os.stat(certs / "registry.key").st_mode & 0o777) == "0o600"
    assert oct(os.stat(certs / "ca.key").st_mode & 0o777) == "0o600"
    verify = subprocess.run(["openssl", "verify", "-CAfile", certs / "ca.crt", certs / "registry.crt"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    server = Served(store, tls=(certs / "registry.crt", certs / "registry.key"))
    try:
        trust = tmp_path / "trust"
        trust.mkdir()
        shutil.copy(certs / "ca.crt", trust / "ca.crt")
        out = subprocess.run(["skopeo", "inspect", "--cert-dir", str(trust), f"docker://{server.host}/registry.k8s.io/pause:3.10"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        # Without the CA the client refuses the certificate.
        untrusted = subprocess.run(["skopeo", "inspect", f"docker://{server.host}/registry.k8s.io/pause:3.10"], capture_output=True, text=True)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
        containerd.hosts("registry.k8s.io", mirror_toml("registry.k8s.io", server.host, "https", certs / "ca.crt"))
        containerd.pull("registry.k8s.io/kube-proxy:v1.31.4")
        assert containerd.image_digests()["registry.k8s.io/kube-proxy:v1.31.4"] == bundle_images(bundle)["registry.k8s.io/kube-proxy:v1.31.4"]
    finally:
        server.close()


def test_manifest_headers_range_and_paging(bundle, served):
    digest = bundle_images(bundle)["registry.k8s.io/pause:3.10"]
    status, headers, body = served.request("HEAD", "/v2/pause/manifests/3.10?ns=registry.k8s.io")
    assert status == 200 and body == b""
    assert headers["docker-content-digest"] == digest
    assert headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    assert headers["etag"] == f'"{digest}"'
    _, _, index = served.request("GET", f"/v2/registry.k8s.io/pause/manifests/{digest}")
    assert int(headers["content-length"]) == len(index)
    child = json.loads(index)["manifests"][0]["digest"]
    _, _, manifest = served.request("GET", f"/v2/pause/manifests/{child}?ns=registry.k8s.io")
    layer = json.loads(manifest)["layers"][0]
    status, headers, whole = served.request("GET", f"/v2/pause/blobs/{layer['digest']}?ns=registry.k8s.io")
    assert status == 200 and len(whole) == layer["size"]
    status, headers, part = served.request("GET", f"/v2/pause/blobs/{layer['digest']}?ns=registry.k8s.io", {"Range": "bytes=100-199"})
    assert status == 206 and part == whole[100:200] and headers["content-range"] == f"bytes 100-199/{layer['size']}"
    status, _, tail = served.request("GET", f"/v2/pause/blobs/{layer['digest']}?ns=registry.k8s.io", {"Range": "bytes=-10"})
    assert status == 206 and tail == whole[-10:]
    status, headers, body = served.request("GET", "/v2/_catalog?n=2")
    first = json.loads(body)["repositories"]
    assert status == 200 and len(first) == 2 and 'rel="next"' in headers["link"]
    _, _, body = served.request("GET", f"/v2/_catalog?n=100&last={first[-1]}")
    rest = json.loads(body)["repositories"]
    assert first + rest == sorted({reference.rsplit(":", 1)[0] for reference in bundle_images(bundle)})
    _, _, body = served.request("GET", "/v2/registry.k8s.io/etcd/tags/list")
    assert json.loads(body)["tags"] == ["3.5.15-0"]
    assert served.request("GET", "/healthz")[0] == 200


HOSTILE = [
    ("GET", "/v2/../../etc/passwd", 404, None),
    ("GET", "/v2/pause/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd?ns=registry.k8s.io", 400, "DIGEST_INVALID"),
    ("GET", "/v2/pause/blobs/sha256:../../../../etc/passwd?ns=registry.k8s.io", 404, None),
    ("GET", "/v2/pause/blobs/md5:abc?ns=registry.k8s.io", 400, "DIGEST_INVALID"),
    ("GET", "/v2/pause/blobs/sha256:" + "a" * 64 + "?ns=registry.k8s.io", 404, "BLOB_UNKNOWN"),
    ("GET", "/v2/pause/manifests/sha256:" + "A" * 64 + "?ns=registry.k8s.io", 400, "DIGEST_INVALID"),
    ("GET", "/v2/pause/manifests/..?ns=registry.k8s.io", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/pause/manifests/.INVALID_MANIFEST_NAME?ns=registry.k8s.io", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/pause/manifests/3.10?ns=../../etc", 400, "NAME_INVALID"),
    ("GET", "/v2/Pause/manifests/3.10?ns=registry.k8s.io", 400, "NAME_INVALID"),
    ("GET", "/v2/unknown/thing/manifests/latest", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/pause/manifests/9.99?ns=registry.k8s.io", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/_catalog?n=999999999999", 200, None),
    ("GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
    ("PUT", "/v2/pause/manifests/3.10?ns=registry.k8s.io", 405, "UNSUPPORTED"),
    ("POST", "/v2/pause/blobs/uploads/?ns=registry.k8s.io", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/pause/manifests/3.10?ns=registry.k8s.io", 405, "UNSUPPORTED"),
    ("PATCH", "/v2/pause/blobs/uploads/x", 405, "UNSUPPORTED"),
    ("GET", "/etc/passwd", 404, None),
]


@pytest.mark.parametrize("method, path, status, code", HOSTILE)
def test_hostile_requests(served, method, path, status, code):
    got, headers, body = served.request(method, path)
    assert got == status
    if code:
        assert json.loads(body)["errors"][0]["code"] == code
    assert b"root:" not in body


def test_a_blob_of_another_repository_is_not_served(bundle, served):
    _, _, index = served.request("GET", "/v2/registry.k8s.io/kube-proxy/manifests/v1.31.4")
    child = json.loads(index)["manifests"][0]["digest"]
    _, _, manifest = served.request("GET", f"/v2/registry.k8s.io/kube-proxy/manifests/{child}")
    own_layer = json.loads(manifest)["layers"][-1]["digest"]
    assert served.request("HEAD", f"/v2/registry.k8s.io/kube-proxy/blobs/{own_layer}")[0] == 200
    assert served.request("HEAD", f"/v2/registry.k8s.io/etcd/blobs/{own_layer}")[0] == 404


def test_a_new_index_is_picked_up_atomically(bundle, store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    server = Served(copy)
    try:
        assert server.request("HEAD", "/v2/registry.k8s.io/etcd/manifests/3.5.15-0")[0] == 200
        entries = [e for e in read_layout_index((copy / "index.json").read_bytes()) if "etcd" not in json.dumps(e)]
        (copy / "index.json.new").write_bytes(layout_index(entries))
        os.replace(copy / "index.json.new", copy / "index.json")
        assert server.request("HEAD", "/v2/registry.k8s.io/etcd/manifests/3.5.15-0")[0] == 404
        assert server.request("HEAD", "/v2/registry.k8s.io/pause/manifests/3.10")[0] == 200
    finally:
        server.close()


def test_push_into_distribution_then_containerd_pulls_from_it(bundle, keys, upstream, containerd, tmp_path):
    from tests.upstream import DockerRegistry

    target = DockerRegistry(tmp_path / "target")
    try:
        args = ["push", bundle, "--to", f"{target.host}/site", "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", tmp_path / "work"]
        first = airlock(*args, check=True)
        assert "hosts.toml" in first.stdout and "override_path = true" in first.stdout
        expected = bundle_images(bundle)
        for reference, digest in expected.items():
            name, tag = reference.rsplit(":", 1)
            assert target.manifest_digest("site/" + name.split("/", 1)[1], tag) == digest
        # A rerun moves nothing.
        again = airlock(*args, check=True)
        assert " 0 blobs uploaded, 0 mounted" in again.stdout
        for upstream_host in ("registry.k8s.io", "docker.io"):
            text = first.stdout.split(f"# /etc/containerd/certs.d/{upstream_host}/hosts.toml\n", 1)[1]
            text = text.split("\n# ", 1)[0].split("\nor, for", 1)[0]
            containerd.hosts(upstream_host, text)
        for reference in expected:
            containerd.pull(reference)
        assert containerd.image_digests() == expected
    finally:
        target.close()


def test_push_refuses_a_tampered_bundle(bundle, keys, tmp_path):
    copy = tmp_path / "t.tar"
    data = bytearray(bundle.read_bytes())
    data[-20000] ^= 1
    copy.write_bytes(bytes(data))
    result = airlock("push", copy, "--to", "127.0.0.1:1/x", "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", tmp_path / "w")
    assert result.returncode == 1 and "sha256" in result.stderr
    assert not (tmp_path / "w" / "index.json").exists()


def test_unknown_store_is_a_clear_error(tmp_path):
    result = airlock("registry", "serve", "--store", tmp_path, "--listen", "127.0.0.1:0")
    assert result.returncode == 1 and "no index.json" in result.stderr
