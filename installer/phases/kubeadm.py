"""kubeadm-init / kubeadm-join: kubeadm's own phases with a rendered configuration and an exact version.

The command lines come from installer/commands.py. kubeadm's init-side
wait-control-plane phase has no command, so between kubelet-start and
upload-config this phase waits for the API server's /readyz itself.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string

from installer import commands
from installer.apiwait import API_PORT, DEFAULT_TIMEOUT, wait_for_api_server
from installer.node import NodeError
from installer.phases import Context, Phase
from installer.phases.binaries import BIN
from installer.phases.unpack import ensure_staged
from installer.templates import render

CONFIG_FILE = "/var/lib/airlock/kubeadm/{name}.yaml"


def api_version(version: str) -> str:
    """kubeadm's configuration API: v1beta4 from 1.31 on, v1beta3 before."""
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    return "v1beta4" if (major, minor) >= (1, 31) else "v1beta3"


def _token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(16))


def cluster_secrets(context: Context) -> dict[str, str]:
    """The bootstrap token and certificate key: from node.yaml, else made once and kept (0600) for reruns."""
    path = context.paths("/var/lib/airlock/kubeadm/secrets.json")
    stored = json.loads(path.read_text()) if path.exists() else {}
    values = {
        "token": context.config.token or stored.get("token") or _token(),
        "certificate_key": context.config.certificate_key or stored.get("certificate_key") or secrets.token_hex(32),
    }
    if values != stored:
        context.host.write(path, json.dumps(values), 0o600)
    return values


def ca_cert_hash(context: Context) -> str | None:
    ca = context.paths("/etc/kubernetes/pki/ca.crt")
    if not ca.exists():
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(ca.read_bytes())
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _common(context: Context) -> dict[str, str]:
    import socket

    config = context.config
    node_name = config.node_name or socket.gethostname()
    return {
        "version": context.manifest.version,
        "node_name": node_name,
        "cri_socket": config.cri_socket,
        "control_plane_endpoint": config.control_plane_endpoint or f"{config.advertise_address or node_name}:6443",
    }


def kubeadm(context: Context) -> str:
    return str(context.paths(f"{BIN}/kubeadm"))


def run_init(context: Context) -> None:
    staging = ensure_staged(context)
    config = context.config
    values = {**_common(context), **cluster_secrets(context)}
    sans = list(config.cert_sans) or [values["node_name"]]
    rendered = render(
        f"kubeadm/init-{api_version(context.manifest.version)}.yaml",
        staging,
        **values,
        advertise_address=config.advertise_address or "0.0.0.0",
        cluster_name=config.cluster_name,
        pod_subnet=config.pod_subnet,
        service_subnet=config.service_subnet,
        cert_sans=json.dumps(sans),
        cgroup_driver=config.kubelet.cgroup_driver,
        max_pods=config.kubelet.max_pods,
    )
    config_file = context.paths(CONFIG_FILE.format(name="init"))
    context.host.write(config_file, rendered, 0o600)
    for step in commands.INIT_STEPS:
        if step == commands.WAIT:
            wait_for_control_plane(context)
        else:
            context.host.run(commands.kubeadm_init_phase(kubeadm(context), step, str(config_file)), timeout=900)
    if context.host.dry_run:
        context.echo("would print how to join other nodes (token, CA hash) once the control plane is up")
        return
    join_hint(context, values)


def api_address(context: Context) -> str:
    """Where this node's API server answers: its advertise address, else loopback (it binds every address)."""
    address = context.config.advertise_address
    return address if address and address not in ("0.0.0.0", "::") else "127.0.0.1"


def wait_for_control_plane(context: Context) -> None:
    """What kubeadm's hidden wait-control-plane phase does inside `kubeadm init`: wait for /readyz."""
    url = f"https://{api_address(context)}:{API_PORT}/readyz"
    ca = context.paths("/etc/kubernetes/pki/ca.crt")
    if context.host.dry_run:
        context.echo(f"would wait up to {DEFAULT_TIMEOUT:.0f}s for {url} to answer, trusting {ca}")
        return
    if not context.start_services:
        context.echo(f"kubelet is not started under --root, so nothing will answer at {url}; not waiting")
        return
    wait_for_api_server(api_address(context), ca, echo=context.echo)


def join_hint(context: Context, values: dict[str, str]) -> None:
    digest = ca_cert_hash(context) or "sha256:<hash of /etc/kubernetes/pki/ca.crt>"
    endpoint = values["control_plane_endpoint"]
    context.echo("")
    context.echo("Your control plane is initialised. To use kubectl here:")
    context.echo(f"  export KUBECONFIG={context.paths('/etc/kubernetes/admin.conf')}")
    context.echo("Join workers with (the same bundle and key on each node):")
    context.echo(f"  airlock join BUNDLE --key PUB --config node.yaml   # node.yaml: controlPlaneEndpoint: {endpoint}, token: {values['token']}, caCertHashes: [{digest}]")
    context.echo(f"  (kubeadm join {endpoint} --token {values['token']} --discovery-token-ca-cert-hash {digest})")
    context.echo(f"Extra control planes add --control-plane and certificateKey: {values['certificate_key']}")


def run_join(context: Context) -> None:
    staging = ensure_staged(context)
    config = context.config
    if not config.token or not config.ca_cert_hashes or not config.control_plane_endpoint:
        raise NodeError("join needs controlPlaneEndpoint, token and caCertHashes in --config node.yaml (printed by airlock init)")
    values = _common(context)
    block = ""
    if context.control_plane:
        if not config.certificate_key:
            raise NodeError("a control-plane join needs certificateKey in node.yaml (printed by airlock init)")
        block = "controlPlane:\n  certificateKey: \"" + config.certificate_key + "\"\n  localAPIEndpoint:\n    advertiseAddress: \"" + (config.advertise_address or "0.0.0.0") + "\"\n    bindPort: 6443\n"
    rendered = render(
        f"kubeadm/join-{api_version(context.manifest.version)}.yaml",
        staging,
        **values,
        token=config.token,
        ca_cert_hashes=json.dumps(list(config.ca_cert_hashes)),
        control_plane_block=block,
    )
    config_file = context.paths(CONFIG_FILE.format(name="join"))
    context.host.write(config_file, rendered, 0o600)
    context.host.run(commands.kubeadm_join(kubeadm(context), str(config_file)), timeout=900)


INIT = Phase(
    "kubeadm-init",
    "render the kubeadm configuration, run kubeadm's init phases with the exact version, wait for the API server",
    run_init,
    steps=tuple(" ".join(step) for step in commands.INIT_STEPS),
)
JOIN = Phase("kubeadm-join", "render a JoinConfiguration and run kubeadm join with it", run_join)
