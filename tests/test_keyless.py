"""bundle.keyless: the one offline verifier that build, nodes and `verify --provenance` share, case by case.

Every verdict is compared with sigstore-python's on the same Sigstore bundle and trust root:
both accept the good evidence and both refuse each spoiled one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from builder.build import DEFAULT_TRUSTED_ROOT
from bundle.errors import TrustError
from bundle.keyless import Evidence, Expected, LogEntry, SignatureError, TrustRoot, verify
from tests.standin.sigstore import KUBERNETES_BINARIES, SigningStandin

DATA = b"#!/bin/sh\n# kubectl\n"
SHA = hashlib.sha256(DATA).hexdigest()
EXPECTED = Expected(*KUBERNETES_BINARIES)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    signing = SigningStandin(tmp_path_factory.mktemp("sigstore"))
    yield signing
    signing.close()


def evidence_of(standin, data: bytes = DATA, **options) -> Evidence:
    signed = standin.sign(data, options.pop("identity", KUBERNETES_BINARIES), **options)
    entry = None
    if signed.log_index is not None:
        answer = standin.rekor.entry(signed.log_index)
        entry = LogEntry.from_rekor(next(iter(answer.values())), "rekor")
    return Evidence(signed.certificate, signed.signature, hashlib.sha256(data).hexdigest(), entry)


def sigstore_python_accepts(standin, evidence: Evidence, data: bytes = DATA, identity=KUBERNETES_BINARIES) -> bool:
    from sigstore.errors import Error
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier, policy

    try:
        bundle = Bundle.from_json(evidence.to_json())
        Verifier(trusted_root=TrustedRoot.from_file(str(standin.trusted_root_path))).verify_artifact(
            data, bundle, policy.Identity(identity=identity[0], issuer=identity[1])
        )
    except (Error, ValueError):
        return False
    return True


def root_of(standin) -> TrustRoot:
    return TrustRoot.parse(standin.trusted_root(), "stand-in trusted_root.json")


def test_good_evidence_verifies_here_and_in_sigstore_python(standin):
    evidence = evidence_of(standin)
    verified = verify(evidence, SHA, EXPECTED, root_of(standin))
    assert (verified.identity, verified.issuer) == KUBERNETES_BINARIES
    assert sigstore_python_accepts(standin, evidence)
    # The carried form reads back to the same evidence.
    assert verify(Evidence.parse(evidence.to_json(), "evidence"), SHA, EXPECTED, root_of(standin)).log_index == verified.log_index


def _without_set(evidence: Evidence) -> Evidence:
    return replace(evidence, entry=replace(evidence.entry, signed_entry_timestamp=None, proof=None))


def _other_entry(standin, evidence: Evidence) -> Evidence:
    return replace(evidence, entry=evidence_of(standin, b"another artifact").entry)


def _forged_set(evidence: Evidence) -> Evidence:
    return replace(evidence, entry=replace(evidence.entry, integrated_time=evidence.entry.integrated_time + 60))


def _bad_proof(evidence: Evidence) -> Evidence:
    proof = evidence.entry.proof
    return replace(evidence, entry=replace(evidence.entry, proof=replace(proof, root_hash=hashlib.sha256(b"x").digest())))


CASES = {
    "other bytes": (lambda s, e: e, DATA + b"!", "the signature is over sha256"),
    "another identity": (lambda s, e: evidence_of(s, identity=("mallory@example.com", KUBERNETES_BINARIES[1])), DATA, "the certificate is for mallory@example.com"),
    "another issuer": (lambda s, e: evidence_of(s, identity=(KUBERNETES_BINARIES[0], "https://evil.example")), DATA, "(OIDC issuer https://evil.example)"),
    "another CA": (lambda s, e: evidence_of(s, ca=s.rogue), DATA, "does not chain to a certificate authority of the trust root"),
    "entry for another artifact": (_other_entry, DATA, "is for another artifact"),
    "expired, no log timestamp": (lambda s, e: _without_set(evidence_of(s, expired=True)), DATA, "has no signed entry timestamp (SET)"),
    "not logged at all": (lambda s, e: evidence_of(s, logged=False), DATA, "no transparency-log entry"),
    "time moved": (lambda s, e: _forged_set(e), DATA, "signed entry timestamp (SET) for entry"),
    "inclusion proof to another root": (lambda s, e: _bad_proof(e), DATA, "does not lead to its root hash"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_spoiled_signature_is_refused_by_name_here_and_by_sigstore_python(standin, case):
    spoil, data, message = CASES[case]
    evidence = spoil(standin, evidence_of(standin))
    with pytest.raises(SignatureError) as refused:
        verify(evidence, hashlib.sha256(data).hexdigest(), EXPECTED, root_of(standin), datetime.now(UTC))
    assert message in str(refused.value)
    assert not sigstore_python_accepts(standin, evidence, data)


def test_an_expired_certificate_is_refused_when_the_log_signed_after_it_expired(standin):
    evidence = evidence_of(standin, expired=True)
    index = standin.rekor.add(evidence.entry.body, int(datetime.now(UTC).timestamp()))
    late = replace(evidence, entry=LogEntry.from_rekor(next(iter(standin.rekor.entry(index).values())), "rekor"))
    with pytest.raises(SignatureError, match="when the certificate .* was not valid"):
        verify(late, SHA, EXPECTED, root_of(standin))
    assert not sigstore_python_accepts(standin, late)


def test_the_shipped_trust_root_is_sigstores_public_one():
    root = TrustRoot.parse(DEFAULT_TRUSTED_ROOT.read_bytes(), "builder/data/trusted_root.json")
    assert root.rekor_url() == "https://rekor.sigstore.dev"
    assert {authority.uri for authority in root.authorities} == {"https://fulcio.sigstore.dev"}
    assert hashlib.sha256(DEFAULT_TRUSTED_ROOT.read_bytes()).hexdigest() == "6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[]", "not a JSON object"),
        (json.dumps({"mediaType": "application/json"}).encode(), "is not a Sigstore bundle"),
        (json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"certificate": {"rawBytes": "!!"}}}).encode(), "not valid base64"),
        (b"[" * 100000 + b"]" * 100000, "^provenance/x.sigstore.json: nests JSON arrays or objects too deeply$"),
        (b" " * (300 << 10), "more than"),
    ],
)
def test_evidence_is_parsed_by_type(document, message):
    with pytest.raises(TrustError, match=message):
        Evidence.parse(document, "provenance/x.sigstore.json")


def test_a_trust_root_is_parsed_by_type(standin):
    document = json.loads(standin.trusted_root())
    document["tlogs"][0]["publicKey"]["rawBytes"] = base64.b64encode(b"not a key").decode()
    with pytest.raises(TrustError, match=r"tlogs\[0\]: publicKey.rawBytes is not a DER public key"):
        TrustRoot.parse(json.dumps(document).encode(), "root")
    with pytest.raises(TrustError, match="not a Sigstore trusted root"):
        TrustRoot.parse(json.dumps({"mediaType": "x"}).encode(), "root")
