"""A STAND-IN for Sigstore's public-good signing infrastructure, made by the tests: not Sigstore, and trusted by nothing else.

- `CertificateAuthority`: a root and an intermediate in Fulcio's place, issuing
  10-minute code-signing certificates with Fulcio's extensions: the identity as
  the (critical) subject alternative name, the OIDC issuer as 1.3.6.1.4.1.57264.1.1
  (raw) and .1.8 (UTF8String), and an embedded SCT from `CTLog`.
- `CTLog`: a certificate-transparency log key that signs RFC 6962 precertificate
  timestamps.
- `Rekor`: a transparency log in Rekor's place (API v1): hashedrekord 0.0.1 entries
  in an RFC 6962 Merkle tree, each answered with its signed entry timestamp (SET) and
  an inclusion proof under a signed checkpoint; served over HTTP at
  `/api/v1/index/retrieve` and `/api/v1/log/entries/{uuid}`.
- `SigningStandin`: all three plus `trusted_root.json` naming them, and the two ways
  Kubernetes signs: `sign_blob` writes what cosign's `sign-blob --output-signature
  --output-certificate` writes (base64 signature, base64 PEM certificate), and
  `sign_image` pushes what `cosign sign` pushes (an OCI manifest tagged
  `sha256-<hex>.sig` whose simple-signing layer carries the signature, certificate,
  chain and Rekor bundle annotations).

tests/test_signatures.py shows sigstore-python's own verifier accepting this output
given the stand-in's trust root: that is what makes its formats the real ones.
Every bad case the tests need (another identity, another CA, an entry for another
artifact, an expired certificate without a log timestamp) is a parameter here.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import struct
import threading
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBERNETES_BINARIES = ("krel-staging@k8s-releng-prod.iam.gserviceaccount.com", "https://accounts.google.com")
KUBERNETES_IMAGES = ("krel-trust@k8s-releng-prod.iam.gserviceaccount.com", "https://accounts.google.com")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def canonical(document) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([0x0C, len(data)]) + data


def _der_octets(data: bytes) -> bytes:
    if len(data) < 128:
        return bytes([0x04, len(data)]) + data
    length = len(data).to_bytes((len(data).bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + data


class CTLog:
    """A certificate-transparency log key: signs precertificate SCTs (RFC 6962 section 3.2)."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.log_id = hashlib.sha256(spki(self.key.public_key())).digest()

    def sct_extension(self, tbs_precertificate: bytes, issuer_key, when: datetime) -> x509.UnrecognizedExtension:
        milliseconds = int(when.timestamp() * 1000)
        issuer_hash = hashlib.sha256(spki(issuer_key)).digest()
        signed = struct.pack("!BBQH", 0, 0, milliseconds, 1) + issuer_hash + struct.pack("!I", len(tbs_precertificate))[1:] + tbs_precertificate
        signed += struct.pack("!H", 0)
        signature = self.key.sign(signed, ec.ECDSA(hashes.SHA256()))
        # SignedCertificateTimestamp: version, log id, timestamp, no extensions, digitally-signed(sha256=4, ecdsa=3).
        sct = struct.pack("!B", 0) + self.log_id + struct.pack("!QH", milliseconds, 0) + struct.pack("!BBH", 4, 3, len(signature)) + signature
        listed = struct.pack("!H", len(sct)) + sct
        return x509.UnrecognizedExtension(SCT_LIST_OID, _der_octets(struct.pack("!H", len(listed)) + listed))


class CertificateAuthority:
    """A root and an intermediate in Fulcio's place (ECDSA P-384, as Fulcio's)."""

    def __init__(self, ct: CTLog, name: str = "sigstore"):
        self.ct = ct
        start = now() - timedelta(days=365)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), critical=False)
            .sign(self.root_key, hashes.SHA384())
        )
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.intermediate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev"), x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-intermediate")]))
            .issuer_name(root_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()), critical=False)
            .sign(self.root_key, hashes.SHA384())
        )

    def issue(self, public_key, identity: str, issuer: str, not_before: datetime, minutes: int = 10) -> x509.Certificate:
        """A Fulcio-style leaf: empty subject, critical SAN, code signing, OIDC issuer extensions, an embedded SCT."""
        name = x509.UniformResourceIdentifier(identity) if "://" in identity else x509.RFC822Name(identity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(minutes=minutes))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([name]), critical=True)
            .add_extension(x509.UnrecognizedExtension(ISSUER_OID, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2_OID, _der_utf8(issuer)), critical=False)
        )
        # The SCT covers the certificate without itself (what Fulcio's precertificate is): same serial, same fields, added last.
        precertificate = builder.sign(self.key, hashes.SHA384())
        return builder.add_extension(self.ct.sct_extension(precertificate.tbs_certificate_bytes, self.key.public_key(), not_before), critical=False).sign(
            self.key, hashes.SHA384()
        )

    def chain_pem(self) -> str:
        return "".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in (self.intermediate, self.root))


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(False, False, False, False, False, True, True, False, False)


def hashedrekord(sha256: str, signature: bytes, certificate: x509.Certificate) -> bytes:
    """Rekor's canonicalized body of a hashedrekord 0.0.1 entry made by cosign with a Fulcio certificate."""
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return canonical(
        {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": sha256}},
                "signature": {"content": base64.b64encode(signature).decode(), "publicKey": {"content": base64.b64encode(pem).decode()}},
            },
        }
    )


def _leaf(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _tree_hash(leaves[:split]) + _tree_hash(leaves[split:])).digest()


def _path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 audit path, from the leaf's sibling up."""
    if len(leaves) == 1:
        return []
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < split:
        return _path(index, leaves[:split]) + [_tree_hash(leaves[split:])]
    return _path(index - split, leaves[split:]) + [_tree_hash(leaves[:split])]


class Rekor:
    """A transparency log in Rekor's place: Rekor v1's entry, SET, inclusion proof and checkpoint formats, over HTTP."""

    TREE_ID = 8050909264565447525

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.log_id = hashlib.sha256(spki(self.key.public_key())).digest()
        self.origin = f"rekor.standin - {self.TREE_ID}"
        self.bodies: list[bytes] = []
        self.times: list[int] = []
        self.by_hash: dict[str, list[int]] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = None
        self.url = ""

    def add(self, body: bytes, integrated_time: int, indexed_hash: str | None = None) -> int:
        """Append an entry; index it under `indexed_hash` (its artifact's sha256 unless told otherwise)."""
        with self._lock:
            self.bodies.append(body)
            self.times.append(integrated_time)
            index = len(self.bodies) - 1
            sha256 = indexed_hash or json.loads(body)["spec"]["data"]["hash"]["value"]
            self.by_hash.setdefault(sha256, []).append(index)
            return index

    def uuid(self, index: int) -> str:
        return f"{self.TREE_ID:016x}" + _leaf(self.bodies[index]).hex()

    def signed_entry_timestamp(self, index: int) -> bytes:
        payload = canonical(
            {"body": base64.b64encode(self.bodies[index]).decode(), "integratedTime": self.times[index], "logID": self.log_id.hex(), "logIndex": index}
        )
        return self.key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def checkpoint(self, size: int, root: bytes) -> str:
        note = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        signature = self.key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        return note + "\n" + f"\u2014 rekor.standin {base64.b64encode(self.log_id[:4] + signature).decode()}\n"

    def entry(self, index: int) -> dict:
        """`GET /api/v1/log/entries/{uuid}`'s answer: {uuid: entry}."""
        with self._lock:
            leaves = [_leaf(body) for body in self.bodies]
        root = _tree_hash(leaves)
        return {
            self.uuid(index): {
                "body": base64.b64encode(self.bodies[index]).decode(),
                "integratedTime": self.times[index],
                "logID": self.log_id.hex(),
                "logIndex": index,
                "verification": {
                    "inclusionProof": {
                        "checkpoint": self.checkpoint(len(leaves), root),
                        "hashes": [value.hex() for value in _path(index, leaves)],
                        "logIndex": index,
                        "rootHash": root.hex(),
                        "treeSize": len(leaves),
                    },
                    "signedEntryTimestamp": base64.b64encode(self.signed_entry_timestamp(index)).decode(),
                },
            }
        }

    def cosign_bundle(self, index: int) -> str:
        """cosign's dev.sigstore.cosign/bundle annotation for an entry."""
        return json.dumps(
            {
                "SignedEntryTimestamp": base64.b64encode(self.signed_entry_timestamp(index)).decode(),
                "Payload": {
                    "body": base64.b64encode(self.bodies[index]).decode(),
                    "integratedTime": self.times[index],
                    "logIndex": index,
                    "logID": self.log_id.hex(),
                },
            }
        )

    def serve(self) -> Rekor:
        log = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, document) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                log.requests.append(f"POST {self.path}")
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/api/v1/index/retrieve":
                    return self._answer(404, {"code": 404, "message": "not found"})
                try:
                    wanted = json.loads(data)["hash"]
                except (ValueError, KeyError, TypeError):
                    return self._answer(400, {"code": 400, "message": "expected {\"hash\": \"sha256:<hex>\"}"})
                if not isinstance(wanted, str) or not wanted.startswith("sha256:"):
                    return self._answer(400, {"code": 400, "message": "hash must be sha256:<hex>"})
                self._answer(200, [log.uuid(index) for index in log.by_hash.get(wanted[len("sha256:") :], [])])

            def do_GET(self):
                log.requests.append(f"GET {self.path}")
                prefix = "/api/v1/log/entries/"
                if self.path.startswith(prefix):
                    uuid = self.path[len(prefix) :]
                    for index in range(len(log.bodies)):
                        if log.uuid(index) == uuid:
                            return self._answer(200, log.entry(index))
                self._answer(404, {"code": 404, "message": "entry not found"})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class Signed:
    """What one signing made: the signature, its certificate, and the log entry's index (None when not logged)."""

    signature: bytes
    certificate: x509.Certificate
    log_index: int | None
    payload: bytes = b""

    @property
    def sig_file(self) -> bytes:
        """cosign sign-blob --output-signature: the base64 signature."""
        return base64.b64encode(self.signature)

    @property
    def cert_file(self) -> bytes:
        """cosign sign-blob --output-certificate: the base64 of the PEM certificate."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.PEM))


@dataclass
class SigningStandin:
    """Fulcio, CT log and Rekor stand-ins and the trusted_root.json that names them."""

    root_dir: Path
    ct: CTLog = field(default_factory=CTLog)
    rekor: Rekor = field(default_factory=Rekor)

    def __post_init__(self):
        self.root_dir = Path(self.root_dir)
        self.ca = CertificateAuthority(self.ct)
        self.rogue = CertificateAuthority(self.ct, "rogue")  # a CA the trust root does not name
        self.rekor.serve()
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.trusted_root_path = self.root_dir / "trusted_root.json"
        self.trusted_root_path.write_bytes(self.trusted_root())

    def trusted_root(self) -> bytes:
        start = "2020-01-01T00:00:00Z"
        return (
            json.dumps(
                {
                    "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                    "tlogs": [_log(self.rekor.url, self.rekor.key, start)],
                    "certificateAuthorities": [
                        {
                            "subject": {"organization": "sigstore.dev", "commonName": "sigstore"},
                            "uri": "https://fulcio.standin.invalid",
                            "certChain": {
                                "certificates": [
                                    {"rawBytes": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()}
                                    for cert in (self.ca.intermediate, self.ca.root)
                                ]
                            },
                            "validFor": {"start": start},
                        }
                    ],
                    "ctlogs": [_log("https://ctfe.standin.invalid", self.ct.key, start)],
                    "timestampAuthorities": [],
                },
                indent=2,
            ).encode()
            + b"\n"
        )

    def sign(
        self,
        data: bytes,
        identity: tuple[str, str],
        *,
        ca: CertificateAuthority | None = None,
        expired: bool = False,
        logged: bool = True,
        log_as: str | None = None,
    ) -> Signed:
        """Sign `data` as cosign does (ECDSA P-256 over its sha256) with a fresh key and certificate, and log it in Rekor.

        `ca`: another authority (the rogue one); `expired`: a certificate that ran out two hours ago;
        `logged=False`: no log entry; `log_as`: index the entry under another artifact's sha256.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        sha256 = hashlib.sha256(data).hexdigest()
        signature = key.sign(bytes.fromhex(sha256), ec.ECDSA(Prehashed(hashes.SHA256())))
        start = now() - (timedelta(hours=2) if expired else timedelta(minutes=1))
        certificate = (ca or self.ca).issue(key.public_key(), identity[0], identity[1], start)
        index = None
        if logged:
            index = self.rekor.add(hashedrekord(sha256, signature, certificate), int((start + timedelta(seconds=30)).timestamp()), log_as)
        return Signed(signature, certificate, index, data)

    def sign_file(self, path: Path, identity: tuple[str, str] = KUBERNETES_BINARIES, **options) -> Signed:
        """Write `path`.sig and `path`.cert beside a release file, as Kubernetes publishes them."""
        signed = self.sign(Path(path).read_bytes(), identity, **options)
        Path(f"{path}.sig").write_bytes(signed.sig_file)
        Path(f"{path}.cert").write_bytes(signed.cert_file)
        return signed

    def sign_image(
        self,
        registry_url: str,
        repository: str,
        digest: str,
        reference: str,
        identity: tuple[str, str] = KUBERNETES_IMAGES,
        *,
        bundle: bool = True,
        bundle_of: Signed | None = None,
        **options,
    ) -> Signed:
        """Push a cosign signature for `digest` to `repository:sha256-<hex>.sig`, as `cosign sign` does.

        `bundle=False` leaves out the Rekor bundle annotation (no log timestamp); `bundle_of` puts another
        signature's log entry there (an entry for another artifact).
        """
        payload = canonical(
            {
                "critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
                "optional": None,
            }
        )
        signed = self.sign(payload, identity, **options)
        annotations = {
            "dev.cosignproject.cosign/signature": base64.b64encode(signed.signature).decode(),
            "dev.sigstore.cosign/certificate": signed.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "dev.sigstore.cosign/chain": (options.get("ca") or self.ca).chain_pem(),
        }
        logged = bundle_of or signed
        if bundle and logged.log_index is not None:
            annotations["dev.sigstore.cosign/bundle"] = self.rekor.cosign_bundle(logged.log_index)
        config = canonical({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z", "os": "", "rootfs": {"type": "layers", "diff_ids": [_digest(payload)]}})
        manifest = canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": _digest(config)},
                "layers": [{"mediaType": SIMPLE_SIGNING, "size": len(payload), "digest": _digest(payload), "annotations": annotations}],
            }
        )
        for blob in (config, payload):
            _push_blob(registry_url, repository, blob)
        tag = digest.replace(":", "-") + ".sig"
        request = urllib.request.Request(f"{registry_url}/v2/{repository}/manifests/{tag}", data=manifest, method="PUT", headers={"Content-Type": OCI_MANIFEST})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201, response.status
        return signed

    def close(self) -> None:
        self.rekor.close()


def _log(url: str, key, start: str) -> dict:
    return {
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {"rawBytes": base64.b64encode(spki(key.public_key())).decode(), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": start}},
        "logId": {"keyId": base64.b64encode(hashlib.sha256(spki(key.public_key())).digest()).decode()},
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_blob(registry_url: str, repository: str, data: bytes) -> None:
    """The distribution API's monolithic upload: POST a session, PUT the bytes with their digest."""
    start = urllib.request.Request(f"{registry_url}/v2/{repository}/blobs/uploads/", data=b"", method="POST")
    with urllib.request.urlopen(start, timeout=30) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = registry_url + location
    separator = "&" if "?" in location else "?"
    put = urllib.request.Request(
        f"{location}{separator}digest={_digest(data)}", data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(put, timeout=30) as response:
        assert response.status == 201, response.status
