"""Version labels: `stable-1.36` -> `v1.36.4`, read from `{release-url}/release/{label}.txt`.

An exact version is never looked up; anything else is refused before a byte
is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from builder.errors import ResolveError

_LABEL = re.compile(r"^(stable|latest)(?:-(\d+)(?:\.(\d+))?)?$")
_EXACT = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.]+(?:\.[0-9A-Za-z]+)*)?$")
ACCEPTED = "stable, stable-1, stable-1.36, latest, latest-1.36, v1.36.4 or 1.36.4"


@dataclass(frozen=True)
class Resolution:
    requested: str
    version: str  # always "v1.36.4"

    @property
    def minor(self) -> tuple[int, int]:
        match = _EXACT.match(self.version)
        return int(match.group(1)), int(match.group(2))


def parse_request(text: str) -> tuple[str, str]:
    """Classify `text` as ("exact", "v1.36.4") or ("label", "stable-1.36"); raise on anything else."""
    text = (text or "").strip()
    exact = _EXACT.match(text)
    if exact:
        return "exact", "v" + text.lstrip("v")
    if _LABEL.match(text):
        return "label", text
    raise ResolveError(f"--kubernetes-version {text!r} is not a version or label; use {ACCEPTED}")


def resolve(text: str, read_label: Callable[[str], bytes]) -> Resolution:
    """Resolve a request, calling `read_label(label)` for the label file's bytes if needed."""
    kind, value = parse_request(text)
    if kind == "exact":
        return Resolution(text.strip(), value)
    raw = read_label(value)
    found = raw.decode("utf-8", "replace").strip()
    match = _EXACT.match(found)
    if not match or not found.startswith("v"):
        raise ResolveError(f"label {value}: the label file holds {found[:60]!r}, not a version like v1.36.4")
    label = _LABEL.match(value)
    if label.group(2) is not None and int(match.group(1)) != int(label.group(2)):
        raise ResolveError(f"label {value} resolved to {found}, which is not in that major version")
    if label.group(3) is not None and int(match.group(2)) != int(label.group(3)):
        raise ResolveError(f"label {value} resolved to {found}, which is not in that minor version")
    return Resolution(value, found)
