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
