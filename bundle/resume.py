"""The one retry and resume routine both transports use (the node's urllib/http.client one and the build host's requests one).

A transport supplies `open_at(offset)`: one request for the bytes from `offset` on (a Range request when
`offset` > 0), answered as an `Answer`; it raises `Transient` for what another attempt may cure (a broken
connection, a timeout, 5xx, 429) and anything else for what it may not. The routine decides the rest the same
way for both: how many attempts and how long between them, what a 200 to a Range request means (start over),
what a wrong Content-Range means (start over, or refuse), never accepting more than the size cap, and the
per-member and per-run deadlines (bundle/netpolicy.py).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bundle.netpolicy import Clock

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
T = TypeVar("T")


class Transient(Exception):
    """This attempt failed in a way another may not (connection reset, timeout, 5xx, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class GiveUp(Exception):
    """Every attempt failed, or a deadline passed; the message says which, with the last reason."""


class Refused(Exception):
    """The server answered something no retry will make acceptable (more bytes than listed, a bad range)."""


@dataclass(frozen=True)
class Attempts:
    """How many attempts and how long between them (exponential backoff with jitter, or the server's Retry-After)."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.75 + random.random() / 2)


def retrying(
    what: str, once: Callable[[], T], attempts: Attempts, clocks: tuple[Clock, ...] = (), sleep=time.sleep, on_retry: Callable[[str, float], None] | None = None
) -> T:
    """Run `once` until it does not raise `Transient`, at most `attempts.attempts` times and never past a clock's end."""
    reason = ""
    for attempt in range(1, attempts.attempts + 1):
        for clock in clocks:
            if clock.refusal():
                raise GiveUp(f"{what}: {clock.refusal()} ({reason or 'no answer yet'})")
        try:
            return once()
        except Transient as error:
            reason = str(error)
            if attempt == attempts.attempts:
                break
            delay = attempts.delay(attempt, error.retry_after)
            delay = min([delay, *(max(0.0, clock.left()) for clock in clocks)])
            if on_retry is not None:
                on_retry(reason, delay)
            sleep(delay)
    raise GiveUp(f"{what}: {reason}; gave up after {attempts.attempts} attempts")


@dataclass
class Answer:
    """One answer to `open_at`: its status, its Content-Range, and how to read its body a chunk at a time."""

    status: int
    content_range: str | None
    read: Callable[[int], bytes]  # up to n bytes; b"" at the end; may raise Transient
    close: Callable[[], None]


class Sink(Protocol):
    size: int  # bytes already held (from an earlier attempt or an earlier run)

    def write(self, data: bytes) -> None: ...
    def reset(self) -> None: ...


def fetch_resumable(
    what: str,
    open_at: Callable[[int], Answer],
    sink: Sink,
    cap: int | None,
    attempts: Attempts,
    clocks: tuple[Clock, ...] = (),
    sleep=time.sleep,
    on_retry: Callable[[str, float], None] | None = None,
) -> None:
    """Fill `sink` with the whole answer, resuming from what it holds after any break; at most `cap` bytes.

    With a `cap` (the size the signed bundle.json or the descriptor lists) the transfer ends when the sink
    holds exactly that many bytes; one byte more is `Refused`. Without one it ends when an answer ends.
    """
    if cap is not None and sink.size > cap:
        sink.reset()

    def once() -> None:
        if cap is not None and sink.size == cap:
            return
        answer = open_at(sink.size)
        try:
            if answer.status == 416 and sink.size:
                sink.reset()  # the server has less than we hold, or no ranges: start over
                raise Transient("the server refused the resume range; starting over")
            if answer.status == 206:
                match = _CONTENT_RANGE.match(answer.content_range or "")
                if not match or int(match.group(1)) != sink.size:
                    sink.reset()
                    raise Transient(f"the server answered the range {answer.content_range!r} to bytes={sink.size}-; starting over")
            elif answer.status == 200:
                if sink.size:
                    sink.reset()  # the server ignored the range: the whole body follows
            else:
                raise Refused(f"{what}: HTTP {answer.status}")
            while True:
                for clock in clocks:
                    if clock.refusal():
                        raise GiveUp(f"{what}: {clock.refusal()} (after {sink.size} bytes)")
                want = CHUNK if cap is None else min(CHUNK, cap - sink.size)
                if want == 0:
                    if answer.read(1):
                        raise Refused(f"{what} sent more than the {cap} bytes listed for it")
                    return
                data = answer.read(want)
                if not data:
                    break
                if cap is not None and sink.size + len(data) > cap:
                    raise Refused(f"{what} sent more than the {cap} bytes listed for it")
                sink.write(data)
            if cap is not None and sink.size < cap:
                raise Transient(f"the answer ended after {sink.size} of {cap} bytes")
        finally:
            answer.close()

    retrying(what, once, attempts, clocks, sleep, on_retry)
