"""kubeadm-init / kubeadm-join: kubeadm's own phases with a rendered configuration and an exact version.

The command lines come from installer/commands.py, what differs per minor from
installer/minors.py. kubeadm's own preflight runs first (once per install: a
resumed init would find its own ports and files), with the checks airlock made
itself ignored. Between kubelet-start and upload-config airlock waits for the
control plane itself, for what kubeadm's wait-control-plane phase waits for
(installer/apiwait.py says why that phase is never run).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string

from installer import address, commands, minors
from installer.apiwait import DEFAULT_TIMEOUT, MANIFESTS, control_plane_checks, wait_for
from installer.errors import NodeError
from installer.node import BIN
from installer.phases import Context, Phase
from installer.render import kubeadm_config
from installer.staging import ensure_staged

CONFIG_FILE = "/var/lib/airlock/kubeadm/{name}.yaml"


api_version = kubeadm_config.api_version


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


def node_facts(context: Context) -> kubeadm_config.NodeFacts:
    """The node's name and address (see installer.address; "" when preflight's advertise-address check was ignored)."""
    import socket

    try:
        node_address = address.choose(context.config).address
    except address.AmbiguousAddress:
        node_address = ""
    node_name = context.config.node_name or socket.gethostname().lower()
    return kubeadm_config.NodeFacts(context.manifest.version, node_name, node_address)


def _common(context: Context) -> dict[str, str]:
    facts = node_facts(context)
    return {"node_name": facts.node_name, "control_plane_endpoint": kubeadm_config.control_plane_endpoint(context.config, facts)}


def kubeadm(context: Context) -> str:
    return str(context.paths(f"{BIN}/kubeadm"))


def run_init(context: Context) -> None:
    ensure_staged(context)
    config = context.config
    facts = node_facts(context)
    values = {**_common(context), **cluster_secrets(context)}
    documents = kubeadm_config.init_documents(config, facts, values["token"], values["certificate_key"])
    rendered = kubeadm_config.dump(documents, f"Written by airlock for Kubernetes {facts.version}")
    config_file = context.paths(CONFIG_FILE.format(name="init"))
    context.host.write(config_file, rendered, 0o600)
    for step in commands.INIT_STEPS:
        if step == commands.PREFLIGHT:
            kubeadm_preflight(context, str(config_file))
            # After kubeadm's preflight (it wants an empty manifests directory), before anything uses the endpoint.
            write_kube_vip(context, first=True)
        elif step == commands.WAIT:
            wait_for_control_plane(context)
        else:
            context.host.run(commands.kubeadm_init_phase(kubeadm(context), step, str(config_file)), timeout=900)
    if context.host.dry_run:
        context.echo("would print how to join other nodes (token, CA hash) once the control plane is up")
        return
    join_hint(context, values)


def api_address(context: Context) -> str:
    """Where this node's API server answers: the address airlock chose for it (kubeadm puts that one in the
    serving certificate, loopback it does not), else loopback when preflight's address check was ignored."""
    chosen = node_facts(context).address
    return chosen if chosen and chosen not in ("0.0.0.0", "::") else "127.0.0.1"


PREFLIGHT_DONE = "/var/lib/airlock/kubeadm/preflight.done"


def kubeadm_preflight(context: Context, config_file: str) -> None:
    """`kubeadm init phase preflight`, once per install: a resumed init would fail on its own ports and files."""
    done = context.paths(PREFLIGHT_DONE)
    if not context.host.dry_run and done.exists() and done.read_text() == context.manifest_sha256:
        context.echo("kubeadm's preflight already passed for this bundle (resuming)")
        return
    line = commands.kubeadm_init_phase(kubeadm(context), commands.PREFLIGHT, config_file, minors.KUBEADM_IGNORED_CHECKS_CONTROL_PLANE)
    context.host.run(line, timeout=900)
    if not context.host.dry_run:
        context.host.write(done, context.manifest_sha256, 0o600)


def wait_for_control_plane(context: Context) -> None:
    """What kubeadm's wait-control-plane phase does, done by airlock (installer.apiwait says why it is not run)."""
    checks = control_plane_checks(context.paths(MANIFESTS), api_address(context), context.paths("/etc/kubernetes/pki/ca.crt"))
    urls = ", ".join(check.url for check in checks)
    if not context.will_wait(DEFAULT_TIMEOUT, "the control plane", urls):
        return
    wait_for(checks, echo=context.echo)


def join_hint(context: Context, values: dict[str, str]) -> None:
    digest = ca_cert_hash(context) or "sha256:<hash of /etc/kubernetes/pki/ca.crt>"
    endpoint = values["control_plane_endpoint"]
    context.echo("")
    context.echo("Your control plane is initialised. To use kubectl here:")
    context.echo(f"  export KUBECONFIG={context.paths('/etc/kubernetes/admin.conf')}")
    context.echo("Join workers with (the same bundle, airlock-node.pyz and key on each node):")
    context.echo(f"  python3 airlock-node.pyz join k8s.tar --key airlock.pub --config node.yaml   # node.yaml: controlPlaneEndpoint: {endpoint}, token: {values['token']}, caCertHashes: [{digest}]")
    context.echo(f"  (kubeadm join {endpoint} --token {values['token']} --discovery-token-ca-cert-hash {digest})")
    context.echo(f"Extra control planes add --control-plane and certificateKey: {values['certificate_key']}")
    context.echo("The token lasts 24 h and the certificate key 2 h; `airlock-node token create [--control-plane]` here makes fresh ones.")


def run_join(context: Context) -> None:
    ensure_staged(context)
    config = context.config
    lacking = kubeadm_config.join_fields(config, context.control_plane)  # preflight stopped on this already, unless it was skipped
    if lacking:
        raise NodeError(lacking)
    facts = node_facts(context)
    documents = kubeadm_config.join_documents(config, facts, context.control_plane)
    rendered = kubeadm_config.dump(documents, f"Written by airlock for Kubernetes {facts.version}")
    config_file = context.paths(CONFIG_FILE.format(name="join"))
    context.host.write(config_file, rendered, 0o600)
    ignored = minors.KUBEADM_IGNORED_CHECKS_CONTROL_PLANE if context.control_plane else minors.KUBEADM_IGNORED_CHECKS_WORKER
    context.host.run(commands.kubeadm_join(kubeadm(context), str(config_file), ignored), timeout=900)
    if context.control_plane:
        # The joining control plane reached the cluster through the address another one holds; now it may hold it too.
        write_kube_vip(context, first=False)


def write_kube_vip(context: Context, first: bool) -> None:
    """kube-vip's static pod, when node.yaml asks for a virtual IP (highAvailability)."""
    from installer.render import kubevip

    config = context.config
    if not config.virtual_ip:
        return
    kubeconfig = kubevip.FIRST_KUBECONFIG if first else kubevip.KUBECONFIG
    pod = kubevip.node_pod(config.virtual_ip, config.virtual_ip_interface, config.control_plane_endpoint,
                           [image.reference for image in context.manifest.images], kubeconfig)
    context.host.write(context.paths(kubevip.MANIFEST), kubevip.dump(pod), 0o600)
    image = pod["spec"]["containers"][0]["image"]
    context.echo(f"{'would write' if context.host.dry_run else 'wrote'} {kubevip.MANIFEST}: kube-vip holds {config.virtual_ip} on {config.virtual_ip_interface} "
                 f"({image}, {kubeconfig})")


INIT = Phase(
    "kubeadm-init",
    "render the kubeadm configuration, run kubeadm's init phases with the exact version, wait for the API server",
    run_init,
    steps=tuple(" ".join(step) for step in commands.INIT_STEPS),
)
JOIN = Phase("kubeadm-join", "render a JoinConfiguration and run kubeadm join with it", run_join)
