"""Sizes in words for people. Progress itself is not drawn here: the format package reports bytes through
`on_bytes` callbacks, and each command line draws them its own way (installer.progress on the node)."""

from __future__ import annotations


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
