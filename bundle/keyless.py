"""Sigstore keyless signatures, verified offline: one function that takes bytes and a trust root and answers.

A keyless signature (cosign's `.sig`/`.cert` beside a Kubernetes binary, or a
cosign signature beside an image) is trusted when, with nothing but the trust
root (`trusted_root.json`):

1. the signature verifies over the artifact's sha256 with the certificate's key;
2. the transparency-log (Rekor) entry records exactly this artifact, signature and
   certificate, and the log's signed entry timestamp (SET) verifies under a log key
   of the trust root; an inclusion proof, when present, leads to a root hash in a
   checkpoint the same log signed;
3. the certificate chains to a certificate authority of the trust root and was
   valid at the time the log signed (short-lived certificates have always expired
   by the time anyone verifies: the SET's time is what counts), and carries a
   certificate-transparency timestamp (SCT) from a CT log of the trust root;
4. the certificate names the expected identity (subject alternative name) and
   OIDC issuer (Fulcio's extensions 1.3.6.1.4.1.57264.1.8, else .1.1).

The build verifies what it fetched with `verify`; nodes and `airlock verify
--provenance` re-verify what the bundle carries with the same function. The
carried form is a Sigstore bundle (`application/vnd.dev.sigstore.bundle...`),
so cosign and sigstore-python read it too. No I/O here; cryptography only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID

from bundle.errors import JsonObjectError, TrustError
from bundle.jsonobject import parse_object
from bundle.signer import Expected  # noqa: F401  (re-exported: verify takes one)

BUNDLE_V01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_TYPES = (BUNDLE_V01, "application/vnd.dev.sigstore.bundle+json;version=0.2", "application/vnd.dev.sigstore.bundle+json;version=0.3", BUNDLE_V03)
TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
OIDC_ISSUER = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # the issuer URL as raw bytes (Fulcio's first extension)
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # the same, DER-encoded as a UTF8String
MAX_EVIDENCE_BYTES = 256 << 10
MAX_PROOF_HASHES = 64
MAX_REKOR_BODY = MAX_EVIDENCE_BYTES  # a log entry's body or cosign's bundle annotation lies inside evidence of that size
_SIGNATURE_LINE = re.compile("\u2014 (\\S+) (\\S+)\n")


class SignatureError(TrustError):
    """An upstream signature that exists and does not verify; the message says which check failed."""


@dataclass(frozen=True)
class Validity:
    start: datetime | None = None
    end: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (self.end is None or moment <= self.end)


@dataclass(frozen=True)
class LogKey:
    """A transparency log (Rekor) or certificate-transparency log of the trust root: its key and its id (sha256 of the key)."""

    key_id: bytes
    public_key: object
    validity: Validity
    base_url: str = ""


@dataclass(frozen=True)
class Authority:
    """A certificate authority (Fulcio) of the trust root: its chain, leaf-most first."""

    certificates: tuple[x509.Certificate, ...]
    validity: Validity
    uri: str = ""


@dataclass(frozen=True)
class TrustRoot:
    """A Sigstore `trusted_root.json`, parsed."""

    authorities: tuple[Authority, ...]
    tlogs: tuple[LogKey, ...]
    ctlogs: tuple[LogKey, ...]

    @classmethod
    def parse(cls, data: bytes, where: str) -> TrustRoot:
        document = _json_object(data, where, 1 << 20)
        if document.get("mediaType") != TRUSTED_ROOT_TYPE:
            raise TrustError(f"{where}: mediaType is {document.get('mediaType')!r}, not a Sigstore trusted root ({TRUSTED_ROOT_TYPE})")
        authorities = []
        for index, raw in enumerate(_list(document, "certificateAuthorities", where)):
            chain = _list(_object(raw, "certChain", where), "certificates", where)
            certificates = tuple(_certificate(_b64(_object(item, "", where).get("rawBytes"), f"{where}: certificateAuthorities[{index}]")) for item in chain)
            if not certificates:
                raise TrustError(f"{where}: certificateAuthorities[{index}] has no certificates")
            authorities.append(Authority(certificates, _validity(raw.get("validFor"), where), str(raw.get("uri", ""))))
        tlogs = tuple(_log_key(raw, f"{where}: tlogs[{index}]") for index, raw in enumerate(_list(document, "tlogs", where)))
        ctlogs = tuple(_log_key(raw, f"{where}: ctlogs[{index}]") for index, raw in enumerate(document.get("ctlogs") or []))
        if not authorities or not tlogs:
            raise TrustError(f"{where}: a trust root needs at least one certificate authority and one transparency log")
        return cls(tuple(authorities), tlogs, ctlogs)

    def rekor_url(self) -> str:
        """Where to look entries up: the first transparency log the root still accepts new entries from."""
        for log in self.tlogs:
            if log.validity.end is None and log.base_url:
                return log.base_url.rstrip("/")
        return self.tlogs[0].base_url.rstrip("/")


@dataclass(frozen=True)
class InclusionProof:
    log_index: int
    root_hash: bytes
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True)
class LogEntry:
    """A Rekor (v1) entry: the body it logged, where, when, and what the log signed about it."""

    log_index: int
    log_id: bytes
    integrated_time: int
    body: bytes
    kind: str = "hashedrekord"
    version: str = "0.0.1"
    signed_entry_timestamp: bytes | None = None
    proof: InclusionProof | None = None

    @classmethod
    def from_rekor(cls, entry: dict, where: str) -> LogEntry:
        """One value of Rekor's `GET /api/v1/log/entries/{uuid}` answer."""
        try:
            body = base64.b64decode(entry["body"], validate=True)
            kind = parse_object(body, where, MAX_REKOR_BODY)
            verification = entry.get("verification") or {}
            raw_proof = verification.get("inclusionProof")
            proof = None
            if raw_proof:
                proof = InclusionProof(
                    _whole(raw_proof["logIndex"]),
                    bytes.fromhex(raw_proof["rootHash"]),
                    _whole(raw_proof["treeSize"]),
                    tuple(bytes.fromhex(value) for value in raw_proof["hashes"][:MAX_PROOF_HASHES + 1]),
                    str(raw_proof["checkpoint"]),
                )
            set_b64 = verification.get("signedEntryTimestamp")
            return cls(
                log_index=_whole(entry["logIndex"]),
                log_id=bytes.fromhex(entry["logID"]),
                integrated_time=_whole(entry["integratedTime"]),
                body=body,
                kind=str(kind.get("kind", "")),
                version=str(kind.get("apiVersion", "")),
                signed_entry_timestamp=base64.b64decode(set_b64, validate=True) if set_b64 else None,
                proof=proof,
            )
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
            raise TrustError(f"{where}: not a Rekor log entry (body, logIndex, logID, integratedTime, verification)") from None

    @classmethod
    def from_cosign_bundle(cls, annotation: str, where: str) -> LogEntry:
        """cosign's `dev.sigstore.cosign/bundle` annotation: {"SignedEntryTimestamp", "Payload": {body, integratedTime, logIndex, logID}}."""
        try:
            document = parse_object(annotation, where, MAX_REKOR_BODY)
            payload = document["Payload"]
            return cls.from_rekor(
                {
                    "body": payload["body"],
                    "integratedTime": payload["integratedTime"],
                    "logIndex": payload["logIndex"],
                    "logID": payload["logID"],
                    "verification": {"signedEntryTimestamp": document.get("SignedEntryTimestamp")},
                },
                where,
            )
        except (KeyError, TypeError, ValueError):
            raise TrustError(f"{where}: the dev.sigstore.cosign/bundle annotation is not cosign's Rekor bundle") from None

    def set_payload(self) -> bytes:
        """The bytes the log's SET signs: canonical JSON (RFC 8785) of body, integratedTime, logID, logIndex."""
        document = {
            "body": base64.b64encode(self.body).decode(),
            "integratedTime": self.integrated_time,
            "logID": self.log_id.hex(),
            "logIndex": self.log_index,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Evidence:
    """Everything needed to check one signature offline: certificate, signature, the log entry. Serialized as a Sigstore bundle."""

    certificate: x509.Certificate
    signature: bytes
    sha256: str  # the digest that was signed (hex)
    entry: LogEntry | None = None

    def to_json(self) -> bytes:
        certificate = base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
        material: dict = {}
        entries = []
        if self.entry is not None:
            entry = self.entry
            raw: dict = {
                "logIndex": str(entry.log_index),
                "logId": {"keyId": base64.b64encode(entry.log_id).decode()},
                "kindVersion": {"kind": entry.kind, "version": entry.version},
                "integratedTime": str(entry.integrated_time),
                "canonicalizedBody": base64.b64encode(entry.body).decode(),
            }
            if entry.signed_entry_timestamp is not None:
                raw["inclusionPromise"] = {"signedEntryTimestamp": base64.b64encode(entry.signed_entry_timestamp).decode()}
            if entry.proof is not None:
                raw["inclusionProof"] = {
                    "logIndex": str(entry.proof.log_index),
                    "rootHash": base64.b64encode(entry.proof.root_hash).decode(),
                    "treeSize": str(entry.proof.tree_size),
                    "hashes": [base64.b64encode(value).decode() for value in entry.proof.hashes],
                    "checkpoint": {"envelope": entry.proof.checkpoint},
                }
            entries.append(raw)
        # v0.3 wants an inclusion proof; a cosign image signature carries only the SET, which is what v0.1 holds.
        with_proof = self.entry is not None and self.entry.proof is not None
        if with_proof:
            material["certificate"] = {"rawBytes": certificate}
        else:
            material["x509CertificateChain"] = {"certificates": [{"rawBytes": certificate}]}
        material["tlogEntries"] = entries
        document = {
            "mediaType": BUNDLE_V03 if with_proof else BUNDLE_V01,
            "verificationMaterial": material,
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": base64.b64encode(bytes.fromhex(self.sha256)).decode()},
                "signature": base64.b64encode(self.signature).decode(),
            },
        }
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, where: str) -> Evidence:
        """A Sigstore bundle with a message signature and at most one transparency-log entry, checked by type."""
        document = _json_object(data, where, MAX_EVIDENCE_BYTES)
        if document.get("mediaType") not in BUNDLE_TYPES:
            raise TrustError(f"{where}: mediaType {document.get('mediaType')!r} is not a Sigstore bundle")
        material = _object(document, "verificationMaterial", where)
        if "certificate" in material:
            certificate = _certificate(_b64(_object(material, "certificate", where).get("rawBytes"), where))
        else:
            chain = _list(_object(material, "x509CertificateChain", where), "certificates", where)
            if not chain:
                raise TrustError(f"{where}: no signing certificate")
            certificate = _certificate(_b64(_object(chain[0], "", where).get("rawBytes"), where))
        message = _object(document, "messageSignature", where)
        digest = _object(message, "messageDigest", where)
        if digest.get("algorithm") != "SHA2_256":
            raise TrustError(f"{where}: the message digest is not SHA2_256")
        sha256 = _b64(digest.get("digest"), where)
        if len(sha256) != 32:
            raise TrustError(f"{where}: the message digest is not a sha256")
        entries = _list(material, "tlogEntries", where)
        if len(entries) > 1:
            raise TrustError(f"{where}: more than one transparency-log entry")
        entry = _entry_from_bundle(_object(entries[0], "", where), where) if entries else None
        return cls(certificate, _b64(message.get("signature"), where), sha256.hex(), entry)


@dataclass(frozen=True)
class Verified:
    """What a verified signature establishes."""

    identity: str
    issuer: str
    signed_at: datetime
    log_index: int


def verify(evidence: Evidence, sha256: str, expected: Expected, root: TrustRoot, now: datetime | None = None) -> Verified:
    """Verify one keyless signature over the artifact whose sha256 (hex) is given; raise SignatureError naming the failed check."""
    certificate = evidence.certificate
    if evidence.sha256 != sha256:
        raise SignatureError(f"the signature is over sha256 {evidence.sha256}, not these bytes' sha256 {sha256}")
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureError("the signing certificate's key is not an ECDSA key (cosign's keyless signatures are)")
    try:
        public_key.verify(evidence.signature, bytes.fromhex(sha256), ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        raise SignatureError(f"the signature does not verify for these bytes (sha256 {sha256}) under the signing certificate's key") from None
    valid = f"valid {_utc(certificate.not_valid_before_utc)} to {_utc(certificate.not_valid_after_utc)}"
    entry = evidence.entry
    if entry is None:
        expired = now is not None and now > certificate.not_valid_after_utc
        raise SignatureError(
            f"no transparency-log entry, so no signed time shows the certificate ({valid}) was valid when it signed"
            + ("; it has expired" if expired else "")
        )
    if entry.signed_entry_timestamp is None:
        raise SignatureError(f"the transparency-log entry has no signed entry timestamp (SET), so nothing shows the certificate ({valid}) was valid when it signed")
    _check_body(entry, evidence, sha256)
    log = _find_log(root.tlogs, entry.log_id, "transparency log")
    signed_at = datetime.fromtimestamp(entry.integrated_time, timezone.utc)
    if not log.validity.covers(signed_at):
        raise SignatureError(f"the transparency log {entry.log_id.hex()[:16]}… did not accept entries at {_utc(signed_at)} (the trust root's validFor)")
    if not _signature_ok(log.public_key, entry.signed_entry_timestamp, entry.set_payload()):
        raise SignatureError(f"the log's signed entry timestamp (SET) for entry {entry.log_index} does not verify under the log's key")
    if entry.proof is not None:
        _check_inclusion(entry, log)
    chain = _check_chain(certificate, root, signed_at, valid)
    if root.ctlogs:
        _check_sct(certificate, chain, root.ctlogs)
    identity, issuer = identity_of(certificate)
    if identity != expected.identity or issuer != expected.issuer:
        raise SignatureError(f"the certificate is for {identity} (OIDC issuer {issuer}), not {expected.identity} (OIDC issuer {expected.issuer})")
    return Verified(identity, issuer, signed_at, entry.log_index)


def signed_image(payload: bytes, where: str) -> tuple[str, str]:
    """A cosign simple-signing payload: (the image manifest digest it signs, the docker-reference it names)."""
    document = _json_object(payload, where, 64 << 10)
    critical = document.get("critical")
    if not isinstance(critical, dict) or critical.get("type") != "cosign container image signature":
        raise SignatureError(f"{where}: not a cosign container image signature (critical.type)")
    image, identity = critical.get("image"), critical.get("identity")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    if not isinstance(digest, str) or not re.match(r"^sha256:[0-9a-f]{64}$", digest) or not isinstance(reference, str):
        raise SignatureError(f"{where}: critical.image.docker-manifest-digest or critical.identity.docker-reference is missing")
    return digest, reference


def identity_of(certificate: x509.Certificate) -> tuple[str, str]:
    """The signer's identity (the SAN: an email address or URI) and OIDC issuer, as Fulcio wrote them."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SignatureError("the signing certificate has no subject alternative name (no identity)") from None
    found = names.get_values_for_type(x509.RFC822Name) + names.get_values_for_type(x509.UniformResourceIdentifier)
    if len(found) != 1:
        raise SignatureError(f"the signing certificate names {len(found)} identities; a Fulcio certificate names one")
    issuers = set()
    for extension in certificate.extensions:
        if extension.oid == OIDC_ISSUER_V2:
            issuers.add(_der_utf8(extension.value.value))
        elif extension.oid == OIDC_ISSUER:
            issuers.add(extension.value.value.decode("utf-8", "replace"))
    if len(issuers) != 1:
        raise SignatureError("the signing certificate names no OIDC issuer, or two different ones (Fulcio extensions 1.3.6.1.4.1.57264.1.1/.1.8)")
    return found[0], issuers.pop()


def _check_body(entry: LogEntry, evidence: Evidence, sha256: str) -> None:
    """The log entry must record this artifact, this signature and this certificate (a hashedrekord 0.0.1)."""
    if (entry.kind, entry.version) != ("hashedrekord", "0.0.1"):
        raise SignatureError(f"the transparency-log entry is a {entry.kind} {entry.version}, not a hashedrekord 0.0.1 of this signature")
    try:
        body = parse_object(entry.body, "the transparency-log entry's body", MAX_REKOR_BODY)
        spec = body["spec"]
        logged_hash = spec["data"]["hash"]
        logged_signature = base64.b64decode(spec["signature"]["content"], validate=True)
        logged_key = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SignatureError("the transparency-log entry's body is not a hashedrekord") from None
    if logged_hash.get("algorithm") != "sha256" or logged_hash.get("value") != sha256:
        raise SignatureError(f"the transparency-log entry {entry.log_index} is for another artifact (sha256 {logged_hash.get('value')}, not {sha256})")
    if logged_signature != evidence.signature:
        raise SignatureError(f"the transparency-log entry {entry.log_index} records another signature")
    try:
        logged_certificate = x509.load_pem_x509_certificate(logged_key)
    except ValueError:
        raise SignatureError(f"the transparency-log entry {entry.log_index} records a key, not this signing certificate") from None
    if logged_certificate != evidence.certificate:
        raise SignatureError(f"the transparency-log entry {entry.log_index} records another signing certificate")


def _check_inclusion(entry: LogEntry, log: LogKey) -> None:
    """RFC 6962 inclusion of the entry's leaf under a root hash that a checkpoint signed by the same log states."""
    proof = entry.proof
    if proof.tree_size < 1 or not 0 <= proof.log_index < proof.tree_size or len(proof.hashes) > MAX_PROOF_HASHES:
        raise SignatureError(f"the inclusion proof of entry {entry.log_index} names index {proof.log_index} in a tree of {proof.tree_size}")
    inner = (proof.log_index ^ (proof.tree_size - 1)).bit_length()
    border = bin(proof.log_index >> inner).count("1")
    if len(proof.hashes) != inner + border:
        raise SignatureError(f"the inclusion proof of entry {entry.log_index} has {len(proof.hashes)} hashes, not {inner + border}")
    node = hashlib.sha256(b"\x00" + entry.body).digest()
    for level, sibling in enumerate(proof.hashes[:inner]):
        node = _children(node, sibling) if (proof.log_index >> level) & 1 == 0 else _children(sibling, node)
    for sibling in proof.hashes[inner:]:
        node = _children(sibling, node)
    if node != proof.root_hash:
        raise SignatureError(f"the inclusion proof of entry {entry.log_index} does not lead to its root hash")
    note, size, root_hash = _checkpoint(proof.checkpoint, log, entry.log_index)
    if size != proof.tree_size or root_hash != proof.root_hash:
        raise SignatureError(f"the checkpoint of entry {entry.log_index} states another tree (size {size}) than its inclusion proof")


def _checkpoint(text: str, log: LogKey, index: int) -> tuple[str, int, bytes]:
    """A signed note (checkpoint): verify the log's signature over its text; return origin, tree size and root hash."""
    if text.count("\n\n") != 1:
        raise SignatureError(f"the checkpoint of entry {index} is not a signed note")
    split = text.index("\n\n")
    note, signatures = text[: split + 1], text[split + 2 :]
    for _, encoded in _SIGNATURE_LINE.findall(signatures):
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if len(raw) > 4 and raw[:4] == log.key_id[:4] and _signature_ok(log.public_key, raw[4:], note.encode()):
            lines = note.rstrip("\n").split("\n")
            try:
                return lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
            except (IndexError, ValueError, binascii.Error):
                raise SignatureError(f"the checkpoint of entry {index} is not origin, size and root hash") from None
    raise SignatureError(f"the checkpoint of entry {index} carries no signature of the log that signed the entry")


def _check_chain(certificate: x509.Certificate, root: TrustRoot, signed_at: datetime, valid: str) -> list[x509.Certificate]:
    """The certificate chains to a trust-root CA valid at `signed_at`; return the chain above the leaf."""
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

    if not certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc:
        raise SignatureError(f"the log signed the entry at {_utc(signed_at)}, when the certificate ({valid}) was not valid")
    anchors = [cert for authority in root.authorities if authority.validity.covers(signed_at) for cert in authority.certificates]
    if not anchors:
        raise SignatureError(f"no certificate authority of the trust root was valid at {_utc(signed_at)}")
    # Fulcio certificates say code signing, not client authentication: only the EKU rule differs from WebPKI's defaults.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    verifier = PolicyBuilder().store(Store(anchors)).time(signed_at).extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier()
    try:
        chain = verifier.verify(certificate, []).chain[1:]
    except (VerificationError, x509.UnsupportedGeneralNameType) as error:
        raise SignatureError(
            f"the signing certificate (issuer {certificate.issuer.rfc4514_string()}) does not chain to a certificate authority of the trust root ({error})"
        ) from None
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise SignatureError("the signing certificate has no key usage or extended key usage") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise SignatureError("the signing certificate is not for code signing (digitalSignature and the code-signing EKU)")
    return chain


def _check_sct(certificate: x509.Certificate, chain: list[x509.Certificate], ctlogs: tuple[LogKey, ...]) -> None:
    """The embedded SCT (RFC 6962 precertificate timestamp) verifies under a CT log of the trust root."""
    try:
        timestamps = certificate.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
    except x509.ExtensionNotFound:
        raise SignatureError("the signing certificate carries no certificate-transparency timestamp (SCT)") from None
    if not chain:
        raise SignatureError("the signing certificate's issuer is not known, so its SCT cannot be checked")
    issuer_key = chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tbs = certificate.tbs_precertificate_bytes
    for sct in timestamps:
        log = next((key for key in ctlogs if key.key_id == sct.log_id), None)
        moment = sct.timestamp.replace(tzinfo=timezone.utc)
        if log is None or not log.validity.covers(moment) or not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
            continue
        entry = hashlib.sha256(issuer_key).digest() + struct.pack("!I", len(tbs))[1:] + tbs
        signed = struct.pack("!BBQH", sct.version.value, 0, int(moment.timestamp() * 1000), sct.entry_type.value) + entry
        signed += struct.pack("!H", len(sct.extension_bytes)) + sct.extension_bytes
        if _signature_ok(log.public_key, sct.signature, signed):
            return
    raise SignatureError("the signing certificate's certificate-transparency timestamp (SCT) does not verify under a CT log of the trust root")


def _find_log(logs: tuple[LogKey, ...], key_id: bytes, what: str) -> LogKey:
    for log in logs:
        if log.key_id == key_id:
            return log
    raise SignatureError(f"the entry was signed by {what} {key_id.hex()[:16]}…, which is not in the trust root")


def _signature_ok(public_key, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def _children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _der_utf8(value: bytes) -> str:
    """Fulcio's .1.8 extension: a DER UTF8String (tag 0x0c), short or long length form."""
    if len(value) < 2 or value[0] != 0x0C:
        raise SignatureError("the OIDC issuer extension (1.3.6.1.4.1.57264.1.8) is not a UTF8String")
    length, offset = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if offset + length != len(value):
        raise SignatureError("the OIDC issuer extension (1.3.6.1.4.1.57264.1.8) has a wrong length")
    return value[offset:].decode("utf-8", "replace")


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_object(data: bytes, where: str, limit: int) -> dict:
    """parse_object, failing as a TrustError: evidence that does not parse is evidence that does not verify."""
    try:
        return parse_object(data, where, limit)
    except JsonObjectError as error:
        raise TrustError(str(error)) from None


def _object(parent: object, key: str, where: str) -> dict:
    value = parent.get(key) if key and isinstance(parent, dict) else parent
    if not isinstance(value, dict):
        raise TrustError(f"{where}: {key or 'an entry'} is not an object")
    return value


def _list(parent: dict, key: str, where: str) -> list:
    value = parent.get(key)
    if not isinstance(value, list):
        raise TrustError(f"{where}: {key} is not a list")
    return value


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise TrustError(f"{where}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrustError(f"{where}: not valid base64") from None


def _whole(value: object) -> int:
    """A protobuf-JSON int64 (a decimal string) or a JSON number; non-negative."""
    if isinstance(value, bool):
        raise ValueError("not a number")
    number = int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None
    if number is None:
        raise ValueError("not a number")
    return number


def _certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise TrustError("a certificate is not DER X.509") from None


def _validity(raw: object, where: str) -> Validity:
    if raw is None:
        return Validity()
    if not isinstance(raw, dict):
        raise TrustError(f"{where}: validFor is not an object")
    return Validity(_time(raw.get("start"), where), _time(raw.get("end"), where))


def _time(text: object, where: str) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TrustError(f"{where}: a time is not text")
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", text)
    if not match:
        raise TrustError(f"{where}: {text!r} is not an RFC 3339 UTC time")
    moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    if match.group(2):
        moment = moment.replace(microsecond=int(float(match.group(2)) * 1_000_000))
    return moment


def _log_key(raw: object, where: str) -> LogKey:
    if not isinstance(raw, dict):
        raise TrustError(f"{where}: not an object")
    key = _object(raw, "publicKey", where)
    der = _b64(key.get("rawBytes"), where)
    try:
        public_key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise TrustError(f"{where}: publicKey.rawBytes is not a DER public key") from None
    # Rekor v1 and CT logs use the sha256 of the key; Rekor v2 logs another id: the root's keyId is what entries name.
    key_id = _b64(_object(raw, "logId", where).get("keyId"), where)
    return LogKey(key_id, public_key, _validity(key.get("validFor"), where), str(raw.get("baseUrl", "")))


def _entry_from_bundle(raw: dict, where: str) -> LogEntry:
    try:
        kind = raw["kindVersion"]
        promise = raw.get("inclusionPromise")
        raw_proof = raw.get("inclusionProof")
        proof = None
        if raw_proof:
            hashes_ = raw_proof.get("hashes") or []
            if not isinstance(hashes_, list) or len(hashes_) > MAX_PROOF_HASHES:
                raise ValueError("hashes")
            proof = InclusionProof(
                _whole(raw_proof["logIndex"]),
                _b64(raw_proof["rootHash"], where),
                _whole(raw_proof["treeSize"]),
                tuple(_b64(value, where) for value in hashes_),
                str(_object(raw_proof, "checkpoint", where)["envelope"]),
            )
        return LogEntry(
            log_index=_whole(raw["logIndex"]),
            log_id=_b64(_object(raw, "logId", where)["keyId"], where),
            integrated_time=_whole(raw["integratedTime"]),
            body=_b64(raw["canonicalizedBody"], where),
            kind=str(kind["kind"]),
            version=str(kind["version"]),
            signed_entry_timestamp=_b64(promise["signedEntryTimestamp"], where) if promise else None,
            proof=proof,
        )
    except (KeyError, TypeError, ValueError):
        raise TrustError(f"{where}: the transparency-log entry is incomplete (logIndex, logId, kindVersion, integratedTime, canonicalizedBody)") from None
