"""Who must have signed an artifact (a keyless signature's identity and issuer), without the X.509 code that checks it.

The builder names the expected signers of every upstream artifact when it starts; bundle/keyless.py verifies
them only when a signature is fetched. Kept apart so that a command that never checks one (`airlock verify`)
does not load cryptography's X.509 modules to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Expected:
    """Who must have signed: the identity and OIDC issuer a publisher documents (Kubernetes: krel-…@k8s-releng-prod…)."""

    identity: str
    issuer: str
    signer: str = field(default="", compare=False)  # in words, for bundle.json and inspect
