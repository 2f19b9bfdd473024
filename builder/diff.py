"""`airlock diff OLD NEW`: what changed between two bundles, and what a full, a delta and a tag-level update would move."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.errors import BuildError
from bundle.manifest import Manifest
from bundle.reference import ImageRef

BLOBS = "images/blobs/sha256/"


@dataclass(frozen=True)
class ImageChange:
    old: str
    new: str
    old_digest: str
    new_digest: str


@dataclass(frozen=True)
class ImageSide:
    reference: str
    digest: str


@dataclass
class BundleDiff:
    old_version: str
    new_version: str
    old_platforms: list[str] = field(default_factory=list)
    new_platforms: list[str] = field(default_factory=list)
    components: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    images_added: list[ImageSide] = field(default_factory=list)
    images_removed: list[ImageSide] = field(default_factory=list)
    images_changed: list[ImageChange] = field(default_factory=list)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    full_bytes: int = 0
    delta_bytes: int = 0
    tag_level_bytes: int = 0

    def to_dict(self) -> dict:
        document = asdict(self)
        document["delta_over_full"] = round(self.delta_bytes / self.full_bytes, 4) if self.full_bytes else None
        document["tag_level_over_full"] = round(self.tag_level_bytes / self.full_bytes, 4) if self.full_bytes else None
        return document


def read_manifest(path: Path) -> Manifest:
    """A bundle's bundle.json (unverified: diff only describes), or a bundle.json file itself."""
    from bundle.verify import read_manifest_unverified

    try:
        if path.suffix == ".json":
            return Manifest.parse(path.read_bytes())
        return read_manifest_unverified(path)[0]
    except OSError as error:
        raise BuildError(f"{path}: {error.strerror}") from None


def diff(old: Manifest, new: Manifest) -> BundleDiff:
    result = BundleDiff(old.version, new.version, list(old.platforms), list(new.platforms))
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
            result.images_added.append(ImageSide(after, new_images[after].digest))
        elif after is None:
            result.images_removed.append(ImageSide(before, old_images[before].digest))
        elif before != after or old_images[before].digest != new_images[after].digest:
            result.images_changed.append(ImageChange(before, after, old_images[before].digest, new_images[after].digest))
    # Files by path: a platform only one side holds shows up as files added or removed, not changed.
    old_files = {entry.path: entry for entry in old.files if not entry.path.startswith(BLOBS)}
    new_files = {entry.path: entry for entry in new.files if not entry.path.startswith(BLOBS)}
    result.files_added = sorted(set(new_files) - set(old_files))
    result.files_removed = sorted(set(old_files) - set(new_files))
    result.files_changed = sorted(path for path in set(old_files) & set(new_files) if old_files[path].sha256 != new_files[path].sha256)
    old_digests = {entry.sha256 for entry in old.files}
    new_only = [entry for entry in new.files if entry.sha256 not in old_digests]
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


def short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def render(result: BundleDiff, human_size) -> str:
    """The text form of `airlock diff`."""
    lines = [f"kubernetes  {result.old_version} -> {result.new_version}"]
    if result.old_platforms != result.new_platforms:
        lines.append(f"platforms   {','.join(result.old_platforms)} -> {','.join(result.new_platforms)}")
    lines += [f"  {name}: {before} -> {after}" for name, (before, after) in result.components.items()]
    lines += [f"+ {image.reference}  {short(image.digest)}" for image in result.images_added]
    lines += [f"- {image.reference}  {short(image.digest)}" for image in result.images_removed]
    for change in result.images_changed:
        name = change.new if change.old == change.new else f"{change.old} -> {change.new}"
        lines.append(f"~ {name}  {short(change.old_digest)} -> {short(change.new_digest)}")
    lines += [f"+ {path}" for path in result.files_added]
    lines += [f"- {path}" for path in result.files_removed]
    lines += [f"~ {path}" for path in result.files_changed]
    document = result.to_dict()
    lines += [
        "",
        f"full bundle        {human_size(result.full_bytes)}",
        f"delta (--base)     {human_size(result.delta_bytes)}  ({document['delta_over_full']:.1%} of full)",
        f"tag-level update   {human_size(result.tag_level_bytes)}  ({document['tag_level_over_full']:.1%} of full)",
    ]
    return "\n".join(lines)
