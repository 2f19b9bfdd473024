"""Version requests: `--kubernetes-version` parsed once into a `VersionRequest`, and labels resolved.

`stable-1.36` -> `v1.36.4`, read from `{release-url}/release/{label}.txt`. An exact version is never
looked up; anything else is refused before a byte is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from builder.errors import ResolveError
from bundle.version import KubernetesVersion, VersionError

_LABEL = re.compile(r"^(stable|latest)(?:-(\d+)(?:\.(\d+))?)?$")
ACCEPTED = "stable, stable-1, stable-1.36, latest, latest-1.36, v1.36.4 or 1.36.4"


@dataclass(frozen=True)
class VersionRequest:
    """What `--kubernetes-version` asked for: an exact version, or a label (with the major and minor it names, if any)."""

    text: str
    exact: KubernetesVersion | None = None
    label: str | None = None
    label_major: int | None = None
    label_minor: int | None = None

    @classmethod
    def parse(cls, text: object) -> VersionRequest:
        """An exact version or a label; ResolveError (listing what is accepted) on anything else."""
        text = str(text or "").strip()
        try:
            return cls(text, exact=KubernetesVersion.parse(text))
        except VersionError:
            pass
        label = _LABEL.match(text)
        if label is None:
            raise ResolveError(f"--kubernetes-version {text!r} is not a version or label; use {ACCEPTED}")
        major, minor = (int(group) if group is not None else None for group in label.group(2, 3))
        return cls(text, label=text, label_major=major, label_minor=minor)

    @property
    def minor(self) -> int | None:
        """The minor the request names before anything is downloaded (v1.36.4, stable-1.36), else None."""
        return self.exact.minor if self.exact is not None else self.label_minor


@dataclass(frozen=True)
class Resolution:
    requested: str
    version: KubernetesVersion


def resolve(request: VersionRequest, read_label: Callable[[str], bytes]) -> Resolution:
    """Resolve a request, calling `read_label(label)` for the label file's bytes if needed."""
    if request.exact is not None:
        return Resolution(request.text, request.exact)
    found = read_label(request.label).decode("utf-8", "replace").strip()
    try:
        if not found.startswith("v"):
            raise VersionError(found)
        version = KubernetesVersion.parse(found)
    except VersionError:
        raise ResolveError(f"label {request.label}: the label file holds {found[:60]!r}, not a version like v1.36.4") from None
    if request.label_major is not None and version.major != request.label_major:
        raise ResolveError(f"label {request.label} resolved to {found}, which is not in that major version")
    if request.label_minor is not None and version.minor != request.label_minor:
        raise ResolveError(f"label {request.label} resolved to {found}, which is not in that minor version")
    return Resolution(request.label, version)
