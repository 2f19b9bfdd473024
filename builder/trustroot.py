"""A newer Sigstore trust root on the connected host, through the TUF repository that publishes it.

Sigstore delivers `trusted_root.json` as a TUF target: python-tuf's client (tuf.ngclient) walks the
repository's root versions from one it already trusts, checks timestamp, snapshot and targets
metadata (signatures, thresholds, versions, expiry) and downloads the target only when its length and
sha256 are the signed ones. What it downloads must then parse as a trust root (bundle.keyless), or
nothing is written.

The TUF metadata the client has come to trust is kept per repository URL under the cache directory,
so a later update cannot be rolled back to older metadata. The first update of a repository starts
from `--tuf-root` (the TUF root.json its operators hand out), or, for Sigstore's public repository,
from the root.json airlock ships (builder/data/sigstore-tuf-root.json).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from builder.errors import BuildError
from bundle.atomic import write_atomic
from bundle.errors import TrustError
from bundle.keyless import TrustRoot
from bundle.smallfile import SmallFileError, read_small_file

PUBLIC_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"
PUBLIC_TUF_ROOT = Path(__file__).resolve().parent / "data" / "sigstore-tuf-root.json"
TARGET = "trusted_root.json"
MAX_TUF_ROOT_BYTES = 1 << 20


@dataclass(frozen=True)
class Updated:
    output: Path
    sha256: str
    url: str


def update_trusted_root(url: str, output: Path, cache_dir: Path, tuf_root: Path | None = None) -> Updated:
    """Fetch `trusted_root.json` from the TUF repository at `url`, verified, and write it to `output`."""
    from tuf.api.exceptions import DownloadError, RepositoryError
    from tuf.ngclient import Updater

    url = url.rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise BuildError(f"--tuf-url {url}: not an http(s) URL")
    state = Path(cache_dir) / "tuf" / quote(url, safe="")
    bootstrap = _bootstrap(url, state, tuf_root)
    os.makedirs(state, mode=0o700, exist_ok=True)
    targets = Path(tempfile.mkdtemp(prefix="airlock-tuf-", dir=state))
    try:
        updater = Updater(str(state), f"{url}/", str(targets), f"{url}/targets/", bootstrap=bootstrap)
        updater.refresh()
        info = updater.get_targetinfo(TARGET)
        if info is None:
            raise BuildError(f"{url}: the TUF repository lists no {TARGET} target")
        downloaded = Path(updater.download_target(info))
        data = downloaded.read_bytes()
    except (RepositoryError, DownloadError, OSError, ValueError) as error:
        raise BuildError(f"{url}: the TUF update of {TARGET} failed: {type(error).__name__}: {error}; nothing was written") from None
    finally:
        shutil.rmtree(targets, ignore_errors=True)
    try:
        TrustRoot.parse(data, f"{url}/targets/{TARGET}")
    except TrustError as error:
        raise BuildError(f"{error}; nothing was written") from None
    write_atomic(Path(output), data, 0o644)
    return Updated(Path(output), hashlib.sha256(data).hexdigest(), url)


def _bootstrap(url: str, state: Path, tuf_root: Path | None) -> bytes | None:
    """The TUF root to start from: --tuf-root, else the one kept from an earlier update, else the shipped public one."""
    source = tuf_root
    if source is None:
        if (state / "root.json").is_file():
            return None  # the client loads the root it kept
        if url != PUBLIC_TUF_URL:
            raise BuildError(f"--tuf-url {url}: no TUF root is kept for this repository yet; give --tuf-root FILE (its root.json, from its operators)")
        source = PUBLIC_TUF_ROOT
    try:
        data = read_small_file(source, MAX_TUF_ROOT_BYTES, "TUF root.json (a few KiB)")
    except SmallFileError as error:
        raise BuildError(f"--tuf-root {source}: {error}") from None
    return data
