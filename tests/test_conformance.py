"""The OCI distribution spec's pull and discovery requirements, one by one, over HTTP and TLS.

Walks spec.md (opencontainers/distribution-spec) "Pull" and "Content
Discovery" and the conformance suite's read-only checks: status, headers,
body and digest for an OCI image manifest, an OCI image index and a Docker
schema 2 image, each in the store as a bundle leaves it. Each test names the
requirement it checks.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.conftest import airlock, require
from tests.ocilayout import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Layout
from tests.test_registry import Served

REPO = "registry.example/conformance/repo1"
OTHER = "registry.example/conformance/repo2"
KINDS = {"oci-manifest": ("oci", OCI_MANIFEST), "oci-index": ("index", OCI_INDEX), "docker-v2": ("docker", DOCKER_MANIFEST)}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client:
    def __init__(self, served: Served, context: ssl.SSLContext | None, ca: Path | None = None):
        self.served, self.context, self.ca = served, context, ca

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        if self.context is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.served.port, timeout=10)
        else:
            connection = http.client.HTTPSConnection("127.0.0.1", self.served.port, timeout=10, context=self.context)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    store = Layout(tmp_path_factory.mktemp("conformance-store"))
    for tag, (kind, _) in KINDS.items():
        store.add(f"{REPO}:{tag}", kind)
    # More tags on the same manifest, for listing and paging; and a second repository.
    for tag in ("Zulu", "alpha", "beta", "1.0"):
        store.add(f"{REPO}:{tag}", "oci")
    store.add(f"{OTHER}:only", "oci", payload_bytes=1000)
    return store


@pytest.fixture(scope="module", params=["http", "https"])
def client(request, layout, tmp_path_factory):
    context, tls, ca = None, None, None
    if request.param == "https":
        require("openssl")
        pki = tmp_path_factory.mktemp("conformance-pki")
        airlock("registry", "cert", "--ca-out", pki, "--name", "127.0.0.1", check=True)
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        tls, ca = (pki / "registry.crt", pki / "registry.key"), pki / "ca.crt"
    served = Served(layout.root, tls=tls)
    yield Client(served, context, ca)
    assert served.close() == 0


def error_code(body: bytes) -> str:
    """Spec "Error Codes": a JSON error body is {"errors": [{"code", "message", ...}]}."""
    document = json.loads(body)
    assert isinstance(document["errors"], list) and {"code", "message"} <= set(document["errors"][0])
    return document["errors"][0]["code"]


def test_end_1_the_api_root_answers_200(client):
    status, _, _ = client.request("GET", "/v2/")
    assert status == 200


@pytest.mark.parametrize("tag", KINDS)
def test_pulling_manifests_by_tag_and_digest(client, layout, tag):
    """GET /v2/<name>/manifests/<reference>: 200, the manifest, Content-Type its media type, Docker-Content-Digest its digest."""
    image = layout.images[f"{REPO}:{tag}"]
    for reference in (tag, image.digest):
        status, headers, body = client.request("GET", f"/v2/{REPO}/manifests/{reference}", {"Accept": ", ".join(kind for _, kind in KINDS.values())})
        assert status == 200
        assert body == image.manifest and digest_of(body) == image.digest
        assert headers["docker-content-digest"] == image.digest
        assert headers["content-type"] == KINDS[tag][1] == json.loads(body)["mediaType"]
        assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("tag", KINDS)
def test_checking_manifests_with_head(client, layout, tag):
    """HEAD: 200, Docker-Content-Digest, Content-Length the manifest's size, no body."""
    image = layout.images[f"{REPO}:{tag}"]
    for reference in (tag, image.digest):
        status, headers, body = client.request("HEAD", f"/v2/{REPO}/manifests/{reference}")
        assert status == 200 and body == b""
        assert headers["docker-content-digest"] == image.digest
        assert int(headers["content-length"]) == len(image.manifest)


def test_an_index_names_manifests_that_are_pullable_by_digest(client, layout):
    image = layout.images[f"{REPO}:oci-index"]
    assert len(image.children) == 2
    for child in image.children:
        status, headers, body = client.request("GET", f"/v2/{REPO}/manifests/{child}")
        assert status == 200 and digest_of(body) == child and headers["content-type"] == OCI_MANIFEST


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_manifest_not_found_is_404(client, method):
    """"If the manifest is not found in the repository, the response code MUST be 404" - whatever the reference looks like."""
    for reference in ("missing-tag", digest_of(b"nothing"), ".INVALID_MANIFEST_NAME", "-leading-dash", "x" * 129):
        status, _, body = client.request(method, f"/v2/{REPO}/manifests/{reference}")
        assert status == 404, reference
        if method == "GET":
            assert error_code(body) == "MANIFEST_UNKNOWN"
    # A malformed digest may be 400 or 404 (the conformance suite accepts either).
    status, _, _ = client.request("GET", f"/v2/{REPO}/manifests/sha256:baddigeststring")
    assert status in (400, 404)
    # A manifest of another repository is not in this one.
    other = client.request("HEAD", f"/v2/{OTHER}/manifests/only")[1]["docker-content-digest"]
    assert client.request("HEAD", f"/v2/{REPO}/manifests/{other}")[0] == 404


@pytest.mark.parametrize("tag", KINDS)
def test_pulling_blobs(client, layout, tag):
    """GET /v2/<name>/blobs/<digest>: 200, the blob (its digest), Docker-Content-Digest, Content-Length; HEAD the same without a body."""
    image = layout.images[f"{REPO}:{tag}"]
    assert image.blobs
    for digest, data in image.blobs.items():
        status, headers, body = client.request("GET", f"/v2/{REPO}/blobs/{digest}")
        assert status == 200 and body == data and digest_of(body) == digest
        assert headers["docker-content-digest"] == digest and int(headers["content-length"]) == len(data)
        status, headers, body = client.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(data) and headers["docker-content-digest"] == digest


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_blob_not_found_is_404(client, layout, method):
    shared = {digest for reference, image in layout.images.items() if reference.startswith(REPO + ":") for digest in image.blobs}
    own = next(digest for digest in layout.images[f"{OTHER}:only"].blobs if digest not in shared)  # its layer; the config is shared
    for digest in (digest_of(b"nothing"), own):
        status, _, body = client.request(method, f"/v2/{REPO}/blobs/{digest}")
        assert status == 404
        if method == "GET":
            assert error_code(body) == "BLOB_UNKNOWN"


def test_blob_ranges_as_the_conformance_suite_asks(client, layout):
    """RFC 9110 section 14 ranges, with the suite's cases: 206 + Content-Range + Content-Length, or 416 + bytes */size."""
    image = layout.images[f"{REPO}:oci-manifest"]
    digest, data = max(image.blobs.items(), key=lambda item: len(item[1]))
    size = len(data)
    assert size > 2000
    path = f"/v2/{REPO}/blobs/{digest}"
    for header, start, end in (("bytes=500-1499", 500, 1499), ("bytes=500-", 500, size - 1), ("bytes=-500", size - 500, size - 1), ("bytes=2000-999999", 2000, size - 1)):
        status, headers, body = client.request("GET", path, {"Range": header})
        assert status == 206, header
        assert body == data[start : end + 1] and int(headers["content-length"]) == end - start + 1
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
    for header in ("bytes=500-0", f"bytes={size}-{size + 1000}"):
        status, headers, _ = client.request("GET", path, {"Range": header})
        assert status == 416 and headers["content-range"] == f"bytes */{size}", header


def test_listing_tags_in_lexical_order(client, layout):
    """tags/list: 200, {"name", "tags"}, every tag, in lexical (case-insensitive) order."""
    status, headers, body = client.request("GET", f"/v2/{REPO}/tags/list")
    assert status == 200 and headers["content-type"] == "application/json"
    document = json.loads(body)
    expected = sorted((reference.rsplit(":", 1)[1] for reference in layout.images if reference.startswith(REPO + ":")), key=lambda tag: (tag.lower(), tag))
    assert document == {"name": REPO, "tags": expected}
    assert expected.index("alpha") < expected.index("beta") < expected.index("docker-v2") < expected.index("Zulu")


def test_paging_tags_with_n_last_and_link(client):
    _, _, body = client.request("GET", f"/v2/{REPO}/tags/list")
    everything = json.loads(body)["tags"]
    # n: exactly n results while more exist, and a Link rel="next" that leads through the rest.
    status, headers, body = client.request("GET", f"/v2/{REPO}/tags/list?n=2")
    assert status == 200 and json.loads(body)["tags"] == everything[:2]
    seen = json.loads(body)["tags"]
    while "link" in headers:
        assert headers["link"].endswith('>; rel="next"')
        status, headers, body = client.request("GET", headers["link"][1 : headers["link"].index(">")])
        assert status == 200
        seen += json.loads(body)["tags"]
    assert seen == everything
    # n=0: an empty list and no Link.
    status, headers, body = client.request("GET", f"/v2/{REPO}/tags/list?n=0")
    assert status == 200 and json.loads(body)["tags"] == [] and "link" not in headers
    # last: the tags after it, not including it.
    middle = everything[len(everything) // 2 - 1]
    _, _, body = client.request("GET", f"/v2/{REPO}/tags/list?last={middle}")
    assert json.loads(body)["tags"] == everything[len(everything) // 2 :]
    # A non-numeric n is refused.
    assert client.request("GET", f"/v2/{REPO}/tags/list?n=abc")[0] == 400


def test_tags_of_an_unknown_repository_are_404(client):
    status, _, body = client.request("GET", "/v2/registry.example/conformance/missing/tags/list")
    assert status == 404 and error_code(body) == "NAME_UNKNOWN"


def test_catalog_lists_repositories(client):
    status, headers, body = client.request("GET", "/v2/_catalog")
    assert status == 200 and json.loads(body)["repositories"] == [REPO, OTHER]
    status, headers, body = client.request("GET", "/v2/_catalog?n=1")
    assert json.loads(body)["repositories"] == [REPO] and 'rel="next"' in headers["link"]
    status, headers, body = client.request("GET", "/v2/_catalog?n=0")
    assert json.loads(body)["repositories"] == [] and "link" not in headers


def test_a_mirror_addresses_the_same_content_with_ns(client, layout):
    image = layout.images[f"{REPO}:docker-v2"]
    for path in ("/v2/conformance/repo1/manifests/docker-v2?ns=registry.example", f"/v2/{REPO}/manifests/docker-v2?ns=registry.example"):
        status, headers, _ = client.request("HEAD", path)
        assert status == 200 and headers["docker-content-digest"] == image.digest, path
    status, headers, _ = client.request("GET", "/v2/conformance/repo1/tags/list?n=1&ns=registry.example")
    assert "ns=registry.example" in headers["link"]


def test_writes_are_refused(client):
    for method, path in (("PUT", f"/v2/{REPO}/manifests/new"), ("POST", f"/v2/{REPO}/blobs/uploads/"), ("DELETE", f"/v2/{REPO}/manifests/alpha")):
        status, headers, _ = client.request(method, path)
        assert status == 405 and headers["allow"] == "GET, HEAD"


def test_skopeo_copies_each_kind(client, layout, tmp_path):
    """A real client reads all three kinds and verifies every digest on the way."""
    require("skopeo")
    tls = ["--src-tls-verify=false"]
    if client.ca is not None:
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "ca.crt").write_bytes(client.ca.read_bytes())
        tls = ["--src-cert-dir", str(tmp_path / "certs")]
    for tag in KINDS:
        target = tmp_path / tag
        # dir: keeps every manifest byte for byte (oci: would convert Docker schema 2).
        subprocess.run(["skopeo", "copy", "--quiet", "--all", *tls, f"docker://{client.served.host}/{REPO}:{tag}", f"dir:{target}"], check=True)
        assert digest_of((target / "manifest.json").read_bytes()) == layout.images[f"{REPO}:{tag}"].digest
