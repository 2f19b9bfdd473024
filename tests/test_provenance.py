"""A boundary reviewer asks of every file and image: is it what upstream published, and who says so? bundle.json answers."""

from __future__ import annotations

import hashlib
import json

import pytest

from bundle.errors import BundleError
from bundle.manifest import Manifest
from tests.conftest import airlock, build
from tests.test_build import manifest_of


def test_every_upstream_file_and_image_records_how_it_was_vouched_for(bundle):
    manifest = manifest_of(bundle)
    files = {entry["path"]: entry for entry in manifest["files"]}
    for arch in ("amd64", "arm64"):
        kubeadm = files[f"bin/linux-{arch}/kubeadm"]["provenance"]
        # This upstream publishes no signatures: the checksum beside the file is what vouched for it.
        assert kubeadm == {"kind": "published-sha256", "detail": files[f"bin/linux-{arch}/kubeadm"]["source"] + ".sha256"}
        runc = files[f"bin/linux-{arch}/runc"]["provenance"]
        assert runc["kind"] == "published-sha256" and runc["detail"].endswith("/runc.sha256sum")
    assert files["manifests/cni/kube-flannel.yml"]["provenance"] == {"kind": "pinned", "detail": "--flannel-sha256"}
    for entry in manifest["files"]:
        # Downloaded files carry a record; what the build wrote itself (index, SBOM, node installer, trust root) does not.
        assert ("provenance" in entry) == (entry["source"] is not None), entry["path"]
    for image in manifest["images"]:
        tag = image["reference"].rsplit(":", 1)[1]
        assert image["provenance"]["kind"] == "published-sha256" and image["provenance"]["detail"].endswith(f"gave for tag {tag}")
    # The Sigstore trust root the build used is carried and pinned.
    root = files["provenance/trusted_root.json"]
    assert manifest["provenance"] == {"require": "any", "trusted_root": "provenance/trusted_root.json", "trusted_root_sha256": root["sha256"]}
    shipped = (__import__("builder.build", fromlist=["DEFAULT_TRUSTED_ROOT"]).DEFAULT_TRUSTED_ROOT).read_bytes()
    assert root["sha256"] == hashlib.sha256(shipped).hexdigest()


def test_inspect_summarises_provenance_in_one_line(bundle):
    manifest = manifest_of(bundle)
    published = sum(1 for f in manifest["files"] if f.get("provenance", {}).get("kind") == "published-sha256") + len(manifest["images"])
    text = airlock("inspect", bundle, check=True).stdout
    line = next(line for line in text.splitlines() if line.startswith("provenance  "))
    assert line.startswith(f"provenance  0 signed, {published} published checksum, 1 pinned, 0 unpinned; required: any; Sigstore trust root sha256 ")
    assert "  bin/linux-amd64/kubeadm " in text and text.split("  bin/linux-amd64/kubeadm ", 1)[1].splitlines()[0].endswith("published checksum")
    assert text.split("  bin/airlock-node.pyz ", 1)[1].splitlines()[0].endswith("written by the build")
    document = json.loads(airlock("inspect", bundle, "--output", "json", check=True).stdout)
    assert document["provenance_summary"] == {"signed": 0, "published-sha256": published, "pinned": 1, "unpinned": 0}


def test_require_signed_refuses_an_unsigned_build_naming_what_falls_short(upstream, keys, tmp_path):
    out = tmp_path / "k8s.tar"
    refused = build(upstream, keys, out, "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64", "--require", "signed")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--require signed: " in refused.stderr and "lack a verified upstream signature" in refused.stderr
    assert "registry.k8s.io/kube-apiserver:v1.36.4 (published checksum)" in refused.stderr
    assert "bin/linux-amd64/kubeadm (published checksum)" in refused.stderr
    assert not out.exists()


def _document(**changes) -> dict:
    from tests.hostile import good_members, manifest_for

    document = json.loads(manifest_for(good_members()).to_json())
    document["files"][0].update(changes)
    return document


@pytest.mark.parametrize(
    ("provenance", "message"),
    [
        ({"kind": "trusted-by-me"}, "provenance.kind 'trusted-by-me' is not one of"),
        ({"kind": "signed", "identity": "a@b", "issuer": "https://x"}, "a signed record names its identity, issuer and evidence"),
        ({"kind": "signed", "identity": "a@b", "issuer": "https://x", "evidence": "bin/kubeadm.sig"}, "is not under provenance/"),
        ({"kind": "signed", "identity": "a@b", "issuer": "https://x", "evidence": "provenance/../x"}, "'.' or '..'"),
        ({"kind": "pinned", "log_index": True}, "log_index is not a whole number"),
        ({"kind": "pinned", "detail": 7}, "provenance.detail is not a string"),
        ("signed", "provenance is not an object"),
    ],
)
def test_a_node_reads_provenance_records_strictly(provenance, message):
    document = _document(provenance=provenance)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Manifest.parse(json.dumps(document).encode())


def test_the_top_level_record_pins_the_trust_root_by_sha256():
    document = _document()
    document["provenance"] = {"require": "any", "trusted_root": "provenance/trusted_root.json", "trusted_root_sha256": "x" * 64}
    with pytest.raises(BundleError, match="trusted_root_sha256 is not 64 lowercase hex"):
        Manifest.parse(json.dumps(document).encode())
    document["provenance"].update(trusted_root_sha256="a" * 64, require="some")
    with pytest.raises(BundleError, match="provenance.require 'some'"):
        Manifest.parse(json.dumps(document).encode())
    document["provenance"].update(require="signed")
    assert Manifest.parse(json.dumps(document).encode()).provenance.require == "signed"


def test_a_trusted_root_that_is_not_one_is_refused_before_any_download(upstream, keys, tmp_path):
    upstream.server.clear()
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1"}))
    result = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--trusted-root", root)
    assert result.returncode == 1 and f"--trusted-root {root}: mediaType" in result.stderr and "not a Sigstore trusted root" in result.stderr
    missing = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--trusted-root", tmp_path / "none.json")
    assert missing.returncode == 1 and "none.json: cannot be read: No such file or directory" in missing.stderr
    assert upstream.server.requests == [] and not (tmp_path / "k8s.tar").exists()
