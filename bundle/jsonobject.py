"""One way to read a JSON object from bytes that came from outside: bounded, depth-safe, objects only.

Registries, release servers, Rekor, OSV, a bundle's own members and a node's store all hand us JSON. Each
answer is refused, with one line naming where it came from, when it is over its size cap, is not JSON,
nests deeper than the parser's stack (RecursionError, which would otherwise escape as a traceback) or
is anything but an object. Node code: Python 3.9.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from bundle.errors import JsonObjectError


def parse_object(
    data: bytes | str, where: str, limit: int, object_pairs_hook: Callable[[list], Any] | None = None
) -> dict:
    """The JSON object in `data` (at most `limit` bytes); JsonObjectError("WHERE: why not") otherwise."""
    document = _parse(data, where, limit, object_pairs_hook)
    if not isinstance(document, dict):
        raise JsonObjectError(where, f"is a JSON {_kind(document)}, not a JSON object")
    return document


def parse_array(data: bytes | str, where: str, limit: int) -> list:
    """The same for the few answers that are a JSON array (Rekor's index search)."""
    document = _parse(data, where, limit, None)
    if not isinstance(document, list):
        raise JsonObjectError(where, f"is a JSON {_kind(document)}, not a JSON array")
    return document


def _kind(document: object) -> str:
    if isinstance(document, dict):
        return "object"
    return "array" if isinstance(document, list) else "string" if isinstance(document, str) else "null" if document is None else "number or boolean"


def _parse(data: bytes | str, where: str, limit: int, object_pairs_hook: Callable[[list], Any] | None) -> object:
    if len(data) > limit:
        raise JsonObjectError(where, f"is {len(data)} bytes, more than the {limit} it may be")
    try:
        document = json.loads(data, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise JsonObjectError(where, "nests JSON arrays or objects too deeply") from None
    except UnicodeDecodeError:
        raise JsonObjectError(where, "is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise JsonObjectError(where, f"is not valid JSON: {error}") from None
    return document
