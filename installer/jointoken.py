"""`airlock-node token create`: a fresh way in for another node, made by kubeadm on a control plane.

A bootstrap token lasts 24 h and the certificates kubeadm uploads for joining
control planes 2 h; after that no node can join until new ones are made.
This asks kubeadm for them with commands the real kubeadm has (installer/commands.py)
and nothing that reaches outside the node:

- `kubeadm token create --print-join-command --kubeconfig /etc/kubernetes/admin.conf`
  (kubeadm pins its own version for this, it looks nothing up);
- for a control plane, first `kubeadm init phase upload-certs --upload-certs --config FILE`,
  FILE being this cluster's init.yaml (exact version) with a fresh certificate key, and
  then `--certificate-key KEY` on the token create.

kubeadm's answer is read as untrusted text: every field is checked by type
before it is printed as the node.yaml of the joining node.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import yaml

from installer import commands
from installer.errors import NodeError
from installer.node import Host, Paths
from installer.nodeschema import CA_CERT_HASH, CERTIFICATE_KEY, TOKEN, FieldError, endpoint
from installer.render import kubeadm_config

ADMIN_CONF = "/etc/kubernetes/admin.conf"
INIT_CONFIG = "/var/lib/airlock/kubeadm/init.yaml"
UPLOAD_CONFIG = "/var/lib/airlock/kubeadm/upload-certs.yaml"
_JOIN = re.compile(r"^kubeadm join (\S+) --token (\S+)((?: +--discovery-token-ca-cert-hash \S+)+)(?: +--control-plane(?: +--certificate-key (\S+))?)? *$")


@dataclass(frozen=True)
class JoinCommand:
    endpoint: str
    token: str
    ca_cert_hashes: tuple[str, ...]
    certificate_key: str = ""

    def node_yaml(self) -> str:
        document = {"controlPlaneEndpoint": self.endpoint, "token": self.token, "caCertHashes": list(self.ca_cert_hashes)}
        if self.certificate_key:
            document["certificateKey"] = self.certificate_key
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)

    def kubeadm(self) -> str:
        words = ["kubeadm", "join", self.endpoint, "--token", self.token]
        for digest in self.ca_cert_hashes:
            words += ["--discovery-token-ca-cert-hash", digest]
        if self.certificate_key:
            words += ["--control-plane", "--certificate-key", self.certificate_key]
        return " ".join(words)


def parse_join_command(text: str, certificate_key: str = "") -> JoinCommand:
    """The `kubeadm join …` line of kubeadm's answer, every field checked; NodeError when it is not one."""
    # kubeadm prints it on one line; a template's "\\" line continuations are read as the spaces they stand for.
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip().startswith("kubeadm join ")]
    match = _JOIN.match(lines[-1]) if lines else None
    if match is None:
        raise NodeError(f"kubeadm token create printed no join command ({text.strip()[:200]!r})")
    try:
        where = endpoint(match.group(1))
    except FieldError:
        raise NodeError(f"kubeadm token create printed an endpoint that is not host:port ({match.group(1)[:100]!r})") from None
    token = match.group(2)
    hashes = tuple(match.group(3).split()[1::2])
    key = match.group(4) or ""
    if not TOKEN.match(token) or not all(CA_CERT_HASH.match(digest) for digest in hashes) or (key and not CERTIFICATE_KEY.match(key)):
        raise NodeError("kubeadm token create printed a token, CA hash or certificate key of the wrong form; refusing it")
    if certificate_key and key != certificate_key:
        raise NodeError("kubeadm token create printed another certificate key than the one uploaded; refusing it")
    return JoinCommand(where, token, hashes, key)


def upload_config(paths: Paths, certificate_key: str) -> str:
    """This cluster's init.yaml with a fresh certificate key, for `init phase upload-certs`."""
    try:
        documents = [document for document in yaml.safe_load_all(paths(INIT_CONFIG).read_text()) if document]
    except FileNotFoundError:
        raise NodeError(
            f"{paths(INIT_CONFIG)} is missing: new certificates for control planes are uploaded from the first control plane "
            "(where airlock-node init ran); run token create --control-plane there"
        ) from None
    except yaml.YAMLError as error:
        raise NodeError(f"{paths(INIT_CONFIG)}: not valid YAML ({error})") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "InitConfiguration":
            document["certificateKey"] = certificate_key
            break
    else:
        raise NodeError(f"{paths(INIT_CONFIG)} holds no InitConfiguration; rerun airlock-node init to write it again")
    return kubeadm_config.dump(documents, "Written by airlock-node token create --control-plane: init.yaml with a fresh certificate key.")


def create(paths: Paths, host: Host, control_plane: bool) -> JoinCommand:
    kubeadm = paths("/usr/local/bin/kubeadm")
    admin = paths(ADMIN_CONF)
    if not kubeadm.exists():
        raise NodeError(f"{kubeadm} is missing: is airlock installed on this node?")
    if not admin.exists():
        raise NodeError(f"{admin} is missing: run token create on a control plane of the cluster")
    certificate_key = ""
    if control_plane:
        certificate_key = secrets.token_hex(32)
        config = paths(UPLOAD_CONFIG)
        host.write(config, upload_config(paths, certificate_key), 0o600)
        host.run(commands.kubeadm_init_phase(str(kubeadm), commands.UPLOAD_CERTS, str(config)), show=False, timeout=300)
    result = host.run(commands.kubeadm_token_create(str(kubeadm), str(admin), certificate_key), show=False, timeout=120)
    if host.dry_run:
        return JoinCommand("ENDPOINT", "TOKEN", ("sha256:HASH",), "KEY" if control_plane else "")
    return parse_join_command(result.stdout, certificate_key)
