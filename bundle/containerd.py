"""containerd releases: which ones a bundle may carry, and which config.toml layout each reads.

The builder refuses a `--containerd-version` outside SUPPORTED; the node
writes its config.toml in the layout of the containerd that will read it.
Read from containerd's source: `version.ConfigVersion` is 3 from v2.0.0 to
v2.2.7 and 4 from v2.3.0 (version/version.go); 1.7 reads `version = 2`
(services/server/config/config.go at v1.7.34).
"""

from __future__ import annotations

import re

from bundle.errors import AirlockError

# minor -> the newest config version that release reads (and writes with `containerd config default`).
CONFIG_VERSION = {(2, 3): 4, (2, 2): 3, (2, 1): 3, (2, 0): 3, (1, 7): 2}
SUPPORTED = tuple(f"{major}.{minor}" for major, minor in CONFIG_VERSION)
# `2.1.9`, `v2.1.9`, and what `containerd --version` prints for a distribution's build: `1.6.20~ds1`, `2.1.9+unknown`.
VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~][0-9A-Za-z.~+-]*)?")


class ContainerdVersionError(AirlockError):
    """A containerd version airlock cannot read or does not support."""


def minor_of(version: str) -> tuple[int, int]:
    match = VERSION.fullmatch(version.strip())
    if match is None:
        raise ContainerdVersionError(f"containerd version {version!r} is not MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2))


def is_supported(version: str) -> bool:
    try:
        return minor_of(version) in CONFIG_VERSION
    except ContainerdVersionError:
        return False


def config_version(version: str) -> int:
    """The newest config.toml version this containerd reads: 2 for 1.x, 3 for 2.0-2.2, 4 from 2.3 on.

    Releases outside SUPPORTED are answered too (a node may run its own): 1.6 reads
    version 2 like 1.7, and a release newer than 2.3 reads at least what 2.3 reads.
    """
    major, minor = minor_of(version)
    if major < 2:
        return 2
    if (major, minor) in CONFIG_VERSION:
        return CONFIG_VERSION[(major, minor)]
    return max(CONFIG_VERSION.values())

