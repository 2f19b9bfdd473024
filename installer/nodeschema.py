"""node.yaml's schema: every field has a type, and a value that is not of it is refused by name.

node.yaml is input, not code. Its values end up in kubeadm YAML, containerd
TOML, hosts.toml, crictl.yaml and systemd units; the serializers keep them
from changing those files' structure, and the types here keep them from
meaning more than the field says (a node name is a DNS-1123 name, an
endpoint a host and a port, a kubelet flag value one word).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from installer.node import NodeError

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"^(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})*$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$")
TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
CERTIFICATE_KEY = re.compile(r"^[a-f0-9]{64}$")
CA_CERT_HASH = re.compile(r"^sha256:[a-f0-9]{64}$")
FLAG_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# One word a shell-less command line keeps whole: systemd splits $VAR at whitespace and expands `$`; kubeadm's
# flags file is read the same way. Labels, taints and key=value lists all fit.
FLAG_VALUE = re.compile(r"^[A-Za-z0-9=,:/._+@%*~^-]{0,1024}$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]{0,4094}$")


class FieldError(ValueError):
    """A value that is not of its field's type; the text says what the field takes."""


def _string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(f"must be a string, not {type(value).__name__}")
    return str(value)


def ip_address(value: Any) -> str:
    text = _string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FieldError(f"{text!r} is not an IP address like 10.0.0.10") from None


def unusable_reason(address: str) -> str:
    """Why kubelet would refuse `address` as its node IP (kubelet's validateNodeIP), or "" when it would not."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the all-zeros address"
    return ""


def node_address(value: Any) -> str:
    """An address kubeadm may advertise and kubelet may take as --node-ip: kubelet refuses loopback, multicast,
    link-local and all-zeros node IPs (validateNodeIP, pkg/kubelet/kubelet_node_status.go)."""
    text = ip_address(value)
    reason = unusable_reason(text)
    if reason:
        raise FieldError(f"{text} is {reason}; kubelet refuses such a node IP: give this node's address on the cluster network")
    return text


def host(value: Any) -> str:
    """An IP address or a DNS name."""
    text = _string(value)
    try:
        return str(ipaddress.ip_address(text.strip("[]") if text.startswith("[") else text))
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(text):
        raise FieldError(f"{text!r} is neither an IP address nor a DNS name")
    return text.lower()


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise FieldError(f"{text!r} is not [IPv6]:port")
        return inside, rest[1:] if rest else None
    if text.count(":") == 1:
        name, port = text.split(":")
        return name, port
    return text, None


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise FieldError(f"{where!r}: the port {text!r} is not a number from 1 to 65535")
    return int(text)


def endpoint(value: Any) -> str:
    """host[:port] (kubeadm's controlPlaneEndpoint: a DNS name or an IP, the port optional)."""
    text = _string(value)
    name, port = _split_host_port(text)
    name = host(name)
    if port is None:
        return f"[{name}]" if ":" in name else name
    return f"[{name}]:{_port(port, text)}" if ":" in name else f"{name}:{_port(port, text)}"


def listen_address(value: Any) -> str:
    """IP:port (or :port) for the node registry to listen on."""
    text = _string(value)
    name, port = _split_host_port(text)
    if port is None:
        raise FieldError(f"{text!r} has no port; write it as 127.0.0.1:5000")
    address = ip_address(name) if name else ""
    port_number = _port(port, text)
    return f"[{address}]:{port_number}" if ":" in address else f"{address}:{port_number}"


def url(value: Any) -> str:
    """http(s)://host[:port][/path]: another node's registry."""
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FieldError(f"{text!r} is not an http:// or https:// URL like https://10.0.0.10:5443")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise FieldError(f"{text!r}: no user, query or fragment; a registry URL is scheme://host[:port][/path]")
    netloc = endpoint(parts.netloc)
    if parts.path and not SAFE_PATH.fullmatch(parts.path):
        raise FieldError(f"{text!r}: the path may hold letters, digits and . _ / @ + - only")
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def dns_name(value: Any) -> str:
    text = _string(value)
    if not DNS_SUBDOMAIN.fullmatch(text):
        raise FieldError(f"{text!r} is not a DNS-1123 name (lower-case letters, digits, '-' and '.')")
    return text


def network(value: Any) -> str:
    text = _string(value)
    try:
        return str(ipaddress.ip_network(text))
    except ValueError:
        raise FieldError(f"{text!r} is not a network like 10.244.0.0/16") from None


def absolute_path(value: Any) -> str:
    text = _string(value)
    if not SAFE_PATH.fullmatch(text) or "/../" in f"{text}/" or "/./" in f"{text}/":
        raise FieldError(f"{text!r} is not an absolute path of letters, digits and . _ / @ + -")
    return text


def unix_socket(value: Any) -> str:
    text = _string(value)
    path = text.removeprefix("unix://")
    return "unix://" + absolute_path(path)


def pattern(regex: re.Pattern, example: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _string(value)
        if not regex.fullmatch(text):
            raise FieldError(f"{'the value' if len(text) > 80 else repr(text)} is not {example}")
        return text

    return check


def choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _string(value)
        if text not in allowed:
            raise FieldError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return check


def boolean(value: Any) -> bool:
    """true or false, as YAML writes them; "yes", 1 or "true" in quotes are refused (a typo must not flip a guard)."""
    if not isinstance(value, bool):
        raise FieldError(f"{value!r} is not true or false")
    return value


def integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise FieldError(f"must be a whole number from {low} to {high}")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or not low <= value <= high:
            raise FieldError(f"{value!r} is not a whole number from {low} to {high}")
        return value

    return check


def list_of(item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise FieldError(f"must be a list, not {type(value).__name__}")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except FieldError as error:
                raise FieldError(f"[{index}]: {error}") from None
        return tuple(out)

    return check


def flags(value: Any) -> dict[str, str]:
    """kubelet flags as a map of flag name (no leading --) to one-word value."""
    if not isinstance(value, dict):
        raise FieldError(f"must be a map of flag name to value like {{node-labels: site=plant-7}}, not {type(value).__name__}")
    out = {}
    for key, raw in value.items():
        name = _string(key)
        if not FLAG_NAME.fullmatch(name):
            raise FieldError(f"{name!r} is not a kubelet flag name (lower-case letters, digits and '-', without the leading --)")
        if isinstance(raw, (list, dict)):
            raise FieldError(f"{name}: must be a string, not {type(raw).__name__}")
        text = "true" if raw is True else "false" if raw is False else _string(raw)
        if not FLAG_VALUE.fullmatch(text):
            raise FieldError(f"{name}: {text[:80]!r} must be one word of letters, digits and = , : / . _ + @ % * ~ ^ - (no spaces, quotes or $)")
        out[name] = text
    return out


NODE_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "nodeName": ("node_name", dns_name),
    "advertiseAddress": ("advertise_address", node_address),
    "controlPlaneEndpoint": ("control_plane_endpoint", endpoint),
    "podSubnet": ("pod_subnet", network),
    "serviceSubnet": ("service_subnet", network),
    "certSANs": ("cert_sans", list_of(host)),
    "clusterName": ("cluster_name", dns_name),
    "criSocket": ("cri_socket", unix_socket),
    "token": ("token", pattern(TOKEN, "a bootstrap token like abcdef.0123456789abcdef")),
    "certificateKey": ("certificate_key", pattern(CERTIFICATE_KEY, "64 lower-case hex digits (printed by airlock-node init)")),
    "caCertHashes": ("ca_cert_hashes", list_of(pattern(CA_CERT_HASH, "sha256: followed by 64 lower-case hex digits"))),
}
REGISTRY_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "listen": ("registry_listen", listen_address),
    "mirror": ("registry_mirror", url),
    "ca": ("registry_ca", absolute_path),
    "tlsCert": ("registry_tls_cert", absolute_path),
    "tlsKey": ("registry_tls_key", absolute_path),
    "lockdown": ("registry_lockdown", boolean),
}
KUBELET_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "cgroupDriver": ("cgroup_driver", choice("systemd", "cgroupfs")),
    "maxPods": ("max_pods", integer(1, 10000)),
    "extraArgs": ("extra_args", flags),
}


def _section(document: Any, fields: dict, where: str, prefix: str, nested: tuple[str, ...] = ()) -> dict:
    if not isinstance(document, dict):
        raise NodeError(f"{where}: {prefix.rstrip('.') or 'the document'} must be a mapping, not {type(document).__name__}")
    unknown = sorted(str(key) for key in document if key not in fields and key not in nested)
    if unknown:
        known = ", ".join(sorted([*fields, *nested]))
        named = ", ".join(prefix + key if re.fullmatch(r"^[A-Za-z0-9_-]+$", key) else repr(prefix + key) for key in unknown)
        raise NodeError(f"{where}: unknown field {named}; known fields: {known}")
    values = {}
    for key, (name, parse) in fields.items():
        if key in document and document[key] is not None:
            try:
                values[name] = parse(document[key])
            except FieldError as error:
                raise NodeError(f"{where}: {prefix}{key}: {error}") from None
    return values


def parse(config_type: type, kubelet_type: type, document: Any, where: str):
    """The NodeConfig of a parsed node.yaml document, or NodeError naming the first bad field."""
    values = _section(document, NODE_FIELDS, where, "", ("registry", "kubelet"))
    values.update(_section(document.get("registry") or {}, REGISTRY_FIELDS, where, "registry."))
    kubelet = _section(document.get("kubelet") or {}, KUBELET_FIELDS, where, "kubelet.")
    if kubelet:
        values["kubelet"] = kubelet_type(**kubelet)
    if "node-ip" in values.get("kubelet", kubelet_type()).extra_args:
        raise NodeError(f"{where}: kubelet.extraArgs.node-ip: set advertiseAddress instead; airlock gives kubelet the node's address")
    if bool(values.get("registry_tls_cert")) != bool(values.get("registry_tls_key")):
        raise NodeError(f"{where}: registry.tlsCert and registry.tlsKey go together; set both or neither")
    return config_type(**values)
