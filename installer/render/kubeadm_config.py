"""kubeadm's configuration documents as values, marshalled by PyYAML (as kubeadm marshals its own structs).

Only fields that kubeadm's v1beta3/v1beta4 types and kubelet's
KubeletConfiguration v1beta1 really have are written, so a strict decoder
(`kubeadm config validate`) accepts them. Every value comes from a
type-checked node.yaml field (`installer.nodeschema`); the serializer keeps
any of them from becoming more than one scalar.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from installer import minors
from installer.errors import NodeError
from installer.minors import kubelet_flag_problems
from installer.node import NodeConfig

KUBEADM_GROUP = "kubeadm.k8s.io"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
BIND_PORT = 6443


def api_version(version: str) -> str:
    """kubeadm's configuration API for a minor: v1beta4 on every minor a node may run (1.33-1.38; v1beta3 is gone in 1.37)."""
    return minors.of(version).kubeadm_api


@dataclass(frozen=True)
class NodeFacts:
    """What the node decided outside node.yaml: its name, its address ("" when kubeadm should pick) and the version."""

    version: str
    node_name: str
    address: str


def control_plane_endpoint(config: NodeConfig, facts: NodeFacts) -> str:
    if config.control_plane_endpoint:
        return config.control_plane_endpoint
    host = facts.address or facts.node_name
    return f"[{host}]:{BIND_PORT}" if ":" in host else f"{host}:{BIND_PORT}"


def _args(api: str, values: dict[str, str]) -> dict[str, str] | list[dict[str, str]]:
    """Extra flags in the shape of the API version: a map in v1beta3, a list of name/value in v1beta4."""
    ordered = dict(sorted(values.items()))
    return ordered if api == "v1beta3" else [{"name": name, "value": value} for name, value in ordered.items()]


def _node_registration(config: NodeConfig, facts: NodeFacts, api: str) -> dict:
    kubelet_args = dict(config.kubelet.extra_args)
    problems = kubelet_flag_problems(facts.version, kubelet_args)
    if problems:
        raise NodeError(f"node.yaml kubelet.extraArgs: {problems[0]}; remove it from node.yaml")
    if facts.address:
        kubelet_args["node-ip"] = facts.address
    registration: dict = {"name": facts.node_name, "criSocket": config.cri_socket, "imagePullPolicy": "IfNotPresent"}
    if kubelet_args:
        registration["kubeletExtraArgs"] = _args(api, kubelet_args)
    return registration


def _local_endpoint(facts: NodeFacts) -> dict:
    endpoint: dict = {"bindPort": BIND_PORT}
    if facts.address:
        endpoint["advertiseAddress"] = facts.address
    return endpoint


def init_documents(config: NodeConfig, facts: NodeFacts, token: str, certificate_key: str) -> list[dict]:
    """InitConfiguration, ClusterConfiguration and KubeletConfiguration for the first control plane."""
    api = api_version(facts.version)
    group = f"{KUBEADM_GROUP}/{api}"
    init = {
        "apiVersion": group,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": token,
                "ttl": "24h0m0s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
        ],
        "localAPIEndpoint": _local_endpoint(facts),
        "nodeRegistration": _node_registration(config, facts, api),
        "certificateKey": certificate_key,
    }
    cluster = {
        "apiVersion": group,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": facts.version,
        "imageRepository": "registry.k8s.io",
        "clusterName": config.cluster_name,
        "controlPlaneEndpoint": control_plane_endpoint(config, facts),
        "networking": {"podSubnet": config.pod_subnet, "serviceSubnet": config.service_subnet, "dnsDomain": "cluster.local"},
        "apiServer": {"certSANs": list(config.cert_sans) or [facts.node_name, *([facts.address] if facts.address else [])]},
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
    }
    kubelet = {"apiVersion": KUBELET_API, "kind": "KubeletConfiguration", "cgroupDriver": config.kubelet.cgroup_driver, "maxPods": config.kubelet.max_pods}
    return [init, cluster, kubelet]


def join_documents(config: NodeConfig, facts: NodeFacts, control_plane: bool) -> list[dict]:
    """One JoinConfiguration: discovery by token with the CA pinned by its hash (never unsafeSkipCAVerification)."""
    api = api_version(facts.version)
    join: dict = {
        "apiVersion": f"{KUBEADM_GROUP}/{api}",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": config.control_plane_endpoint,
                "token": config.token,
                "caCertHashes": list(config.ca_cert_hashes),
            }
        },
        "nodeRegistration": _node_registration(config, facts, api),
    }
    if control_plane:
        join["controlPlane"] = {"certificateKey": config.certificate_key, "localAPIEndpoint": _local_endpoint(facts)}
    return [join]


def dump(documents: list[dict], comment: str) -> str:
    """A multi-document YAML stream read the way kubeadm reads it; `comment` goes inside the first document.

    kubeadm cuts its --config file at every line starting with `---` and takes each non-empty chunk for a
    document whose apiVersion and kind it reads: a comment-only chunk before the first `---` would be a
    document with no kind, and kubeadm stops. So the stream opens with `---` and the comment follows it.
    """
    body = yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, explicit_start=True)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return "---\n" + header + body[len("---\n") :]  # every document is a mapping, so the body opens with "---\n"


def join_fields(config: NodeConfig, control_plane: bool) -> str | None:
    """What a join's node.yaml lacks for kubeadm join (None when complete): checked before anything changes."""
    missing = [name for name, value in (("controlPlaneEndpoint", config.control_plane_endpoint), ("token", config.token),
                                        ("caCertHashes", config.ca_cert_hashes)) if not value]
    if control_plane and not config.certificate_key:
        missing.append("certificateKey (a control-plane join)")
    if not missing:
        return None
    return (f"join needs {', '.join(missing)} in --config node.yaml; `airlock-node token create` on a control plane prints them "
            "(add --control-plane for a certificate key)")
