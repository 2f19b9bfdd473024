"""The node installer's own failures: what the CLI turns into one line on stderr (or, for NothingToDo, exit 0)."""

from __future__ import annotations

from bundle.errors import AirlockError


class NodeError(AirlockError):
    """A node step failed; the message says which and what to do."""


class NothingToDo(Exception):
    """The node already is where the command would take it: the message says so, and the command exits 0."""
