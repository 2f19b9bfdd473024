"""Render the node files in `manifests/`: from the bundle being installed, else from this installer."""

from __future__ import annotations

from pathlib import Path
from string import Template

# From a directory or from inside airlock-node.pyz: this module's loader reads both (zipimport has no files to open).
INSTALLED = (Path(__file__).resolve() if Path(__file__).is_file() else Path(__file__)).parents[1] / "manifests"
BUNDLE_DIR = "manifests/templates"


def render(name: str, staging: Path | None = None, **values) -> str:
    """Fill `${...}` in manifests/{name}; a missing value is an error, never an empty string."""
    values = {k: str(v) for k, v in values.items()}
    if staging and (staging / BUNDLE_DIR / name).is_file():
        return Template((staging / BUNDLE_DIR / name).read_text()).substitute(values)
    try:
        text = __loader__.get_data(str(INSTALLED / name)).decode()
    except OSError:
        raise FileNotFoundError(f"template {name} is neither in the bundle nor in {INSTALLED}") from None
    return Template(text).substitute(values)
