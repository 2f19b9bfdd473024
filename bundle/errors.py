"""One exception hierarchy for everything airlock reports to a user.

Each message says what went wrong, where, and what to do; the CLI prints it
as one line and exits 1.
"""

from __future__ import annotations


class AirlockError(Exception):
    """Base of every expected failure."""


class BundleError(AirlockError):
    """The bundle is malformed or does not match its manifest."""

    def __init__(self, message: str, member: str | None = None):
        self.member = member
        super().__init__(f"{member}: {message}" if member else message)


class TrustError(AirlockError):
    """A signature, key or freshness check failed."""


class StoreError(AirlockError):
    """The content store is unusable or holds corrupt content."""


class PartsError(BundleError):
    """A part of a split bundle is missing, extra, out of order, truncated or altered; names the part file."""


class WriteError(AirlockError):
    """A file could not be put in place whole and as written (bundle.atomic)."""


class NoSpaceError(AirlockError):
    """A file system filled up (ENOSPC, or a quota): names where, how much was needed and was free, and what to do."""


NO_SPACE = (28, 122)  # errno ENOSPC, EDQUOT


def no_space(where, needed: int | None = None) -> NoSpaceError:
    """The one line for a full file system at `where` (a path), with what the work needed there when known."""
    import os
    import shutil
    from pathlib import Path

    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free >> 20} MiB free now"
    except OSError:
        free = "free space unknown"
    wanted = f"; it needs about {(needed + (1 << 20) - 1) >> 20} MiB there" if needed else ""
    return NoSpaceError(
        f"{os.fspath(where)}: no space left on the device ({free}{wanted}); what was written is removed. "
        "Free space there, or point it at another file system"
    )


class JsonObjectError(AirlockError, ValueError):
    """Bytes from outside that are not a JSON object (bundle.jsonobject.parse_object); names the source and why.

    A ValueError too, so a caller that already turns ValueError into its own one line keeps doing so.
    """

    def __init__(self, where: str, reason: str):
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")
