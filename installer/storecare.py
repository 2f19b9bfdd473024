"""`airlock-node store check` and `airlock-node store prune`."""

from __future__ import annotations

import hashlib
import json
import os

from bundle.artifact import REPOSITORY, tag_for
from bundle.atomic import write_atomic
from bundle.errors import StoreError
from bundle.manifest import Manifest
from bundle.store import CONTAINERD_NAME, REF_NAME, BlobStore, layout_index, open_regular, read_layout_index
from installer.errors import NodeError
from installer.node import Paths, node_lock
from installer.state import State


def check_store(root) -> tuple[int, list[str]]:
    """Re-hash every blob; return how many were checked and the names of those whose content is not their name."""
    store = BlobStore(root)
    if not store.blobs.is_dir():
        raise NodeError(f"{store.root}: no store here")
    checked, corrupt = 0, []
    for blob in sorted(store.blobs.iterdir()):
        digest = hashlib.sha256()
        checked += 1
        try:
            handle = open_regular(blob)  # a symlink or device in the store is corrupt, never followed
        except StoreError:
            corrupt.append(str(blob))
            continue
        with handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != blob.name:
            corrupt.append(str(blob))
    return checked, corrupt


def installed_manifest(paths: Paths) -> Manifest:
    state = State.load(paths)
    installed = state.installed
    if not paths.state_file.exists():
        raise NodeError("nothing is installed on this node; nothing to prune against")
    if not installed:
        raise NodeError("an install or upgrade is in progress (see state.json); finish it before pruning")
    return Manifest.parse((paths.bundles / f"{installed.serial}.json").read_bytes())


def prune_store(paths: Paths, dry_run: bool = False) -> tuple[int, int]:
    """Keep what the installed bundle references (its files, its images and their blobs); drop the rest."""
    with node_lock(paths):
        return _prune(paths, dry_run)


def _prune(paths: Paths, dry_run: bool) -> tuple[int, int]:
    manifest = installed_manifest(paths)
    store = BlobStore(paths.store)
    keep = {entry.sha256 for entry in manifest.files}
    wanted = {image.reference for image in manifest.images}
    # The installed bundle's artifact (what other nodes install from) stays: its manifest, config, bundle.json and signature.
    artifact_name = f"{REPOSITORY}:{tag_for(manifest)}"
    wanted.add(artifact_name)
    index = read_layout_index((store.root / "index.json").read_bytes()) if (store.root / "index.json").exists() else []
    kept_entries = []
    for entry in index:
        annotations = entry.get("annotations") or {}
        if (annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)) in wanted:
            kept_entries.append(entry)
            if annotations.get(REF_NAME) == artifact_name and store.exists(entry.get("digest", "")):
                document = json.loads(store.read(entry["digest"]))
                keep.add(entry["digest"].split(":", 1)[1])
                keep.update(layer["digest"].split(":", 1)[1] for layer in [document["config"], *document["layers"]])
    if not dry_run:
        # The registry stops naming old images first; only then do their blobs go.
        write_atomic(store.root / "index.json", layout_index(kept_entries))
    removed = freed = 0
    for blob in list(store.blobs.iterdir()):
        if blob.name not in keep:
            freed += blob.stat().st_size
            removed += 1
            if not dry_run:
                os.unlink(blob)
    return removed, freed
