"""Provenance: how the integrity of each upstream file and image was established, as bundle.json records it.

Four kinds, strongest first:

- `signed`: a verified upstream signature (Sigstore keyless): who signed, under
  which identity and OIDC issuer; the evidence travels in the bundle so that
  nodes and reviewers re-check it offline (bundle.keyless).
- `pinned`: a digest fixed before the download, by airlock's own table or by
  the operator (`--flannel-sha256`, an image named by digest).
- `published-sha256`: a checksum (or, for an image, the digest of a tag)
  published by the same origin that served the bytes.
- `unpinned`: nothing but TLS vouches for the bytes.

`--require signed|pinned|any` is checked against these records: `pinned`
accepts anything held to a digest known before the bytes arrived (a published
checksum counts), `signed` only verified signatures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bundle.errors import BundleError
from bundle.manifest import MANIFEST_NAME, check_member_path, is_hex_digest

SIGNED = "signed"
PINNED = "pinned"
PUBLISHED = "published-sha256"
UNPINNED = "unpinned"
KINDS = (SIGNED, PINNED, PUBLISHED, UNPINNED)
# What `inspect` and the build's summary call each kind.
LABELS = {SIGNED: "signed", PUBLISHED: "published checksum", PINNED: "pinned", UNPINNED: "unpinned"}
REQUIRE_LEVELS = ("signed", "pinned", "any")
TRUSTED_ROOT_MEMBER = "provenance/trusted_root.json"
EVIDENCE_PREFIX = "provenance/"
_TEXT_FIELDS = ("detail", "signer", "identity", "issuer", "evidence", "payload", "signed_at")


@dataclass(frozen=True)
class Provenance:
    """One file's or image's record. `evidence` (and `payload`, for an image) name members of the bundle."""

    kind: str
    detail: str = ""  # where the digest came from: the checksum's URL, who pinned it, the signature's location
    signer: str = ""  # signed: who, in words ("Kubernetes release engineering")
    identity: str = ""  # signed: the certificate's subject alternative name
    issuer: str = ""  # signed: the certificate's OIDC issuer
    evidence: str = ""  # signed: the member holding the Sigstore bundle (certificate, signature, log entry)
    payload: str = ""  # signed image: the member holding the signed simple-signing payload
    log_index: int | None = None  # signed: the transparency-log index
    signed_at: str = ""  # signed: the log's integrated time, UTC

    def meets(self, require: str) -> bool:
        if require == "signed":
            return self.kind == SIGNED
        if require == "pinned":
            return self.kind != UNPINNED
        return True

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def to_dict(self) -> dict:
        document: dict = {"kind": self.kind}
        for name in _TEXT_FIELDS:
            if getattr(self, name):
                document[name] = getattr(self, name)
        if self.log_index is not None:
            document["log_index"] = self.log_index
        return document

    @classmethod
    def parse(cls, raw: object, where: str) -> Provenance:
        """A record from bundle.json, checked by type; evidence paths must be safe member names under provenance/."""
        if not isinstance(raw, dict):
            raise BundleError(f"{where}provenance is not an object", MANIFEST_NAME)
        kind = raw.get("kind")
        if kind not in KINDS:
            raise BundleError(f"{where}provenance.kind {kind!r} is not one of {', '.join(KINDS)}", MANIFEST_NAME)
        values = {}
        for name in _TEXT_FIELDS:
            value = raw.get(name, "")
            if not isinstance(value, str):
                raise BundleError(f"{where}provenance.{name} is not a string", MANIFEST_NAME)
            values[name] = value
        log_index = raw.get("log_index")
        if log_index is not None and (not isinstance(log_index, int) or isinstance(log_index, bool) or log_index < 0):
            raise BundleError(f"{where}provenance.log_index is not a whole number", MANIFEST_NAME)
        for name in ("evidence", "payload"):
            if values[name]:
                check_member_path(values[name])
                if not values[name].startswith(EVIDENCE_PREFIX):
                    raise BundleError(f"{where}provenance.{name} {values[name]!r} is not under {EVIDENCE_PREFIX}", MANIFEST_NAME)
        if kind == SIGNED and not (values["identity"] and values["issuer"] and values["evidence"]):
            raise BundleError(f"{where}provenance: a signed record names its identity, issuer and evidence", MANIFEST_NAME)
        return cls(kind=kind, log_index=log_index, **values)


@dataclass(frozen=True)
class BundleProvenance:
    """bundle.json's top-level `provenance`: the Sigstore trust root the build verified against (pinned) and the level it required."""

    trusted_root_sha256: str
    require: str = "any"
    trusted_root: str = TRUSTED_ROOT_MEMBER

    def to_dict(self) -> dict:
        return {"require": self.require, "trusted_root": self.trusted_root, "trusted_root_sha256": self.trusted_root_sha256}

    @classmethod
    def parse(cls, raw: object) -> BundleProvenance:
        if not isinstance(raw, dict):
            raise BundleError("provenance is not an object", MANIFEST_NAME)
        sha256, require, path = raw.get("trusted_root_sha256"), raw.get("require"), raw.get("trusted_root")
        if not is_hex_digest(sha256):
            raise BundleError("provenance.trusted_root_sha256 is not 64 lowercase hex digits", MANIFEST_NAME)
        if require not in REQUIRE_LEVELS:
            raise BundleError(f"provenance.require {require!r} is not one of {', '.join(REQUIRE_LEVELS)}", MANIFEST_NAME)
        if path != TRUSTED_ROOT_MEMBER:
            raise BundleError(f"provenance.trusted_root must be {TRUSTED_ROOT_MEMBER}", MANIFEST_NAME)
        return cls(sha256, require, path)


def named_records(manifest) -> list[tuple[str, Provenance]]:
    """(member path or image reference, record) for every file and image of a manifest that has one."""
    named = [(entry.path, entry.provenance) for entry in manifest.files if entry.provenance is not None]
    return named + [(image.reference, image.provenance) for image in manifest.images if image.provenance is not None]


def records(manifest) -> list[Provenance]:
    return [record for _, record in named_records(manifest)]


def counts(records: list[Provenance]) -> dict[str, int]:
    found = dict.fromkeys(KINDS, 0)
    for record in records:
        found[record.kind] += 1
    return found


def summary(records: list[Provenance]) -> str:
    """"42 signed, 3 published checksum, 1 pinned, 0 unpinned"."""
    found = counts(records)
    return ", ".join(f"{found[kind]} {LABELS[kind]}" for kind in (SIGNED, PUBLISHED, PINNED, UNPINNED))


def shortfall(named: list[tuple[str, Provenance]], require: str) -> list[tuple[str, Provenance]]:
    """What falls short of `--require`: (name, record) in the order given."""
    return [(name, record) for name, record in named if not record.meets(require)]


@dataclass(frozen=True)
class Rechecked:
    """What an offline re-check established."""

    signatures: int  # signatures re-verified from the evidence carried
    in_base: int  # signed records whose evidence (or trust root) a delta's base bundle carries: checked when the delta is installed on it
    trusted_root_sha256: str


def recheck(manifest, read) -> Rechecked:
    """Re-verify every signed record of `manifest` offline, against the evidence and trust root the bundle carries.

    `read(path)` returns a member's bytes, or None when the member is not at hand (a delta's base member);
    each is held to the sha256 bundle.json lists before it is used. Raises TrustError naming the file or
    image whose carried signature does not verify.
    """
    from bundle.errors import TrustError
    from bundle.keyless import MAX_EVIDENCE_BYTES, Evidence, Expected, TrustRoot, signed_image, verify

    if manifest.provenance is None:
        raise TrustError("bundle.json records no provenance (built by an airlock from before provenance was recorded); nothing to re-verify")

    def member(path: str, name: str, limit: int) -> bytes | None:
        entry = manifest.file(path)
        if entry is None:
            raise TrustError(f"{name}: its provenance names {path}, which bundle.json does not list")
        data = read(path)
        if data is None:
            if entry.carried:
                raise TrustError(f"{name}: its provenance names {path}, which is not in the bundle")
            return None
        if len(data) > limit or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise TrustError(f"{path}: its bytes are not the ones bundle.json lists (sha256 {entry.sha256})")
        return data

    signed = [(name, record) for name, record in named_records(manifest) if record.kind == SIGNED]
    root_bytes = member(manifest.provenance.trusted_root, "provenance", 1 << 20)
    if root_bytes is None:
        # A delta alone, whose trust root is its base's: nothing can be checked before it is installed on that base.
        return Rechecked(0, len(signed), manifest.provenance.trusted_root_sha256)
    if hashlib.sha256(root_bytes).hexdigest() != manifest.provenance.trusted_root_sha256:
        raise TrustError(f"{manifest.provenance.trusted_root}: not the trust root bundle.json pins (sha256 {manifest.provenance.trusted_root_sha256})")
    root = TrustRoot.parse(root_bytes, manifest.provenance.trusted_root)
    images = {image.reference: image for image in manifest.images}
    checked = in_base = 0
    for name, record in signed:
        evidence_bytes = member(record.evidence, name, MAX_EVIDENCE_BYTES)
        if evidence_bytes is None:
            in_base += 1
            continue
        try:
            evidence = Evidence.parse(evidence_bytes, record.evidence)
            if name in images:
                if not record.payload:
                    raise TrustError("a signed image record names no payload")
                payload = member(record.payload, name, 64 << 10)
                if payload is None:
                    in_base += 1
                    continue
                digest, _ = signed_image(payload, record.payload)
                if digest != images[name].digest:
                    raise TrustError(f"the signed payload is for the image {digest}, not {images[name].digest}")
                sha256 = hashlib.sha256(payload).hexdigest()
            else:
                sha256 = manifest.file(name).sha256
            verify(evidence, sha256, Expected(record.identity, record.issuer), root)
        except TrustError as error:
            raise TrustError(f"{name}: its carried signature ({record.evidence}) does not verify offline: {error}") from None
        checked += 1
    return Rechecked(checked, in_base, manifest.provenance.trusted_root_sha256)


class EvidenceCollector:
    """A verify_stream sink that keeps the (small) provenance/ members in memory, for `recheck` after the stream verified."""

    LIMIT = 1 << 20

    def __init__(self):
        self.members: dict[str, bytes] = {}

    def sink(self, entry):
        if not entry.path.startswith(EVIDENCE_PREFIX) or entry.size > self.LIMIT:
            return None
        return _Kept(self.members, entry.path)


class _Kept:
    def __init__(self, members: dict[str, bytes], path: str):
        self._members, self._path, self._data = members, path, bytearray()

    def write(self, data: bytes) -> None:
        self._data += data

    def done(self) -> None:
        self._members[self._path] = bytes(self._data)

    def abort(self) -> None:
        self._data = bytearray()
