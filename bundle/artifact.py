"""The bundle as one OCI artifact: what `airlock push` uploads and the node registry serves.

An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) whose
`artifactType` is `application/vnd.airlock.bundle.v1`, whose config is the
OCI empty descriptor (`{}`), and whose layers are, in order, `bundle.json`,
`bundle.json.sig` and every member that is not an image blob, each annotated
with its bundle path (`org.opencontainers.image.title`) and mode
(`io.airlock.file.mode`). Blobs are addressed by the sha256 bundle.json
already names, so the manifest follows from the signed bytes alone: push and
the node registry produce it byte for byte alike. It lives in the repository
`airlock/bundle` (under the target's prefix) with the tag `NAME-SERIAL`.

Images are not layers of it: they are pushed (or served) as images, and a
node pulls them through containerd's hosts.toml.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bundle.errors import BundleError
from bundle.manifest import IMAGE_BLOBS, MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest, canonical_json
from bundle.oci import OCI_MANIFEST
from bundle.reference import TAG
from bundle.store import CONTAINERD_NAME, REF_NAME, BlobStore, layout_index
from bundle.trust import TrustedKey
from bundle.unpack import INDEX_MEMBER, StoreSink, activate_index, blob_sink
from bundle.verify import Verified, verify_bundle

ARTIFACT_TYPE = "application/vnd.airlock.bundle.v1"
REPOSITORY = "airlock/bundle"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()
MANIFEST_TYPE = "application/vnd.airlock.bundle.manifest.v1+json"
SIGNATURE_TYPE = "application/vnd.airlock.bundle.signature.v1"
MEMBER_TYPE = "application/vnd.airlock.bundle.member.v1"
TITLE = "org.opencontainers.image.title"
MODE = "io.airlock.file.mode"
_SERIAL_TAG = re.compile(r"^(.+)-(\d+)$")
_NOT_IN_TAG = re.compile(r"[^A-Za-z0-9._-]")


def tag_for(manifest: Manifest) -> str:
    """`NAME-SERIAL`, the tag a bundle's artifact is pushed under (characters a tag cannot hold become '_')."""
    serial = f"-{manifest.serial}"
    name = _NOT_IN_TAG.sub("_", manifest.name)[: 128 - len(serial)] or "bundle"
    if not name[0].isalnum():
        name = "_" + name[1:]
    tag = name + serial
    if not TAG.match(tag):
        raise BundleError(f"bundle name {manifest.name!r} with serial {manifest.serial} does not make a registry tag", MANIFEST_NAME)
    return tag


def parse_tag(tag: str) -> tuple[str, int] | None:
    """(name, serial) of a `NAME-SERIAL` tag, or None for any other tag."""
    match = _SERIAL_TAG.match(tag)
    return (match.group(1), int(match.group(2))) if match else None


def artifact_members(manifest: Manifest) -> list[FileEntry]:
    """The members the artifact carries as layers after bundle.json and its signature: all but image blobs."""
    return [entry for entry in manifest.files if not entry.path.startswith(IMAGE_BLOBS)]


@dataclass(frozen=True)
class Artifact:
    """The artifact manifest of one signed bundle, its bytes and digest."""

    data: bytes
    digest: str
    tag: str

    @property
    def size(self) -> int:
        return len(self.data)

    def index_entry(self) -> dict:
        """Its descriptor for a store's index.json, so the node registry serves it by tag."""
        return {
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "digest": self.digest,
            "size": self.size,
            # Both names, like every entry of a store's index (readers key on either).
            "annotations": {REF_NAME: f"{REPOSITORY}:{self.tag}", CONTAINERD_NAME: f"{REPOSITORY}:{self.tag}"},
        }


def _layer(media_type: str, sha256: str, size: int, title: str, mode: int) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha256}", "size": size, "annotations": {TITLE: title, MODE: f"{mode:04o}"}}


def build_artifact(manifest_bytes: bytes, signature: bytes, manifest: Manifest | None = None) -> Artifact:
    """The artifact manifest for these signed bytes (deterministic: canonical JSON)."""
    manifest = manifest or Manifest.parse(manifest_bytes)
    layers = [
        _layer(MANIFEST_TYPE, hashlib.sha256(manifest_bytes).hexdigest(), len(manifest_bytes), MANIFEST_NAME, 0o644),
        _layer(SIGNATURE_TYPE, hashlib.sha256(signature).hexdigest(), len(signature), SIGNATURE_NAME, 0o644),
    ]
    layers += [_layer(MEMBER_TYPE, entry.sha256, entry.size, entry.path, entry.mode) for entry in artifact_members(manifest)]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY), "data": base64.b64encode(EMPTY).decode()},
        "layers": layers,
        "annotations": {
            "org.opencontainers.image.created": f"{manifest.created:%Y-%m-%dT%H:%M:%SZ}",
            "io.airlock.bundle.name": manifest.name,
            "io.airlock.bundle.serial": str(manifest.serial),
            "io.airlock.kubernetes.version": manifest.version,
        },
    }
    data = canonical_json(document)
    return Artifact(data, "sha256:" + hashlib.sha256(data).hexdigest(), tag_for(manifest))


def store_artifact(store: BlobStore, manifest_bytes: bytes, signature: bytes, manifest: Manifest | None = None) -> Artifact:
    """Put bundle.json, its signature, the empty config and the artifact manifest into a store by digest.

    The members themselves must already be there (the unpacker and push's staging keep them by digest).
    """
    artifact = build_artifact(manifest_bytes, signature, manifest)
    for data in (manifest_bytes, signature, EMPTY, artifact.data):
        store.put_bytes(data)
    return artifact


def with_artifact(index_bytes: bytes, artifact: Artifact) -> list[dict]:
    """A bundle's image index entries plus the artifact's own entry."""
    entries = json.loads(index_bytes).get("manifests", []) if index_bytes else []
    return [*entries, artifact.index_entry()]


def stage_bundle(bundle: Path, keys: list[TrustedKey], store_root: Path) -> tuple[Verified, Artifact]:
    """Verify a bundle file while every member streams into a store by digest; activate its images and artifact.

    What `airlock push` uploads from: the images as images, the rest as the artifact.
    """
    store = BlobStore(store_root)
    store.blobs.mkdir(parents=True, exist_ok=True)
    index = bytearray()

    def sink(entry: FileEntry):
        if entry.path.startswith(IMAGE_BLOBS):
            return blob_sink(store, entry)
        keep = index if entry.path == INDEX_MEMBER else None
        if store.exists("sha256:" + entry.sha256) and keep is None:
            return None
        return StoreSink(store, entry, keep)

    verified = verify_bundle(bundle, keys, sink=sink)
    artifact = store_artifact(store, verified.manifest_bytes, verified.signature, verified.manifest)
    activate_index(store, layout_index(with_artifact(bytes(index), artifact)))
    return verified, artifact
