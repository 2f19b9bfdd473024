"""A byte meter for long reads: a tqdm bar on a terminal, nothing otherwise (logs stay clean)."""

from __future__ import annotations

import sys


class ByteMeter:
    def __init__(self, total: int, description: str, quiet: bool = False):
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=description, file=sys.stderr)

    def __enter__(self):
        """The callback to pass as `on_bytes` (None when there is no bar)."""
        return self._bar.update if self._bar else None

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.close()
