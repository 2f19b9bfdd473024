"""One progress display for a whole build or push: total bytes, each blob counted once.

On a terminal it is a tqdm bar. Anywhere else (CI logs, ssh without a TTY,
a log file) it prints plain lines: one per finished item, and while bytes
flow, a line with the bytes so far every few seconds, so a long download
never looks hung and a log shows how far it got.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from tqdm import tqdm

from bundle.meter import human_size

LOG_INTERVAL = 5.0  # seconds between progress lines in a log


class Progress:
    def __init__(self, description: str = "airlock", interactive: bool | None = None, stream=None,
                 interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self._stream = stream or sys.stderr
        self.description = description
        self.interactive = self._stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self.network_bytes = 0
        self._interval, self._clock = interval, clock
        self._total = 0
        self._done = 0
        self._started = self._last = clock()
        self._bar = (
            tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1000, desc=description, file=self._stream)
            if self.interactive
            else None
        )

    def add_total(self, size: int) -> None:
        if not size:
            return
        with self._lock:
            self._total += size
            if self._bar is not None:
                self._bar.total += size
                self._bar.refresh()

    def advance(self, size: int, network: bool = True) -> None:
        with self._lock:
            if network:
                self.network_bytes += size
            self._done += size
            if self._bar is not None:
                self._bar.update(size)
                return
            now = self._clock()
            if size > 0 and now - self._last >= self._interval:
                self._last = now
                print(self._line(now), file=self._stream, flush=True)

    def _line(self, now: float) -> str:
        rate = human_size(self._done / max(now - self._started, 1e-6))
        if self._total > 0:
            share = min(100.0, 100.0 * self._done / self._total)
            return f"{self.description}: {human_size(self._done)} of {human_size(self._total)} ({share:.0f} %), {rate}/s"
        return f"{self.description}: {human_size(self._done)}, {rate}/s"

    def log(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=self._stream)
            else:
                print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
