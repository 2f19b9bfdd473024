"""The images phase accepts an index `airlock push` narrowed, and nothing else in its place."""

from __future__ import annotations

import json

from bundle.manifest import ImageEntry
from bundle.oci import OCI_INDEX, OCI_MANIFEST
from installer.phases.images import narrowed_index_of

AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64
IMAGE = ImageEntry(
    reference="registry.k8s.io/pause:3.10",
    digest="sha256:" + "d" * 64,
    media_type=OCI_INDEX,
    platforms=("linux/amd64", "linux/arm64"),
    blobs=("sha256:" + "d" * 64, AMD64, ARM64, "sha256:" + "e" * 64),
)


def index(*entries: tuple[str, str]) -> bytes:
    manifests = [{"mediaType": OCI_MANIFEST, "digest": digest, "size": 500, "platform": {"os": "linux", "architecture": arch}} for digest, arch in entries]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


def test_an_index_narrowed_to_signed_manifests_for_this_platform_is_accepted():
    assert narrowed_index_of(index((AMD64, "amd64")), IMAGE, "linux/amd64")
    assert narrowed_index_of(index((AMD64, "amd64"), (ARM64, "arm64")), IMAGE, "linux/arm64")


def test_anything_else_in_its_place_is_refused():
    assert not narrowed_index_of(index((AMD64, "amd64"), (OTHER, "s390x")), IMAGE, "linux/amd64"), "a manifest bundle.json does not sign"
    assert not narrowed_index_of(index((ARM64, "arm64")), IMAGE, "linux/amd64"), "no manifest for the node's platform"
    assert not narrowed_index_of(index((OTHER, "amd64")), IMAGE, "linux/amd64")
    assert not narrowed_index_of(index(), IMAGE, "linux/amd64"), "an empty index"
    assert not narrowed_index_of(b"not json", IMAGE, "linux/amd64")
    assert not narrowed_index_of(b"[]", IMAGE, "linux/amd64")
    single = ImageEntry(IMAGE.reference, AMD64, OCI_MANIFEST, ("linux/amd64",), blobs=(AMD64,))
    assert not narrowed_index_of(index((AMD64, "amd64")), single, "linux/amd64"), "bundle.json names a single manifest, not an index"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": [{"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}}]})
    assert not narrowed_index_of(manifest.encode(), IMAGE, "linux/amd64"), "a manifest posing as an index"
