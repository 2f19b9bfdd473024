"""OCI and Docker manifest media types, and how to tell an index from a manifest."""

from __future__ import annotations

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# No real manifest or index comes near this; a larger one is refused, never buffered.
MAX_MANIFEST_BYTES = 4 << 20


def media_type_of(document: dict) -> str:
    """A manifest's media type: its own field, or (OCI makes it optional) inferred from its shape."""
    media_type = document.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), dict):
        return OCI_MANIFEST
    return ""
