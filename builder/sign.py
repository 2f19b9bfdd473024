"""Signing keys: generate, load, sign bundle.json.

Signatures are raw bytes (Ed25519, or DER ECDSA P-256 over SHA-256) so that
`openssl` alone can check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from builder.errors import BuildError
from bundle.atomic import write_atomic
from bundle.trust import ALGORITHMS, ECDSA_P256, ED25519, algorithm_of, key_id


@dataclass(frozen=True)
class SigningKey:
    private_key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str
    key_id: str

    def sign(self, data: bytes) -> bytes:
        if self.algorithm == ED25519:
            return self.private_key.sign(data)
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def generate(out_dir: Path, algorithm: str = ED25519, force: bool = False) -> tuple[Path, Path]:
    """Write airlock.key (PKCS#8, 0600) and airlock.pub (SubjectPublicKeyInfo) into `out_dir`."""
    if algorithm not in ALGORITHMS:
        raise BuildError(f"--algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    private_key = ed25519.Ed25519PrivateKey.generate() if algorithm == ED25519 else ec.generate_private_key(ec.SECP256R1())
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / "airlock.key", out_dir / "airlock.pub"
    if not force and (key_path.exists() or pub_path.exists()):
        raise BuildError(f"{key_path} or {pub_path} already exists; pass --force to replace it")
    private_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(key_path, private_pem, 0o600)
    write_atomic(pub_path, public_pem, 0o644)
    return key_path, pub_path


def load(path: Path) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BuildError(f"--sign-key {path}: {error.strerror}") from None
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise BuildError(f"--sign-key {path}: not an unencrypted PEM private key ({error})") from None
    public_key = private_key.public_key()
    try:
        algorithm = algorithm_of(public_key)
    except Exception:
        raise BuildError(f"--sign-key {path}: only Ed25519 and ECDSA P-256 keys are supported") from None
    if algorithm == ECDSA_P256 and not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise BuildError(f"--sign-key {path}: unsupported key")
    return SigningKey(private_key, algorithm, key_id(public_key))
