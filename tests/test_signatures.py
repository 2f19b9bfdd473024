"""Kubernetes' own signatures, verified at build: binaries (.sig/.cert, keyless) and images (cosign signatures beside them).

The upstream here signs with tests/standin/sigstore.py, a stand-in for Fulcio, a CT log and
Rekor; sigstore-python's verifier accepting its output (the first test) is what shows its
formats are the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tarfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TOOLS, airlock, build, require
from tests.standin.sigstore import KUBERNETES_BINARIES, KUBERNETES_IMAGES
from tests.test_build import manifest_of
from tests.upstream import LocalUpstream

MALLORY = ("mallory@example.com", "https://accounts.google.com")


@pytest.fixture(scope="module")
def signed_upstream(tmp_path_factory):
    require(*TOOLS)
    local = LocalUpstream(tmp_path_factory.mktemp("signed-upstream"), versions=("v1.36.4",), labels={"stable-1.36": "v1.36.4"}, signed=True, extra_images={}).start()
    yield local
    local.close()


def sigstore_verify(root: Path, data: bytes, bundle, identity: tuple[str, str]) -> None:
    """sigstore-python's verifier, given only the stand-in's trusted_root.json."""
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier, policy

    Verifier(trusted_root=TrustedRoot.from_file(str(root))).verify_artifact(data, bundle, policy.Identity(identity=identity[0], issuer=identity[1]))


def rekor_answer(upstream: LocalUpstream, index: int) -> dict:
    import urllib.request

    uuid = upstream.signing.rekor.uuid(index)
    with urllib.request.urlopen(f"{upstream.signing.rekor.url}/api/v1/log/entries/{uuid}", timeout=10) as response:
        return json.loads(response.read())


def test_sigstore_python_accepts_what_the_standin_publishes(signed_upstream):
    """A binary's .sig/.cert as cosign writes them, with its Rekor entry as the stand-in's API serves it, read by sigstore-python's own parsers."""
    from cryptography import x509
    from sigstore.models import Bundle, TransparencyLogEntry
    from sigstore.verify import Verifier

    binary = signed_upstream.release_file("v1.36.4", "arm64", "kubelet")
    data = binary.read_bytes()
    signature = base64.b64decode(Path(f"{binary}.sig").read_bytes())
    certificate = x509.load_pem_x509_certificate(base64.b64decode(Path(f"{binary}.cert").read_bytes()))
    index = signed_upstream.signing.rekor.by_hash[hashlib.sha256(data).hexdigest()][0]
    entry = TransparencyLogEntry._from_v1_response(rekor_answer(signed_upstream, index))
    root = signed_upstream.signing.trusted_root_path
    sigstore_verify(root, data, Bundle.from_parts(certificate, signature, entry), KUBERNETES_BINARIES)
    # And it is as strict with the stand-in as with Sigstore: other bytes, or another identity, are refused.
    from sigstore.errors import VerificationError

    with pytest.raises(VerificationError):
        sigstore_verify(root, data + b"x", Bundle.from_parts(certificate, signature, entry), KUBERNETES_BINARIES)
    with pytest.raises(VerificationError):
        sigstore_verify(root, data, Bundle.from_parts(certificate, signature, entry), MALLORY)
    assert Verifier  # imported for its side effect of checking the module loads with this cryptography


def test_a_signed_release_is_verified_recorded_and_its_evidence_carried(signed_upstream, keys, tmp_path):
    from sigstore.models import Bundle

    out = tmp_path / "k8s.tar"
    result = build(signed_upstream, keys, out, "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64", check=True)
    assert "verified 10 upstream signatures in " in result.stderr  # 3 binaries, 7 registry.k8s.io images
    manifest = manifest_of(out)
    files = {entry["path"]: entry for entry in manifest["files"]}
    with tarfile.open(out) as archive:
        members = {name: archive.extractfile(name).read() for name in archive.getnames() if name.startswith("provenance/")}
    for name in ("kubeadm", "kubelet", "kubectl"):
        entry = files[f"bin/linux-amd64/{name}"]
        record = entry["provenance"]
        assert record["kind"] == "signed" and record["signer"] == "Kubernetes release engineering"
        assert (record["identity"], record["issuer"]) == KUBERNETES_BINARIES
        assert record["detail"] == entry["source"] + ".sig" and isinstance(record["log_index"], int)
        # The carried evidence is a Sigstore bundle that sigstore-python verifies offline against the carried trust root.
        evidence = members[record["evidence"]]
        assert json.loads(evidence)["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
        data = signed_upstream.release_file("v1.36.4", "amd64", name).read_bytes()
        root = tmp_path / "trusted_root.json"
        root.write_bytes(members["provenance/trusted_root.json"])
        sigstore_verify(root, data, Bundle.from_json(evidence), KUBERNETES_BINARIES)
    assert hashlib.sha256(members["provenance/trusted_root.json"]).hexdigest() == manifest["provenance"]["trusted_root_sha256"]
    assert members["provenance/trusted_root.json"] == signed_upstream.signing.trusted_root_path.read_bytes()
    # The rest keeps what vouched for it before: published checksums.
    assert files["bin/linux-amd64/runc"]["provenance"]["kind"] == "published-sha256"


@contextmanager
def replaced(*paths: Path):
    """Put these upstream files back as they were, whatever the test did to them."""
    saved = {path: path.read_bytes() for path in paths}
    try:
        yield
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def flip_a_byte(upstream: LocalUpstream, binary: Path) -> None:
    """Change the binary and its .sha256 (so only the signature can tell)."""
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 1
    binary.write_bytes(bytes(data))
    Path(f"{binary}.sha256").write_text(hashlib.sha256(bytes(data)).hexdigest() + "\n")


BINARY_CASES = {
    "flipped byte": ("kubectl", lambda up, path: flip_a_byte(up, path), "the signature does not verify for these bytes"),
    "another identity": ("kubelet", lambda up, path: up.signing.sign_file(path, MALLORY), "the certificate is for mallory@example.com"),
    "another CA": ("kubeadm", lambda up, path: up.signing.sign_file(path, ca=up.signing.rogue), "does not chain to a certificate authority of the trust root"),
    "not in the log": ("kubectl", lambda up, path: up.signing.sign_file(path, logged=False), "no transparency-log entry"),
}


@pytest.mark.parametrize("case", sorted(BINARY_CASES))
def test_a_binary_signature_that_does_not_verify_stops_the_build_naming_the_file(signed_upstream, keys, tmp_path, case):
    name, spoil, reason = BINARY_CASES[case]
    binary = signed_upstream.release_file("v1.36.4", "amd64", name)
    with replaced(binary, Path(f"{binary}.sha256"), Path(f"{binary}.sig"), Path(f"{binary}.cert")):
        spoil(signed_upstream, binary)
        result = build(signed_upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"airlock: error: bin/linux-amd64/{name}: its upstream signature (") and reason in line, line
    assert not (tmp_path / "k8s.tar").exists()


def test_a_signature_without_its_certificate_is_refused_and_an_absent_one_is_recorded(signed_upstream, keys, tmp_path):
    binary = signed_upstream.release_file("v1.36.4", "amd64", "kubelet")
    with replaced(Path(f"{binary}.sig"), Path(f"{binary}.cert")):
        Path(f"{binary}.cert").unlink()
        result = build(signed_upstream, keys, tmp_path / "a.tar", "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64")
        assert result.returncode == 1 and "kubelet.sig is published but" in result.stderr and "kubelet.cert is not" in result.stderr
        Path(f"{binary}.sig").unlink()
        # A fresh cache: a signature once fetched is remembered by its URL, as release files are.
        build(signed_upstream, keys, tmp_path / "b.tar", "v1.36.4", tmp_path / "cache2", "--cni", "none", "--arch", "amd64", check=True)
        refused = build(signed_upstream, keys, tmp_path / "c.tar", "v1.36.4", tmp_path / "cache2", "--cni", "none", "--arch", "amd64", "--require", "signed")
    kubelet = next(f for f in manifest_of(tmp_path / "b.tar")["files"] if f["path"] == "bin/linux-amd64/kubelet")
    assert kubelet["provenance"]["kind"] == "published-sha256"
    assert refused.returncode == 1 and "bin/linux-amd64/kubelet (published checksum)" in refused.stderr


def test_a_warm_rebuild_asks_neither_the_release_server_for_signatures_nor_the_log_again(signed_upstream, keys, tmp_path):
    cache = tmp_path / "cache"
    build(signed_upstream, keys, tmp_path / "a.tar", "v1.36.4", cache, "--cni", "none", "--arch", "amd64", check=True)
    signed_upstream.server.clear()
    signed_upstream.signing.rekor.requests.clear()
    build(signed_upstream, keys, tmp_path / "b.tar", "v1.36.4", cache, "--cni", "none", "--arch", "amd64", check=True)
    assert not [r.path for r in signed_upstream.server.requests if r.path.endswith((".sig", ".cert"))]
    assert signed_upstream.signing.rekor.requests == []
    shutil.rmtree(tmp_path / "cache")


def test_sigstore_python_accepts_the_standins_image_signatures(signed_upstream):
    """cosign's signature manifest as the stand-in pushes it: its payload, signature and certificate annotations, and the
    Rekor bundle annotation equal to the log's own entry, verify with sigstore-python (given the entry's inclusion proof)."""
    import urllib.request

    from cryptography import x509
    from sigstore.models import Bundle, TransparencyLogEntry

    registry = signed_upstream.registry.url
    digest = signed_upstream.upstream_digest("registry.k8s.io/kube-apiserver:v1.36.4")
    request = urllib.request.Request(
        f"{registry}/v2/kube-apiserver/manifests/{digest.replace(':', '-')}.sig", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.loads(response.read())
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    with urllib.request.urlopen(f"{registry}/v2/kube-apiserver/blobs/{layer['digest']}", timeout=10) as response:
        payload = response.read()
    assert json.loads(payload)["critical"] == {
        "identity": {"docker-reference": "registry.k8s.io/kube-apiserver"},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature",
    }
    annotations = layer["annotations"]
    rekor_bundle = json.loads(annotations["dev.sigstore.cosign/bundle"])
    answer = rekor_answer(signed_upstream, rekor_bundle["Payload"]["logIndex"])
    (logged,) = answer.values()
    assert {key: rekor_bundle["Payload"][key] for key in ("body", "integratedTime", "logIndex", "logID")} == {
        key: logged[key] for key in ("body", "integratedTime", "logIndex", "logID")
    }
    certificate = x509.load_pem_x509_certificate(annotations["dev.sigstore.cosign/certificate"].encode())
    entry = TransparencyLogEntry._from_v1_response(answer)
    bundle = Bundle.from_parts(certificate, base64.b64decode(annotations["dev.cosignproject.cosign/signature"]), entry)
    sigstore_verify(signed_upstream.signing.trusted_root_path, payload, bundle, KUBERNETES_IMAGES)
    # The annotation's SET (ECDSA: a fresh signature each time it is made) signs what sigstore-python calls the entry's canonical form.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signed_upstream.signing.rekor.key.public_key().verify(
        base64.b64decode(rekor_bundle["SignedEntryTimestamp"]), entry._encode_canonical(), ec.ECDSA(hashes.SHA256())
    )


def test_signed_images_are_recorded_with_the_signed_payload_carried(signed_upstream, keys, tmp_path):
    from bundle.keyless import Evidence, Expected, TrustRoot, signed_image, verify

    out = tmp_path / "k8s.tar"
    build(signed_upstream, keys, out, "v1.36.4", tmp_path / "cache", "--arch", "amd64", check=True)
    manifest = manifest_of(out)
    with tarfile.open(out) as archive:
        members = {name: archive.extractfile(name).read() for name in archive.getnames() if name.startswith("provenance/")}
    root = TrustRoot.parse(members["provenance/trusted_root.json"], "root")
    for image in manifest["images"]:
        record = image["provenance"]
        if not image["reference"].startswith("registry.k8s.io/"):
            assert record["kind"] == "published-sha256", image  # docker.io's flannel publishes no signature airlock knows a signer for
            continue
        assert record["kind"] == "signed" and (record["identity"], record["issuer"]) == KUBERNETES_IMAGES
        assert record["detail"].endswith(f":{image['digest'].replace(':', '-')}.sig")
        payload = members[record["payload"]]
        assert signed_image(payload, "payload")[0] == image["digest"]
        evidence = Evidence.parse(members[record["evidence"]], record["evidence"])
        # cosign's image signatures carry the log's SET, not an inclusion proof: a 0.1 Sigstore bundle.
        assert json.loads(members[record["evidence"]])["mediaType"] == "application/vnd.dev.sigstore.bundle+json;version=0.1"
        assert verify(evidence, hashlib.sha256(payload).hexdigest(), Expected(*KUBERNETES_IMAGES), root).log_index == record["log_index"]
    summary = next(line for line in airlock("inspect", out, check=True).stdout.splitlines() if line.startswith("provenance  "))
    assert summary.startswith("provenance  10 signed, 6 published checksum, 1 pinned, 0 unpinned")


@contextmanager
def image_signature(upstream: LocalUpstream, reference: str, **options):
    """Replace an image's cosign signature for the test; the good one is pushed back afterwards."""
    try:
        yield upstream.sign_image(reference, **options)
    finally:
        upstream.sign_image(reference)


def _another_artifacts_entry(upstream: LocalUpstream) -> dict:
    return {"bundle_of": upstream.signing.sign(b"some other payload", KUBERNETES_IMAGES)}


IMAGE_CASES = {
    "another identity": (lambda up: {"identity": MALLORY}, "the certificate is for mallory@example.com"),
    "another CA": (lambda up: {"ca": up.signing.rogue}, "does not chain to a certificate authority of the trust root"),
    "log entry for another artifact": (_another_artifacts_entry, "is for another artifact"),
    "expired certificate without a log timestamp": (lambda up: {"expired": True, "bundle": False}, "no transparency-log entry, so no signed time"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_an_image_signature_that_does_not_verify_stops_the_build_naming_the_image(signed_upstream, keys, tmp_path, case):
    options, reason = IMAGE_CASES[case]
    with image_signature(signed_upstream, "registry.k8s.io/kube-scheduler:v1.36.4", **options(signed_upstream)):
        result = build(signed_upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("airlock: error: registry.k8s.io/kube-scheduler:v1.36.4: its upstream signature (registry.k8s.io/kube-scheduler:sha256-") and reason in line, line
    assert not (tmp_path / "k8s.tar").exists()


def test_require_signed_refuses_an_unsigned_image_by_name(signed_upstream, keys, tmp_path):
    signed_upstream.push("registry.k8s.io/unsigned/tool:1.0", ("amd64",))
    flags = ["--cni", "none", "--arch", "amd64", "--image", "registry.k8s.io/unsigned/tool:1.0"]
    refused = build(signed_upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", *flags, "--require", "signed")
    assert refused.returncode == 1 and "registry.k8s.io/unsigned/tool:1.0 (published checksum)" in refused.stderr
    assert "registry.k8s.io/kube-scheduler:v1.36.4 (" not in refused.stderr.splitlines()[-1]  # signed: it meets the level
    assert not (tmp_path / "k8s.tar").exists()
    # Without --require the same build works and records what it found.
    build(signed_upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", *flags, check=True)
    tool = next(image for image in manifest_of(tmp_path / "k8s.tar")["images"] if image["reference"] == "registry.k8s.io/unsigned/tool:1.0")
    assert tool["provenance"]["kind"] == "published-sha256"
