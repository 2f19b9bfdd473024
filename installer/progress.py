"""Progress of long reads on the node: plain lines on stderr, with or without a terminal.

The node installer carries no progress library: the format package reports
bytes through an `on_bytes` callback and this module draws them. On a terminal
one line is redrawn in place a few times a second; anywhere else (journald,
ssh without a TTY, CI logs) a whole line is printed every few seconds, so a
long unpack never looks hung and a log shows how far it got. A read that ends
before the first update prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from bundle.meter import human_size

TERMINAL_INTERVAL = 0.2  # seconds between redraws on a terminal
LOG_INTERVAL = 5.0  # seconds between lines in a log


class ProgressLines:
    """`with ProgressLines(total, "unpack") as on_bytes:` gives the callback for the format package (None if quiet)."""

    def __init__(self, total: int, what: str, stream: TextIO | None = None, quiet: bool = False,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.what, self.quiet, self.clock = total, what, quiet, clock
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.interval = interval if interval is not None else (TERMINAL_INTERVAL if self.terminal else LOG_INTERVAL)
        self.done = 0
        self.shown = False
        self._lock = threading.Lock()
        self._started = self._last = clock()

    def __enter__(self) -> Callable[[int], None] | None:
        return None if self.quiet else self.advance

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size
            now = self.clock()
            if now - self._last >= self.interval:
                self._last = now
                self._show(self._line(now))

    def __exit__(self, kind, value, traceback) -> None:
        with self._lock:
            if not self.shown:
                return
            if kind is None:
                elapsed = max(self.clock() - self._started, 1e-6)
                self._show(f"{self.what}: {human_size(self.done)} in {elapsed:.1f} s ({human_size(self.done / elapsed)}/s)")
            if self.terminal:
                self.stream.write("\n")  # the next message starts on a line of its own
                self.stream.flush()

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self._started, 1e-6)
        if self.total > 0:
            share = min(100.0, 100.0 * self.done / self.total)
            return f"{self.what}: {human_size(self.done)} of {human_size(self.total)} ({share:.0f} %), {human_size(rate)}/s"
        return f"{self.what}: {human_size(self.done)}, {human_size(rate)}/s"

    def _show(self, line: str) -> None:
        if self.terminal:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True
