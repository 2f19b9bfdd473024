"""Errors the builder reports; all are AirlockErrors so the CLI prints one line."""

from bundle.errors import AirlockError


class BuildError(AirlockError):
    """The build cannot go on; the message says what to change."""


class UsageError(BuildError):
    """A value no build could use, refused before anything is read or fetched: the CLI exits 2 (failures exit 1)."""


class ResolveError(BuildError):
    """A version label is malformed or did not resolve."""


class FetchError(BuildError):
    """A download failed for good (after retries, or on a non-retryable answer)."""


class HttpStatusError(FetchError):
    """A server answered with a status that no retry will change (404, 403, ...); `status` says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
