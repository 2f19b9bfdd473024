"""Image references, normalised the way containerd and the Docker CLI do.

`nginx` is `docker.io/library/nginx:latest`; a first component with a dot or
a colon, or `localhost`, is a registry host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundle.errors import AirlockError

DOCKER_HUB = "docker.io"
# The OCI distribution grammar, shared with the registry server.
COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# distribution's domain grammar: dot-separated labels that start and end alphanumeric (so never "." or ".."),
# or a bracketed IPv6 address; then an optional port. The host becomes a directory name (certs.d/{host}).
_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_COMPONENT = re.compile(rf"^{COMPONENT}$")


class ReferenceError(AirlockError):
    pass


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        original = text
        text = text.strip()
        if not text or any(c.isspace() for c in text):
            raise ReferenceError(f"{original!r} is not an image reference (like registry.k8s.io/pause:3.10)")
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not DIGEST.match(digest):
                raise ReferenceError(f"{original}: the digest must be sha256:<64 lowercase hex>")
        tag = None
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not TAG.match(tag):
                raise ReferenceError(f"{original}: {tag!r} is not a valid tag")
        parts = text.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, path = parts[0], parts[1:]
            if not HOST.match(registry):
                raise ReferenceError(f"{original}: {registry!r} is not a registry host")
        else:
            registry, path = DOCKER_HUB, parts
        if registry == "index.docker.io":
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and len(path) == 1:
            path = ["library", *path]
        if not path or not all(_COMPONENT.match(part) for part in path):
            raise ReferenceError(f"{original}: the repository must be lowercase letters, digits and separators")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, "/".join(path), tag, digest)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"
