"""`kubeadm token create` for the STAND-IN kubeadm: what kubeadm prints, from the kubeconfig it is given. Not Kubernetes.

Read, not copied, from kubernetes/kubernetes cmd/kubeadm/app/cmd/token.go (RunCreateToken: a
--certificate-key needs --print-join-command; the join command has its line continuations and tabs
removed) and cmd/kubeadm/app/cmd/util/join.go (the join command template: the current context's
cluster server without https://, one --discovery-token-ca-cert-hash per CA certificate, the pin being
sha256 of the certificate's SubjectPublicKeyInfo; --control-plane --certificate-key KEY for control
planes). It creates no token on any API server: it only answers as kubeadm would.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string

import yaml

BOOTSTRAP_TOKEN = re.compile(r"\A([a-z0-9]{6})\.([a-z0-9]{16})\Z")
DEFAULT_KUBECONFIG = "/etc/kubernetes/admin.conf"


def _pins(pem: bytes) -> list[str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pins = []
    for certificate in x509.load_pem_x509_certificates(pem):
        spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pins.append("sha256:" + hashlib.sha256(spki).hexdigest())
    return pins


def _cluster(kubeconfig: str, refused) -> dict:
    try:
        with open(kubeconfig) as handle:
            document = yaml.safe_load(handle) or {}
    except OSError as error:
        raise refused(f"failed to load admin kubeconfig: open {kubeconfig}: {error.strerror.lower()}") from None
    contexts = {item["name"]: item.get("context", {}) for item in document.get("contexts") or []}
    clusters = {item["name"]: item.get("cluster", {}) for item in document.get("clusters") or []}
    current = contexts.get(document.get("current-context", ""), {})
    cluster = clusters.get(current.get("cluster", ""))
    if cluster is None:
        raise refused("failed to get join command: failed to get default cluster config")
    return cluster


def token_create(flags: dict, args: list[str], refused) -> str:
    """What `kubeadm token create [TOKEN] [--print-join-command [--certificate-key KEY]]` prints."""
    key = str(flags.get("certificate-key", ""))
    if key and not flags.get("print-join-command"):
        raise refused("cannot use --certificate-key without --print-join-command")
    if args and not BOOTSTRAP_TOKEN.match(args[0]):
        raise refused(f'the bootstrap token "{args[0]}" was not of the form "{BOOTSTRAP_TOKEN.pattern}"')
    alphabet = string.ascii_lowercase + string.digits
    token = args[0] if args else "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(16))
    cluster = _cluster(str(flags.get("kubeconfig", DEFAULT_KUBECONFIG)), refused)
    if not flags.get("print-join-command"):
        return token
    if cluster.get("certificate-authority-data"):
        pem = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        with open(cluster["certificate-authority"], "rb") as handle:
            pem = handle.read()
    else:
        raise refused("failed to get join command: no CA certificates found in kubeconfig")
    host_port = str(cluster.get("server", "")).replace("https://", "")
    # join.go's template, with token.go's removal of "\\\n" and tabs: continuation lines keep their four spaces.
    command = f"kubeadm join {host_port} --token {token}     " + "".join(f"--discovery-token-ca-cert-hash {pin} " for pin in _pins(pem))
    if key:
        command += f"    --control-plane --certificate-key {key}"
    return command
