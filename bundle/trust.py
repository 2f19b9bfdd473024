"""Trust decisions: which keys are trusted, whether a signature and a bundle's dates check out.

The deciding functions take bytes and keys and do no I/O; `load_trusted_keys`
is the one edge that reads key files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bundle.errors import TrustError
from bundle.manifest import Manifest

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256"
ALGORITHMS = (ED25519, ECDSA_P256)


@dataclass(frozen=True)
class TrustedKey:
    key_id: str  # sha256 of the SubjectPublicKeyInfo DER, "sha256:<hex>"
    algorithm: str
    public_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    origin: str


def key_id(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def algorithm_of(public_key) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return ECDSA_P256
    raise TrustError("only Ed25519 and ECDSA P-256 keys are supported")


def parse_public_key(pem: bytes, origin: str) -> TrustedKey:
    try:
        public_key = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise TrustError(f"{origin}: not a PEM public key ({error})") from None
    try:
        algorithm = algorithm_of(public_key)
    except TrustError as error:
        raise TrustError(f"{origin}: {error}") from None
    return TrustedKey(key_id(public_key), algorithm, public_key, origin)


def load_trusted_keys(paths: list[Path]) -> list[TrustedKey]:
    """Read every `--key`: a PEM file, or a directory whose *.pub / *.pem files are keys."""
    keys: list[TrustedKey] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".pub", ".pem") and p.is_file())
            if not found:
                raise TrustError(f"{path}: no *.pub or *.pem public keys in this directory")
        elif path.is_file():
            found = [path]
        else:
            raise TrustError(f"{path}: no such key file or directory")
        keys.extend(parse_public_key(p.read_bytes(), str(p)) for p in found)
    if not keys:
        raise TrustError("no trusted key given: pass --key PUB (a file or a directory of public keys)")
    return keys


def verify_signature(data: bytes, signature: bytes, keys: list[TrustedKey]) -> TrustedKey:
    """Return the trusted key that signed `data`, or raise TrustError."""
    for key in keys:
        try:
            if key.algorithm == ED25519:
                key.public_key.verify(signature, data)
            else:
                key.public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return key
    trusted = ", ".join(f"{key.key_id} ({key.origin})" for key in keys)
    claimed = claimed_signer(data)
    if claimed is not None and claimed not in {key.key_id for key in keys}:
        raise TrustError(
            f"bundle.json.sig: the bundle says it was signed by key {claimed}, which is not trusted here (trusted: {trusted}); "
            "compare that fingerprint with the signer's, then trust its public key (--key, or `airlock-node trust add`), or get a bundle signed by a trusted key"
        )
    raise TrustError(
        f"bundle.json.sig: the signature does not match bundle.json under any trusted key ({trusted}); "
        "the bundle was altered or signed by a key you have not trusted"
    )


def claimed_signer(data: bytes) -> str | None:
    """The key id bundle.json says signed it (not trusted: only to name it when no trusted key verifies), or None."""
    from bundle.jsonobject import parse_object
    from bundle.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES

    try:
        signer = parse_object(data, MANIFEST_NAME, MAX_MANIFEST_BYTES).get("signer", {}).get("key_id")
    except (ValueError, AttributeError):
        return None
    return signer if isinstance(signer, str) and len(signer) < 100 and signer.isprintable() else None


def check_dates(manifest: Manifest, now: datetime | None = None) -> None:
    now = now or datetime.now(timezone.utc)
    if manifest.expires <= now:
        raise TrustError(f"bundle.json: the bundle expired at {manifest.expires:%Y-%m-%dT%H:%M:%SZ}; build a new one (or check this node's clock)")
    if manifest.created > manifest.expires:
        raise TrustError("bundle.json: created is after expires")
