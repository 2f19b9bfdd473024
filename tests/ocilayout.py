"""Small OCI image layouts written directly: an OCI manifest, an OCI index and a Docker schema 2 image.

For tests that need the three kinds of manifest the distribution spec names
(the bundle's own images are all OCI indexes) and for benches that need a
store without building a bundle. Each blob is real: configs are JSON, layers
are gzipped tars, every digest is the sha256 of the bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass
class Image:
    reference: str  # registry.example/conformance/repo:tag
    digest: str
    media_type: str
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes of every config and layer under it
    children: list[str] = field(default_factory=list)  # manifest digests an index names


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, payload: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0)


class Layout:
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.entries: list[dict] = []
        self.images: dict[str, Image] = {}

    def put(self, data: bytes) -> str:
        digest = _digest(data)
        (self.root / "blobs/sha256" / digest[7:]).write_bytes(data)
        return digest

    def _manifest(self, kind: str, arch: str, payload: bytes) -> tuple[bytes, str, dict[str, bytes]]:
        docker = kind == "docker"
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}).encode()
        layer = _layer("payload", payload)
        blobs = {self.put(config): config, self.put(layer): layer}
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        }
        data = json.dumps(document, indent=2).encode()
        return data, self.put(data), blobs

    def add(self, reference: str, kind: str, payload_bytes: int = 4096) -> Image:
        """kind: "oci" (one manifest), "docker" (schema 2) or "index" (an OCI index over amd64 and arm64 manifests)."""
        # Incompressible and reproducible: the layer is as large as asked.
        payload = b"".join(hashlib.sha256(f"{reference}/{block}".encode()).digest() for block in range(payload_bytes // 32 + 1))[:payload_bytes]
        if kind in ("oci", "docker"):
            data, digest, blobs = self._manifest(kind, "amd64", payload)
            image = Image(reference, digest, DOCKER_MANIFEST if kind == "docker" else OCI_MANIFEST, data, blobs)
        else:
            manifests, blobs, children = [], {}, []
            for arch in ("amd64", "arm64"):
                data, digest, own = self._manifest("oci", arch, payload + arch.encode())
                manifests.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data), "platform": {"architecture": arch, "os": "linux"}})
                blobs.update(own)
                children.append(digest)
            data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()
            image = Image(reference, self.put(data), OCI_INDEX, data, blobs, children)
        annotations = {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": reference}
        self.entries.append({"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest), "annotations": annotations})
        self.images[reference] = image
        self.write_index()
        return image

    def write_index(self) -> None:
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}).encode()
        (self.root / "index.json").write_bytes(index)
