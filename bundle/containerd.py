"""containerd releases: which ones a bundle may carry, and which config.toml layout each reads.

The builder refuses a `--containerd-version` outside SUPPORTED; the node
writes its config.toml in the layout of the containerd that will read it.
hosts.toml (certs.d/HOST/hosts.toml) has one writer here, through tomlkit: the
node's runtime phase and the build host's `airlock push` print the same document.
Read from containerd's source: `version.ConfigVersion` is 3 from v2.0.0 to
v2.2.7 and 4 from v2.3.0 (version/version.go); 1.7 reads `version = 2`
(services/server/config/config.go at v1.7.34).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import tomlkit
from tomlkit.exceptions import TOMLKitError

from bundle.errors import AirlockError

# minor -> the newest config version that release reads (and writes with `containerd config default`).
CONFIG_VERSION = {(2, 3): 4, (2, 2): 3, (2, 1): 3, (2, 0): 3, (1, 7): 2}
SUPPORTED = tuple(f"{major}.{minor}" for major, minor in CONFIG_VERSION)
# `2.1.9`, `v2.1.9`, and what `containerd --version` prints for a distribution's build: `1.6.20~ds1`, `2.1.9+unknown`.
VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~][0-9A-Za-z.~+-]*)?")


class ContainerdVersionError(AirlockError):
    """A containerd version airlock cannot read or does not support."""


class HostsTomlError(AirlockError):
    """An operator's hosts.toml airlock cannot add its settings to."""


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


def hosts_toml(comment: str, server: str, hosts: dict[str, dict], top: dict | None = None, existing: str | None = None) -> str:
    """A hosts.toml document; `existing` (the operator's own file) keeps its settings and comments, missing ones are added."""
    try:
        document = tomlkit.parse(existing) if existing else tomlkit.document()
    except (TOMLKitError, ValueError) as error:
        raise HostsTomlError(f"hosts.toml is not valid TOML ({error}); fix or remove it") from None
    if not existing:
        for line in comment.splitlines():
            document.add(tomlkit.comment(line))
    if server and "server" not in document:
        document["server"] = server
    for key, value in (top or {}).items():
        if key not in document:
            document[key] = value
    if hosts:
        if "host" not in document:
            document["host"] = tomlkit.table(is_super_table=True)
        table = document["host"]
        if not hasattr(table, "items") or isinstance(table, (str, list)):
            raise HostsTomlError("hosts.toml: host is not a table; fix or remove it")
        for url, settings in hosts.items():
            if url not in table:
                entry = tomlkit.table()
                for key, value in settings.items():
                    entry[key] = value
                table[url] = entry
    return tomlkit.dumps(document)


def mirror_settings(url: str, ca: str = "") -> dict:
    """One registry containerd pulls from instead of the upstream: pull and resolve only, its CA, and the path as given."""
    settings: dict = {"capabilities": ["pull", "resolve"]}
    if urlsplit(url).path.strip("/"):
        # A registry prefix (`https://harbor/v2/site`): containerd must use the path as given, not add /v2.
        settings["override_path"] = True
    if ca:
        settings["ca"] = ca
    return settings


def mirrors_hosts_toml(comment: str, urls: list[str], ca: str = "") -> str:
    """hosts.toml that sends every pull to `urls`, in order; the first is the fallback `server` too (with the same
    settings), so a node never reaches for the upstream on the internet when every mirror fails."""
    return hosts_toml(comment, urls[0], {url: mirror_settings(url, ca) for url in urls}, mirror_settings(urls[0], ca))
