"""Showing bytes to people: sizes in words, and a meter for long reads (a tqdm bar on a terminal only)."""

from __future__ import annotations

import sys


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


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
