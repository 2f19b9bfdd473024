"""`airlock diff OLD NEW`: what changed between two bundles, and what a full, a delta and a tag-level update would move."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bundle.manifest import Manifest
from bundle.reference import ImageRef

BLOBS = "images/blobs/sha256/"


@dataclass
class BundleDiff:
    old_version: str
    new_version: str
    components: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    images_added: list[str] = field(default_factory=list)
    images_removed: list[str] = field(default_factory=list)
    images_changed: list[tuple[str, str]] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    full_bytes: int = 0
    delta_bytes: int = 0
    tag_level_bytes: int = 0

    def to_dict(self) -> dict:
        document = asdict(self)
        document["delta_over_full"] = round(self.delta_bytes / self.full_bytes, 4) if self.full_bytes else None
        document["tag_level_over_full"] = round(self.tag_level_bytes / self.full_bytes, 4) if self.full_bytes else None
        return document


def diff(old: Manifest, new: Manifest) -> BundleDiff:
    result = BundleDiff(old.version, new.version)
    for name in sorted(set(old.components) | set(new.components)):
        before, after = old.components.get(name), new.components.get(name)
        if before != after:
            result.components[name] = (before, after)
    old_images = {image.reference: image for image in old.images}
    new_images = {image.reference: image for image in new.images}
    old_by_name = {ImageRef.parse(ref).name: ref for ref in old_images}
    new_by_name = {ImageRef.parse(ref).name: ref for ref in new_images}
    for name in sorted(set(old_by_name) | set(new_by_name)):
        before, after = old_by_name.get(name), new_by_name.get(name)
        if before is None:
            result.images_added.append(after)
        elif after is None:
            result.images_removed.append(before)
        elif before != after or old_images[before].digest != new_images[after].digest:
            result.images_changed.append((before, after))
    old_digests = {entry.sha256 for entry in old.files}
    new_only = [entry for entry in new.files if entry.sha256 not in old_digests]
    result.files_changed = sorted(entry.path for entry in new_only if not entry.path.startswith(BLOBS))
    result.full_bytes = new.total_size
    result.delta_bytes = sum(entry.size for entry in new_only)
    # What a tag-level differential moves: every blob of every image whose reference or digest changed
    # (each blob once), plus the changed files.
    blob_sizes = {entry.path[len(BLOBS) :]: entry.size for entry in new.files if entry.path.startswith(BLOBS)}
    retagged = {
        blob.split(":", 1)[1]
        for reference, image in new_images.items()
        if reference not in old_images or old_images[reference].digest != image.digest
        for blob in image.blobs
    }
    result.tag_level_bytes = sum(blob_sizes.get(blob, 0) for blob in retagged) + sum(
        entry.size for entry in new_only if not entry.path.startswith(BLOBS)
    )
    return result
