"""One progress display for a whole build: total bytes, each blob counted once.

On a terminal it is a tqdm bar; otherwise plain log lines, one per finished
item, so CI logs stay readable.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class Progress:
    def __init__(self, description: str = "airlock", interactive: bool | None = None, stream=None):
        self._stream = stream or sys.stderr
        self.interactive = self._stream.isatty() if interactive is None else interactive
        self._lock = threading.Lock()
        self.network_bytes = 0
        self._bar = (
            tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1000, desc=description, file=self._stream)
            if self.interactive
            else None
        )

    def add_total(self, size: int) -> None:
        if self._bar is not None and size:
            with self._lock:
                self._bar.total += size
                self._bar.refresh()

    def advance(self, size: int, network: bool = True) -> None:
        with self._lock:
            if network:
                self.network_bytes += size
            if self._bar is not None:
                self._bar.update(size)

    def log(self, message: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=self._stream)
            else:
                print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
