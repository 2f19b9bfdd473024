"""Render the node files in `manifests/`: from the bundle being installed, else from this installer."""

from __future__ import annotations

from pathlib import Path
from string import Template

INSTALLED = Path(__file__).resolve().parents[1] / "manifests"
BUNDLE_DIR = "manifests/templates"


def render(name: str, staging: Path | None = None, **values) -> str:
    """Fill `${...}` in manifests/{name}; a missing value is an error, never an empty string."""
    candidates = ([staging / BUNDLE_DIR / name] if staging else []) + [INSTALLED / name]
    for path in candidates:
        if path.is_file():
            return Template(path.read_text()).substitute({k: str(v) for k, v in values.items()})
    raise FileNotFoundError(f"template {name} is neither in the bundle nor in {INSTALLED}")
