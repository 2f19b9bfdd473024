"""The bundle format `airlock.bundle/v1`: manifest types, canonical JSON, path rules.

The builder writes a `Manifest` with `to_json()`; the installer reads one with
`Manifest.parse()`. Parsing is strict: unknown schema, duplicate keys, wrong
types or unsafe paths are refused here, so the rest of the code can trust
the types.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from bundle.errors import BundleError, JsonObjectError
from bundle.jsonobject import parse_object
from bundle.members import MANIFEST_NAME, check_member_path, is_hex_digest  # noqa: F401  (named here for the rest of the code)

if TYPE_CHECKING:
    from bundle.provenance import BundleProvenance, Provenance

SCHEMA = "airlock.bundle/v1"
SIGNATURE_NAME = "bundle.json.sig"
# bundle.json lists one line per blob; 32 MiB holds several hundred thousand.
MAX_MANIFEST_BYTES = 32 << 20
MAX_SIGNATURE_BYTES = 1024
IMAGE_BLOBS = "images/blobs/sha256/"
IMAGE_INDEX = "images/index.json"
# The node installer as one file (make dist); any architecture, Python 3.9+.
NODE_PYZ = "bin/airlock-node.pyz"
# What a reviewer reads (`inspect`, `report`) comes last, in this order: it depends on every byte before it
# (what is inside the images), so the build writes everything else while it is still reading them. Readers
# of a bundle file reach it by seeking past the members before it; verify and unpack do not depend on order.
API_FINDINGS = "api-versions.json"
SBOM = "sbom.spdx.json"
VULNERABILITIES = "vulnerabilities.json"
REVIEW_MEMBERS = (API_FINDINGS, SBOM, VULNERABILITIES)


def member_order(path: str) -> tuple[int, str]:
    """Sort key for bundle members: by path, then the review members last."""
    return (1, str(REVIEW_MEMBERS.index(path))) if path in REVIEW_MEMBERS else (0, path)

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise BundleError(f"{where} is not a UTC time like 2026-01-31T12:00:00Z: {text!r}", MANIFEST_NAME) from None


def is_digest(text: object) -> bool:
    return isinstance(text, str) and bool(_DIGEST.match(text))


@dataclass(frozen=True)
class FileEntry:
    """One tar member after the signature: what it must hash to and how to write it."""

    path: str
    sha256: str
    size: int
    mode: int
    source: str | None = None
    upstream_sha256: str | None = None
    carried: bool = True  # False in a delta bundle: the member is in its base, not in this tar
    provenance: Provenance | None = None  # upstream files only: how their bytes were vouched for (bundle.provenance)

    @property
    def install_mode(self) -> int:
        """The mode a node gives this file, whatever bundle.json says: 0755 for executables, 0644 otherwise."""
        return 0o755 if self.mode & 0o111 else 0o644

    def to_dict(self) -> dict:
        document = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mode": self.mode,
            "source": self.source,
            "upstream_sha256": self.upstream_sha256,
        }
        if not self.carried:
            document["carried"] = False
        if self.provenance is not None:
            document["provenance"] = self.provenance.to_dict()
        return document


@dataclass(frozen=True)
class ImageEntry:
    """An image the bundle carries, by its upstream reference and digest."""

    reference: str
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    size: int = 0
    blobs: tuple[str, ...] = ()  # every digest the image needs here: index, manifests, configs, layers
    provenance: Provenance | None = None

    def to_dict(self) -> dict:
        document = {
            "reference": self.reference,
            "digest": self.digest,
            "media_type": self.media_type,
            "platforms": list(self.platforms),
            "size": self.size,
            "blobs": list(self.blobs),
        }
        if self.provenance is not None:
            document["provenance"] = self.provenance.to_dict()
        return document


@dataclass(frozen=True)
class BaseRef:
    """The bundle a delta applies on top of."""

    serial: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    serial: int
    created: datetime
    expires: datetime
    requested: str
    version: str
    platforms: tuple[str, ...]
    components: dict[str, str]
    files: tuple[FileEntry, ...]
    images: tuple[ImageEntry, ...]
    signer: dict[str, str] = field(default_factory=dict)
    base: BaseRef | None = None
    provenance: BundleProvenance | None = None  # the trust root the build verified signatures against, and --require
    schema: str = SCHEMA
    unsupported: bool = False  # built with --allow-unsupported-version: a minor outside the supported range

    def to_json(self) -> bytes:
        """The canonical bytes that get signed: sorted keys, no extra whitespace."""
        document = {
            "schema": self.schema,
            "name": self.name,
            "serial": self.serial,
            "created": format_time(self.created),
            "expires": format_time(self.expires),
            "kubernetes": {"requested": self.requested, "version": self.version, **({"unsupported": True} if self.unsupported else {})},
            "platforms": list(self.platforms),
            "components": dict(self.components),
            "files": [entry.to_dict() for entry in self.files],
            "images": [image.to_dict() for image in self.images],
            "signer": dict(self.signer),
            "base": None if self.base is None else {"serial": self.base.serial, "sha256": self.base.sha256},
        }
        if self.provenance is not None:
            document["provenance"] = self.provenance.to_dict()
        return canonical_json(document)

    def file(self, path: str) -> FileEntry | None:
        return self._by_path().get(path)

    def _by_path(self) -> dict[str, FileEntry]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {entry.path: entry for entry in self.files}
            object.__setattr__(self, "_index", cached)
        return cached

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def carried_size(self) -> int:
        """Bytes of members this tar really holds (a delta omits what its base has)."""
        return sum(entry.size for entry in self.files if entry.carried)

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Parse and validate bundle.json bytes; raise BundleError naming the problem."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise BundleError(f"is {len(data)} bytes, over the {MAX_MANIFEST_BYTES} byte cap", MANIFEST_NAME)
        try:
            document = parse_object(data.decode("utf-8"), MANIFEST_NAME, MAX_MANIFEST_BYTES, object_pairs_hook=_refuse_duplicate_keys)
        except UnicodeDecodeError:
            raise BundleError("is not UTF-8", MANIFEST_NAME) from None
        except JsonObjectError as error:
            raise BundleError(error.reason, MANIFEST_NAME) from None
        return _manifest_from_document(document)


def canonical_json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"has the key {key!r} twice", MANIFEST_NAME)
        result[key] = value
    return result


def _need(document: dict, key: str, kind: type | tuple[type, ...], where: str = ""):
    value = document.get(key) if isinstance(document, dict) else None
    # bool is an int subclass; a serial or size of `true` is still wrong.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise BundleError(f"field {where}{key} is missing or not {_kind_name(kind)}", MANIFEST_NAME)
    return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _refuse_file_under_file(paths: set[str]) -> None:
    """`bin/x` and `bin/x/y` cannot both be files: one would have to be a directory."""
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts)):
            parent = "/".join(parts[:end])
            if parent in paths:
                raise BundleError(f"lists both {parent!r} and {path!r}; a file cannot also be a directory", MANIFEST_NAME)


def _check_reference(text: str, where: str) -> str:
    """An image reference in its normal form (registry host/repository:tag), so its host can name a directory."""
    from bundle.reference import ImageRef, ReferenceError

    try:
        normal = str(ImageRef.parse(text))
    except ReferenceError as error:
        raise BundleError(f"{where}reference: {error}", MANIFEST_NAME) from None
    if normal != text:
        raise BundleError(f"{where}reference {text!r} is not in normal form ({normal!r})", MANIFEST_NAME)
    return text


def _provenance(raw: dict, where: str):
    from bundle.provenance import Provenance

    return None if raw.get("provenance") is None else Provenance.parse(raw["provenance"], where)


def _unsupported(kubernetes: dict) -> bool:
    value = kubernetes.get("unsupported", False)
    if not isinstance(value, bool):
        raise BundleError("kubernetes.unsupported must be true or false", MANIFEST_NAME)
    return value


def _manifest_from_document(document: object) -> Manifest:
    from bundle.provenance import BundleProvenance

    if not isinstance(document, dict):
        raise BundleError("is not a JSON object", MANIFEST_NAME)
    schema = _need(document, "schema", str)
    if schema != SCHEMA:
        raise BundleError(f"has schema {schema!r}; this airlock reads {SCHEMA!r} only", MANIFEST_NAME)
    kubernetes = _need(document, "kubernetes", dict)
    files = []
    seen: set[str] = set()
    for index, raw in enumerate(_need(document, "files", list)):
        where = f"files[{index}]."
        path = check_member_path(_need(raw, "path", str, where))
        if path in (MANIFEST_NAME, SIGNATURE_NAME) or path in seen:
            raise BundleError(f"lists member {path!r} twice or lists a reserved name", MANIFEST_NAME)
        seen.add(path)
        sha256 = _need(raw, "sha256", str, where)
        if not is_hex_digest(sha256):
            raise BundleError(f"{where}sha256 is not 64 lowercase hex digits", MANIFEST_NAME)
        if path.startswith(IMAGE_BLOBS) and path[len(IMAGE_BLOBS) :] != sha256:
            raise BundleError(f"image blob {path} is not named by its sha256 {sha256}", MANIFEST_NAME)
        size = _need(raw, "size", int, where)
        mode = _need(raw, "mode", int, where)
        if size < 0 or not 0 <= mode <= 0o777:
            raise BundleError(f"{where}size or mode is out of range", MANIFEST_NAME)
        carried = raw.get("carried", True)
        if not isinstance(carried, bool):
            raise BundleError(f"{where}carried must be true or false", MANIFEST_NAME)
        files.append(FileEntry(path, sha256, size, mode, raw.get("source"), raw.get("upstream_sha256"), carried, _provenance(raw, where)))
    _refuse_file_under_file(seen)
    images = []
    for index, raw in enumerate(_need(document, "images", list)):
        where = f"images[{index}]."
        digest = _need(raw, "digest", str, where)
        if not is_digest(digest):
            raise BundleError(f"{where}digest is not sha256:<64 hex>", MANIFEST_NAME)
        images.append(
            ImageEntry(
                reference=_check_reference(_need(raw, "reference", str, where), where),
                digest=digest,
                media_type=_need(raw, "media_type", str, where),
                platforms=tuple(_need(raw, "platforms", list, where)),
                size=raw.get("size", 0) if isinstance(raw.get("size", 0), int) else 0,
                blobs=tuple(blob for blob in raw.get("blobs", []) if is_digest(blob)),
                provenance=_provenance(raw, where),
            )
        )
    base_raw = document.get("base")
    base = None
    if base_raw is not None:
        base_sha = _need(base_raw, "sha256", str, "base.")
        if not is_hex_digest(base_sha):
            raise BundleError("base.sha256 is not 64 lowercase hex digits", MANIFEST_NAME)
        base = BaseRef(_need(base_raw, "serial", int, "base."), base_sha)
    components = _need(document, "components", dict)
    if not all(isinstance(v, str) for v in components.values()):
        raise BundleError("components must map names to version strings", MANIFEST_NAME)
    signer = document.get("signer") or {}
    if not isinstance(signer, dict) or not all(isinstance(v, str) for v in signer.values()):
        raise BundleError("signer must map names to strings", MANIFEST_NAME)
    platforms = _need(document, "platforms", list)
    if not all(isinstance(p, str) for p in platforms):
        raise BundleError("platforms must be a list of strings like linux/amd64", MANIFEST_NAME)
    return Manifest(
        schema=schema,
        name=_need(document, "name", str),
        serial=_need(document, "serial", int),
        created=parse_time(_need(document, "created", str), "created"),
        expires=parse_time(_need(document, "expires", str), "expires"),
        requested=_need(kubernetes, "requested", str, "kubernetes."),
        version=_need(kubernetes, "version", str, "kubernetes."),
        unsupported=_unsupported(kubernetes),
        platforms=tuple(platforms),
        components=dict(components),
        files=tuple(files),
        images=tuple(images),
        signer=dict(signer),
        base=base,
        provenance=None if document.get("provenance") is None else BundleProvenance.parse(document["provenance"]),
    )
