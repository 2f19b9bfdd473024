"""A bundle's member names and digests: the rules both bundle.json and the provenance records hold them to."""

from __future__ import annotations

import re

from bundle.errors import BundleError

MANIFEST_NAME = "bundle.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_member_path(path: str) -> str:
    """Return `path` if it is a safe relative member name, else raise BundleError."""
    if not isinstance(path, str) or not path:
        raise BundleError("empty member name")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise BundleError("member name is absolute or has a backslash or NUL", path)
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError("member name has an empty, '.' or '..' component", path)
    return path


def is_hex_digest(text: object) -> bool:
    return isinstance(text, str) and bool(_HEX64.match(text))
