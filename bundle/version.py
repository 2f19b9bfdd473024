"""A Kubernetes release version (v1.36.4, v1.37.0-rc.1), parsed once where it enters and typed from there on.

The builder parses `--kubernetes-version` and the label files of the release server into it; the node
can parse bundle.json's version and what a cluster reports the same way. Node code: Python 3.9.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundle.errors import AirlockError

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.]+(?:\.[0-9A-Za-z]+)*)?")


class VersionError(AirlockError, ValueError):
    """Text that is not a Kubernetes version; the message names where it came from and what one looks like."""


@dataclass(frozen=True)
class KubernetesVersion:
    """One release: major.minor.patch, and a pre-release suffix ("-rc.1", or "") that orders before the release."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    @classmethod
    def parse(cls, text: object, where: str = "Kubernetes version") -> KubernetesVersion:
        """v1.36.4 or 1.36.4 (with an optional -pre.release); anything else raises VersionError naming `where`."""
        match = _VERSION.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            shown = repr(text[:60]) if isinstance(text, str) else type(text).__name__
            raise VersionError(f"{where}: {shown} is not a Kubernetes version like v1.36.4")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4) or "")

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}{self.prerelease}"

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _order(self) -> tuple:
        # A pre-release comes before its release (v1.37.0-rc.1 < v1.37.0), as in semver.
        return (self.major, self.minor, self.patch, self.prerelease == "", self.prerelease)

    def __lt__(self, other: KubernetesVersion) -> bool:
        return self._order() < other._order()

    def __le__(self, other: KubernetesVersion) -> bool:
        return self._order() <= other._order()

    def __gt__(self, other: KubernetesVersion) -> bool:
        return self._order() > other._order()

    def __ge__(self, other: KubernetesVersion) -> bool:
        return self._order() >= other._order()
