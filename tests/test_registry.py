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
from tests.upstream import COMPONENT_IMAGES, free_port

PAUSE_TAG, ETCD_TAG = COMPONENT_IMAGES["pause"], COMPONENT_IMAGES["etcd"]
PAUSE, ETCD = f"registry.k8s.io/pause:{PAUSE_TAG}", f"registry.k8s.io/etcd:{ETCD_TAG}"  # what the test bundles' kubeadm lists


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
    run = containerd.ctr("run", "--rm", PAUSE, "probe", "/bin/busybox", "cat", "/etc/airlock-test-image")
    assert run.stdout.strip() == f"{PAUSE} amd64"


def test_skopeo_reads_and_copies_over_http(bundle, served, tmp_path):
    require("skopeo")
    for reference, digest in bundle_images(bundle).items():
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{served.host}/{reference}"], capture_output=True, check=True
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{served.host}/{ETCD}", f"oci:{tmp_path / 'copy'}:etcd"],
        check=True,
    )
    index = read_layout_index((tmp_path / "copy" / "index.json").read_bytes())
    assert index[0]["digest"] == bundle_images(bundle)[ETCD]


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
        out = subprocess.run(["skopeo", "inspect", "--cert-dir", str(trust), f"docker://{server.host}/{PAUSE}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        # Without the CA the client refuses the certificate.
        untrusted = subprocess.run(["skopeo", "inspect", f"docker://{server.host}/{PAUSE}"], capture_output=True, text=True)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
        containerd.hosts("registry.k8s.io", mirror_toml("registry.k8s.io", server.host, "https", certs / "ca.crt"))
        containerd.pull("registry.k8s.io/kube-proxy:v1.36.4")
        assert containerd.image_digests()["registry.k8s.io/kube-proxy:v1.36.4"] == bundle_images(bundle)["registry.k8s.io/kube-proxy:v1.36.4"]
    finally:
        server.close()


def test_manifest_headers_range_and_paging(bundle, served):
    digest = bundle_images(bundle)[PAUSE]
    status, headers, body = served.request("HEAD", f"/v2/pause/manifests/{PAUSE_TAG}?ns=registry.k8s.io")
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
    assert json.loads(body)["tags"] == [COMPONENT_IMAGES["etcd"]]
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
    ("GET", f"/v2/pause/manifests/{PAUSE_TAG}?ns=../../etc", 400, "NAME_INVALID"),
    ("GET", "/v2/Pause/manifests/3.10?ns=registry.k8s.io", 400, "NAME_INVALID"),
    ("GET", "/v2/unknown/thing/manifests/latest", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/pause/manifests/9.99?ns=registry.k8s.io", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/_catalog?n=999999999999", 200, None),
    ("GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
    ("PUT", f"/v2/pause/manifests/{PAUSE_TAG}?ns=registry.k8s.io", 405, "UNSUPPORTED"),
    ("POST", "/v2/pause/blobs/uploads/?ns=registry.k8s.io", 405, "UNSUPPORTED"),
    ("DELETE", f"/v2/pause/manifests/{PAUSE_TAG}?ns=registry.k8s.io", 405, "UNSUPPORTED"),
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
    _, _, index = served.request("GET", "/v2/registry.k8s.io/kube-proxy/manifests/v1.36.4")
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
        assert server.request("HEAD", f"/v2/registry.k8s.io/etcd/manifests/{COMPONENT_IMAGES['etcd']}")[0] == 200
        entries = [e for e in read_layout_index((copy / "index.json").read_bytes()) if "etcd" not in json.dumps(e)]
        (copy / "index.json.new").write_bytes(layout_index(entries))
        os.replace(copy / "index.json.new", copy / "index.json")
        assert server.request("HEAD", f"/v2/registry.k8s.io/etcd/manifests/{COMPONENT_IMAGES['etcd']}")[0] == 404
        assert server.request("HEAD", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}")[0] == 200
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


# --- the store may hold what a signed bundle put there, sloppy or not: refuse that image, serve the rest


def add_image(store: Path, reference: str, manifest: bytes) -> str:
    """Put `manifest` into a store as the image `reference` (as a signed bundle could); its digest."""
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (store / "blobs/sha256" / digest[7:]).write_bytes(manifest)
    entries = read_layout_index((store / "index.json").read_bytes())
    entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest),
                    "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference}})  # fmt: skip
    (store / "index.json.new").write_bytes(layout_index(entries))
    os.replace(store / "index.json.new", store / "index.json")
    return digest


def test_unservable_manifests_are_refused_with_a_reason_and_the_rest_is_served(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    add_image(copy, "registry.k8s.io/not-an-object:1", b"[1, 2, 3]")
    add_image(copy, "registry.k8s.io/not-json:1", b"\x00\x01")
    crlf = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json\r\nX-Injected: yes", "config": {}, "layers": []})
    add_image(copy, "registry.k8s.io/split-header:1", crlf.encode())
    add_image(copy, "registry.k8s.io/layers-not-a-list:1", json.dumps({"schemaVersion": 2, "config": {}, "layers": "abc"}).encode())
    log = tmp_path / "serve.log"
    server = Served(copy, log=log)  # a crash at start would fail here
    try:
        assert server.request("HEAD", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}")[0] == 200
        for name in ("not-an-object", "not-json", "split-header", "layers-not-a-list"):
            status, headers, _ = server.request("GET", f"/v2/registry.k8s.io/{name}/manifests/1")
            assert status == 404 and "x-injected" not in headers
    finally:
        assert server.close() == 0
    text = log.read_text()
    for name in ("not-an-object", "not-json", "split-header", "layers-not-a-list"):
        assert f"refusing image registry.k8s.io/{name}:1" in text


def test_a_symlinked_blob_is_not_followed_out_of_the_store(bundle, store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    server = Served(copy)
    try:
        _, _, index = server.request("GET", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}")
        child = json.loads(index)["manifests"][0]["digest"]
        _, _, manifest = server.request("GET", f"/v2/registry.k8s.io/pause/manifests/{child}")
        layer = json.loads(manifest)["layers"][0]["digest"]
        outside = tmp_path / "outside"
        outside.write_text("root:x:0:0:secret\n")
        blob = copy / "blobs/sha256" / layer[7:]
        blob.unlink()
        blob.symlink_to(outside)
        status, _, body = server.request("GET", f"/v2/registry.k8s.io/pause/blobs/{layer}")
        assert status == 404 and b"secret" not in body
        # A fifo in its place neither blocks the server nor is served.
        blob.unlink()
        os.mkfifo(blob)
        assert server.request("GET", f"/v2/registry.k8s.io/pause/blobs/{layer}")[0] == 404
        # The blob directory itself a symlink: nothing under it is served either.
        blobs = copy / "blobs"
        os.rename(blobs, tmp_path / "real-blobs")
        blobs.symlink_to(tmp_path / "real-blobs")
        assert server.request("GET", f"/v2/registry.k8s.io/pause/blobs/{json.loads(manifest)['config']['digest']}")[0] == 404
    finally:
        server.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout): everything it answered."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def test_range_edges(bundle, served):
    _, _, index = served.request("GET", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}")
    child = json.loads(index)["manifests"][0]["digest"]
    _, _, manifest = served.request("GET", f"/v2/registry.k8s.io/pause/manifests/{child}")
    layer = json.loads(manifest)["layers"][0]
    path, size = f"/v2/registry.k8s.io/pause/blobs/{layer['digest']}", layer["size"]
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=500-0", "bytes=-0", "items=0-1", "bytes=" + "9" * 5000 + "-"):
        status, headers, _ = served.request("GET", path, {"Range": header})
        assert status == 416 and headers["content-range"] == f"bytes */{size}", header
    status, headers, body = served.request("GET", path, {"Range": "bytes=0-" + "9" * 5000})
    assert status == 206 and len(body) == size and headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    status, _, body = served.request("GET", path, {"Range": "bytes=-" + "9" * 5000})
    assert status == 206 and len(body) == size


def test_a_request_body_is_refused_never_read_as_the_next_request(served):
    smuggled = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
    for framing in (f"Content-Length: {len(smuggled)}\r\n".encode(), b"Transfer-Encoding: chunked\r\n"):
        answer = raw_exchange(served.port, b"GET /v2/registry.k8s.io/pause/manifests/" + PAUSE_TAG.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + smuggled)
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    # The same pipelined without a body is answered twice: the refusal above is not a parser that stops early.
    answer = raw_exchange(served.port, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled.replace(b"Host: x", b"Host: x\r\nConnection: close"))
    assert answer.count(b"HTTP/1.1 200 ") == 2


def test_the_access_log_escapes_what_the_client_sent(store, tmp_path):
    log = tmp_path / "access.log"
    server = Served(store, log=log)
    try:
        raw_exchange(server.port, b"GET /v2/\x1b]0;pwned\x07 HTTP/1.1\r\n\r\n")
        raw_exchange(server.port, b'GET /v2/x"\\%1b[31m/manifests/1 HTTP/1.1\r\nConnection: close\r\n\r\n')
    finally:
        server.close()
    text = log.read_bytes()
    assert b"\x1b" not in text and b"\x07" not in text
    assert b'"GET /v2/x\\x22\\x5c%1b[31m/manifests/1" 400' in text


def test_spec_details_tags_catalog_and_a_prefixed_mirror(bundle, served):
    # n=0: an empty list and no Link to follow.
    for path in ("/v2/_catalog?n=0", "/v2/pause/tags/list?n=0&ns=registry.k8s.io"):
        status, headers, body = served.request("GET", path)
        assert status == 200 and "link" not in headers and [] in json.loads(body).values()
    status, headers, body = served.request("GET", "/v2/_catalog?n=1")
    assert headers["link"].startswith("</v2/_catalog?n=1&last=")
    # containerd's prefixed form: /v2/{host}/{repo}/... and ?ns={host} together, and each alone.
    digest = bundle_images(bundle)[PAUSE]
    for path in (f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}?ns=registry.k8s.io", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}", f"/v2/pause/manifests/{PAUSE_TAG}?ns=registry.k8s.io"):
        status, headers, _ = served.request("HEAD", path)
        assert status == 200 and headers["docker-content-digest"] == digest, path
    status, _, _ = served.request("HEAD", "/v2/docker.io/library/busybox/manifests/1.36?ns=docker.io")
    assert status == 200


def test_tags_are_listed_in_lexical_order_and_paged_with_ns(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    entries = read_layout_index((copy / "index.json").read_bytes())
    pause = next(e for e in entries if e["annotations"]["io.containerd.image.name"] == PAUSE)
    for tag in ("B", "a", "Zeta", "_x", "10"):
        reference = f"registry.k8s.io/pause:{tag}"
        entries.append({**pause, "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference}})
    (copy / "index.json").write_bytes(layout_index(entries))
    server = Served(copy)
    try:
        _, _, body = server.request("GET", "/v2/pause/tags/list?ns=registry.k8s.io")
        tags = json.loads(body)["tags"]
        assert tags == ["10", PAUSE_TAG, "_x", "a", "B", "Zeta"]
        status, headers, body = server.request("GET", "/v2/pause/tags/list?n=2&ns=registry.k8s.io")
        assert json.loads(body)["tags"] == ["10", PAUSE_TAG]
        link = headers["link"]
        assert link == f'</v2/pause/tags/list?n=2&last={PAUSE_TAG}&ns=registry.k8s.io>; rel="next"'
        seen = json.loads(body)["tags"]
        while "link" in headers:
            status, headers, body = server.request("GET", headers["link"].split(">")[0][1:])
            seen += json.loads(body)["tags"]
        assert seen == tags
    finally:
        server.close()


def test_containerd_pulls_through_a_prefixed_mirror_host(bundle, served, containerd):
    """The hosts.toml `push` prints for a prefix: the path names the upstream host, and containerd still adds ?ns=."""
    for upstream in ("registry.k8s.io", "docker.io"):
        # The fallback answers nothing (the discard port), so only the prefixed host can have served the pull.
        text = f'server = "http://127.0.0.1:9"\n\n[host."http://{served.host}/v2/{upstream}"]\n  capabilities = ["pull", "resolve"]\n  override_path = true\n'
        containerd.hosts(upstream, text)
    expected = bundle_images(bundle)
    for reference in (PAUSE, "docker.io/library/busybox:1.36"):
        containerd.pull(reference)
        assert containerd.image_digests()[reference] == expected[reference]


def render_unit(tmp_path: Path, tls: bool) -> Path:
    from installer.phases.registry import registry_unit

    text = registry_unit([AIRLOCK], "0.0.0.0:5443" if tls else "127.0.0.1:5000", "/etc/airlock/pki/registry.crt" if tls else "", "/etc/airlock/pki/registry.key" if tls else "")
    unit = tmp_path / f"{'tls' if tls else 'plain'}" / "airlock-registry.service"
    unit.parent.mkdir()
    unit.write_text(text)
    return unit


@pytest.mark.parametrize("tls", [False, True])
def test_the_registry_unit_passes_systemd_analyze_verify(tmp_path, tls):
    require("systemd-analyze")
    unit = render_unit(tmp_path, tls)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    text = unit.read_text()
    for limit in ("LimitNOFILE=", "MemoryMax=", "TasksMax=", "DynamicUser=yes"):
        assert limit in text
    # The key stays root-only: the unprivileged service gets it as a credential, never as a path to read.
    assert ("LoadCredential=tls.key:/etc/airlock/pki/registry.key" in text) == tls
    assert "--tls-key" not in text and ("--tls-credentials" in text) == tls


def test_the_unit_refuses_paths_that_would_change_it(tmp_path):
    from installer.node import NodeError
    from installer.phases.registry import registry_unit

    for cert, listen in (("/etc/a.crt\nExecStartPre=+/bin/sh", "127.0.0.1:5000"), ("relative.crt", "127.0.0.1:5000"), ("/a b.crt", "127.0.0.1:5000"), ("", "1.2.3.4:5000\nExecStartPre=+/x")):
        with pytest.raises(NodeError):
            registry_unit([AIRLOCK], listen, cert, "/etc/a.key" if cert else "")


def test_tls_from_systemd_credentials(bundle, store, tmp_path):
    """What LoadCredential= gives the service: a private directory with tls.crt and tls.key, named by $CREDENTIALS_DIRECTORY."""
    require("openssl")
    certs = tmp_path / "pki"
    airlock("registry", "cert", "--ca-out", certs, "--name", "127.0.0.1", check=True)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    shutil.copy(certs / "registry.crt", credentials / "tls.crt")
    shutil.copy(certs / "registry.key", credentials / "tls.key")
    port = free_port()
    argv = [AIRLOCK, "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--tls-credentials"]
    missing = subprocess.run(argv, capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}, timeout=30)
    assert missing.returncode == 1 and "CREDENTIALS_DIRECTORY" in missing.stderr
    process = subprocess.Popen(argv, env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}, stderr=subprocess.PIPE, text=True)
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        deadline = time.monotonic() + 15
        while True:
            try:
                connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
                connection.request("HEAD", f"/v2/registry.k8s.io/pause/manifests/{PAUSE_TAG}")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Docker-Content-Digest") == bundle_images(bundle)[PAUSE]
        connection.close()
    finally:
        process.terminate()
        process.wait(15)
