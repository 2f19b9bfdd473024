"""Upstream signatures at build: find Kubernetes' keyless signatures, verify them, keep the evidence for the bundle.

- A release file: cosign's `.sig` (base64 signature) and `.cert` (base64 PEM
  certificate) beside it, and its entry in the transparency log, looked up in
  Rekor's API by the file's sha256 (`/api/v1/index/retrieve`, then
  `/api/v1/log/entries/{uuid}`) at the trust root's log URL.
- An image on a registry with a known signer (registry.k8s.io): cosign's
  signature manifest, tag `sha256-<hex>.sig` in the image's repository, whose
  simple-signing layers carry the signed payload with the certificate and the
  Rekor bundle (the log's signed entry timestamp) as annotations; the same
  entry looked up in Rekor adds its inclusion proof to the carried evidence.

Absence is recorded (the artifact keeps its checksum's provenance); a signature
that exists and does not verify stops the build. Every check is
bundle.keyless.verify, the function nodes run on the carried evidence, so a
bundle the build accepts is one the nodes accept. Transfers go through the
build's Http (its retries) and the registry clients of builder.images.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder.errors import BuildError, FetchError
from builder.progress import Progress
from builder.transfer import Http
from bundle.atomic import write_atomic
from bundle.errors import JsonObjectError, TrustError
from bundle.jsonobject import parse_array, parse_object
from bundle.keyless import MAX_REKOR_BODY, Evidence, Expected, LogEntry, SignatureError, TrustRoot, Verified, signed_image, verify
from bundle.manifest import FileEntry, format_time
from bundle.oci import MAX_MANIFEST_BYTES
from bundle.provenance import SIGNED, Provenance
from bundle.reference import ImageRef
from bundle.store import BlobStore

MAX_SIGNATURE_FILE = 64 << 10
MAX_REKOR_ANSWER = 1 << 20
MAX_LOG_CANDIDATES = 32
MAX_SIGNATURE_LAYERS = 16
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGNATURE_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
_UUID = re.compile(r"^([0-9a-f]{16})?[0-9a-f]{64}$")  # Rekor's entry UUID: tree id (optional) and leaf hash


def file_evidence_member(member: str) -> str:
    return f"provenance/files/{member}.sigstore.json"


def image_evidence_members(reference: ImageRef, digest: str) -> tuple[str, str]:
    """The Sigstore bundle and the signed simple-signing payload of an image's signature."""
    stem = f"provenance/images/{reference.registry}/{reference.repository}/{digest.replace(':', '-')}"
    return f"{stem}.sigstore.json", f"{stem}.payload.json"


@dataclass(frozen=True)
class Found:
    """A verified signature: its provenance record and the evidence members to carry (path -> bytes)."""

    provenance: Provenance
    members: dict[str, bytes]


class Signatures:
    """Looks signatures up and verifies them; thread-safe, one per build."""

    def __init__(self, http: Http, store: BlobStore, root: TrustRoot, cache_dir: Path, progress: Progress, fetch_optional: Callable[[str, int], bytes | None]):
        self.http = http
        self.store = store
        self.root = root
        self.rekor = root.rekor_url()
        self.memo_dir = Path(cache_dir) / "rekor"
        self.progress = progress
        self.fetch_optional = fetch_optional
        self._lock = threading.Lock()
        self._members: dict[str, bytes] = {}
        self.verified = 0
        self.seconds = 0.0  # in bundle.keyless.verify
        self.looking = 0.0  # finding signatures and log entries (transfers), summed over the build's threads

    def members(self) -> list[FileEntry]:
        """The evidence of every signature verified so far, as members written by the build (put into the store)."""
        entries = []
        with self._lock:
            found = dict(self._members)
        for path, data in sorted(found.items()):
            digest = self.store.put_bytes(data)
            entries.append(FileEntry(path, digest.split(":", 1)[1], len(data), 0o644))
        return entries

    def keep(self, found: Found) -> Provenance:
        with self._lock:
            self._members.update(found.members)
        return found.provenance

    def check(self, evidence: Evidence, sha256: str, expected: Expected) -> Verified:
        started = time.perf_counter()
        try:
            return verify(evidence, sha256, expected, self.root, datetime.now(UTC))
        finally:
            with self._lock:
                self.verified += 1
                self.seconds += time.perf_counter() - started

    def timed(self, look, *args) -> Found | None:
        """Run one lookup, adding its time less its verification to `looking`."""
        started, verifying = time.perf_counter(), self.seconds
        try:
            return look(*args)
        finally:
            with self._lock:
                self.looking += time.perf_counter() - started - (self.seconds - verifying)

    def file(self, member: str, url: str, sha256: str, expected: Expected) -> Found | None:
        """A release file's keyless signature (`URL.sig`, `URL.cert`), verified; None when the upstream publishes none."""
        return self.timed(self._file, member, url, sha256, expected)

    def _file(self, member: str, url: str, sha256: str, expected: Expected) -> Found | None:
        signature_file = self.fetch_optional(url + ".sig", MAX_SIGNATURE_FILE)
        if signature_file is None:
            return None
        certificate_file = self.fetch_optional(url + ".cert", MAX_SIGNATURE_FILE)
        if certificate_file is None:
            raise BuildError(f"{member}: {url}.sig is published but {url}.cert is not; a keyless signature needs both (stopped)")
        signature = _signature(signature_file, f"{url}.sig")
        certificate = _certificate(certificate_file, f"{url}.cert")
        evidence = Evidence(certificate, signature, sha256, self._log_entry(sha256, signature, certificate))
        try:
            verified = self.check(evidence, sha256, expected)
        except TrustError as error:
            raise BuildError(
                f"{member}: its upstream signature ({url}.sig) does not verify: {error}; the file or its signature is not what "
                f"{expected.signer or expected.identity} published (stopped; nothing was written)"
            ) from None
        path = file_evidence_member(member)
        return Found(signed_provenance(verified, expected, f"{url}.sig", path), {path: evidence.to_json()})

    def image(self, reference: ImageRef, digest: str, repository_url: str, send, expected: Expected) -> Found | None:
        """An image's cosign signature (`sha256-<hex>.sig` beside it), verified; None when the registry holds none.

        Each simple-signing layer is one signature; the image is signed when one of them verifies for
        `expected`, and a signature manifest none of whose layers verifies stops the build.
        """
        return self.timed(self._image, reference, digest, repository_url, send, expected)

    def _image(self, reference: ImageRef, digest: str, repository_url: str, send, expected: Expected) -> Found | None:
        tag = digest.replace(":", "-") + ".sig"
        where = f"{reference.registry}/{reference.repository}:{tag}"
        fetched = self.http.get_bytes(f"{repository_url}/manifests/{tag}", MAX_SIGNATURE_FILE, {"Accept": SIGNATURE_ACCEPT}, send, missing_ok=True)
        if fetched is None:
            return None
        try:
            manifest = parse_object(fetched.body, f"{reference}: {where}", MAX_MANIFEST_BYTES)
            layers = [layer for layer in manifest["layers"][:MAX_SIGNATURE_LAYERS] if layer.get("mediaType") == SIMPLE_SIGNING]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BuildError(f"{reference}: {where} is not a cosign signature manifest (stopped)") from None
        if not layers:
            raise BuildError(f"{reference}: {where} holds no cosign simple-signing layer (stopped)")
        reasons = []
        for number, layer in enumerate(layers, 1):
            try:
                return self._image_layer(reference, digest, repository_url, send, expected, layer, where)
            except TrustError as error:
                reasons.append(f"signature {number}: {error}")
        raise BuildError(
            f"{reference}: its upstream signature ({where}) does not verify: {'; '.join(reasons)}; the image or its signature is not what "
            f"{expected.signer or expected.identity} published (stopped; nothing was written)"
        )

    def _image_layer(self, reference: ImageRef, digest: str, repository_url: str, send, expected: Expected, layer: dict, where: str) -> Found:
        annotations = layer.get("annotations") or {}
        blob = layer.get("digest")
        if not isinstance(blob, str) or not re.match(r"^sha256:[0-9a-f]{64}$", blob) or not isinstance(annotations, dict):
            raise SignatureError("the layer has no sha256 digest or no annotations")
        payload = self.http.get_bytes(f"{repository_url}/blobs/{blob}", MAX_SIGNATURE_FILE, send=send).body
        sha256 = hashlib.sha256(payload).hexdigest()
        if f"sha256:{sha256}" != blob:
            raise FetchError(f"{repository_url}/blobs/{blob}: checksum mismatch: expected {blob}, got sha256:{sha256}")
        signed_digest, _ = signed_image(payload, "the simple-signing payload")
        if signed_digest != digest:
            raise SignatureError(f"the payload signs the image {signed_digest}, not {digest}")
        signature = annotations.get(SIGNATURE_ANNOTATION)
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        if not isinstance(signature, str) or not isinstance(certificate, str):
            raise SignatureError(f"the layer has no {SIGNATURE_ANNOTATION} or {CERTIFICATE_ANNOTATION} annotation (not a keyless signature)")
        bundle = annotations.get(BUNDLE_ANNOTATION)
        entry = LogEntry.from_cosign_bundle(bundle, BUNDLE_ANNOTATION) if isinstance(bundle, str) else None
        signature, certificate = _signature(signature.encode(), SIGNATURE_ANNOTATION), _certificate(certificate.encode(), CERTIFICATE_ANNOTATION)
        if entry is not None and entry.proof is None:
            # cosign's annotation carries the log's SET only. The log's own answer for this very entry adds its inclusion
            # proof: the carried evidence then also checks against a checkpoint the log signed, as a binary's does.
            logged = self._log_entry(sha256, signature, certificate)
            if logged is not None and logged.proof is not None and (logged.log_index, logged.log_id, logged.body) == (entry.log_index, entry.log_id, entry.body):
                entry = replace(entry, proof=logged.proof)
        evidence = Evidence(certificate, signature, sha256, entry)
        verified = self.check(evidence, sha256, expected)
        evidence_path, payload_path = image_evidence_members(reference, digest)
        return Found(signed_provenance(verified, expected, where, evidence_path, payload_path), {evidence_path: evidence.to_json(), payload_path: payload})

    def _log_entry(self, sha256: str, signature: bytes, certificate: x509.Certificate) -> LogEntry | None:
        """The transparency-log entry of exactly this signature, from Rekor (remembered in the cache: entries never change)."""
        der = certificate.public_bytes(serialization.Encoding.DER)
        memo = self.memo_dir / hashlib.sha256(bytes.fromhex(sha256) + signature + der).hexdigest()
        if memo.is_file():
            digest = memo.read_text().strip()
            if self.store.exists(digest):
                return LogEntry.from_rekor(parse_object(self.store.read(digest, MAX_REKOR_ANSWER), f"{self.rekor} (cached)", MAX_REKOR_ANSWER), f"{self.rekor} (cached)")
        search = f"{self.rekor}/api/v1/index/retrieve"
        response = self.http.call(
            "POST", search, self.http.send, {"Content-Type": "application/json", "Accept": "application/json"}, json.dumps({"hash": f"sha256:{sha256}"}).encode()
        )
        if response.status_code != 200 or len(response.content) > MAX_REKOR_ANSWER:
            raise FetchError(f"{search}: HTTP {response.status_code}; the transparency log must answer to verify a signature")
        try:
            uuids = parse_array(response.content, f"{search}: the answer", MAX_REKOR_ANSWER)
        except JsonObjectError as error:
            raise FetchError(f"{error}; it must be a list of entry UUIDs") from None
        for uuid in uuids[:MAX_LOG_CANDIDATES]:
            if not isinstance(uuid, str) or not _UUID.match(uuid):
                raise FetchError(f"{search}: {str(uuid)[:100]!r} is not a Rekor entry UUID")
            url = f"{self.rekor}/api/v1/log/entries/{uuid}"
            answer = self.http.get_bytes(url, MAX_REKOR_ANSWER, {"Accept": "application/json"})
            try:
                values = list(parse_object(answer.body, url, MAX_REKOR_ANSWER).values())
            except (ValueError, AttributeError):
                raise FetchError(f"{url}: the answer is not a Rekor entry") from None
            if len(values) != 1:
                raise FetchError(f"{url}: expected one entry, got {len(values)}")
            entry = LogEntry.from_rekor(values[0], url)
            if _records(entry, signature, certificate):
                write_atomic(memo, self.store.put_bytes(json.dumps(values[0]).encode()).encode())
                return entry
        return None


def signed_provenance(verified: Verified, expected: Expected, where: str, evidence: str, payload: str = "") -> Provenance:
    return Provenance(
        SIGNED,
        detail=where,
        signer=expected.signer,
        identity=verified.identity,
        issuer=verified.issuer,
        evidence=evidence,
        payload=payload,
        log_index=verified.log_index,
        signed_at=format_time(verified.signed_at),
    )


def _records(entry: LogEntry, signature: bytes, certificate: x509.Certificate) -> bool:
    """Whether a log entry is this signature's (the full check is keyless.verify's; this only picks among candidates)."""
    try:
        spec = parse_object(entry.body, "the transparency-log entry's body", MAX_REKOR_BODY)["spec"]["signature"]
        logged = base64.b64decode(spec["content"], validate=True)
        key = base64.b64decode(spec["publicKey"]["content"], validate=True)
        return logged == signature and x509.load_pem_x509_certificate(key) == certificate
    except (KeyError, TypeError, ValueError, binascii.Error):
        return False


def _signature(data: bytes, where: str) -> bytes:
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BuildError(f"{where}: not a base64 signature (cosign sign-blob --output-signature)") from None


def _certificate(data: bytes, where: str) -> x509.Certificate:
    """cosign writes the certificate as base64 of its PEM; a plain PEM is accepted too (cosign verify-blob reads both)."""
    text = data.strip()
    try:
        pem = text if text.startswith(b"-----BEGIN") else base64.b64decode(text, validate=True)
        return x509.load_pem_x509_certificate(pem)
    except (binascii.Error, ValueError):
        raise BuildError(f"{where}: not a certificate (PEM, or base64 of a PEM, as cosign writes it)") from None
