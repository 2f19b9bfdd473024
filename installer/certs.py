"""A small CA and a serving certificate for the node registry.

Other nodes trust the registry with `ca = "…/ca.crt"` in their hosts.toml.
Private keys are written 0600 from their first byte. An existing CA in the
output directory is reused, so certificates for more nodes chain to the same
CA.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bundle.atomic import write_atomic
from bundle.errors import AirlockError


class CertError(AirlockError):
    pass


def _write_private(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, data, 0o600)


def _load_or_make_ca(directory: Path, days: int):
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    if ca_cert_path.exists() and ca_key_path.exists():
        try:
            certificate = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        except ValueError as error:
            raise CertError(f"{directory}: ca.crt/ca.key exist but cannot be read ({error})") from None
        return certificate, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airlock registry CA")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key_path, key)
    write_atomic(ca_cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate, key


def issue(directory: Path, names: list[str], days: int = 825, prefix: str = "registry") -> tuple[Path, Path, Path]:
    """Write `{prefix}.crt`/`{prefix}.key` for `names` (DNS names or IP addresses), signed by the CA in `directory`."""
    if not names:
        raise CertError("give at least one --name (a host name or an IP address of the node)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(directory, days=3650)
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or any(c.isspace() for c in name):
                raise CertError(f"--name {name!r} is neither a host name nor an IP address") from None
            alternatives.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{prefix}.crt", directory / f"{prefix}.key"
    _write_private(key_path, key)
    write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return directory / "ca.crt", cert_path, key_path
