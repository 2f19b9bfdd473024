"""flannel's manifest set to this cluster's pod network, edited as data.

The bundle carries flannel's own `kube-flannel.yml` byte for byte (it is a
signed member). The first control plane changes three things in it, each as
a value: the `net-conf.json` document inside the `kube-flannel-cfg`
ConfigMap (`Network` and `Backend.Type`, through json), and the flanneld
container's `--iface` / `--iface-regex` arguments (through PyYAML). Nothing
from node.yaml is ever spliced into the text.
"""

from __future__ import annotations

import ipaddress
import json

import yaml

from installer.node import FlannelSettings, NodeError

CONFIG_MAP = "kube-flannel-cfg"
NET_CONF = "net-conf.json"
CONTAINER = "kube-flannel"
INTERFACE_FLAGS = ("--iface", "--iface-regex")
MAX_MANIFEST_BYTES = 4 << 20


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing multi-line strings (the embedded JSON) as literal blocks as flannel does."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def _where(source: str) -> str:
    return f"the bundle's {source}"


def configure(text: str, pod_subnet: str, settings: FlannelSettings, source: str = "manifests/cni/kube-flannel.yml") -> str:
    """The manifest with `pod_subnet` as flannel's Network, `settings.backend` as its backend, and the interfaces flanneld uses."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise NodeError(f"{_where(source)} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; rebuild the bundle")
    if ipaddress.ip_network(pod_subnet).version != 4:
        raise NodeError(f"podSubnet {pod_subnet}: flannel's Network is an IPv4 pod subnet; give one like 10.244.0.0/16")
    try:
        documents = [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as error:
        raise NodeError(f"{_where(source)} is not valid YAML ({error}); rebuild the bundle") from None
    config_map = _find(documents, "ConfigMap", CONFIG_MAP, source)
    data = config_map.get("data")
    if not isinstance(data, dict) or not isinstance(data.get(NET_CONF), str):
        raise NodeError(f"{_where(source)}: ConfigMap {CONFIG_MAP} has no data.{NET_CONF}; is this flannel's kube-flannel.yml?")
    try:
        net_conf = json.loads(data[NET_CONF])
    except ValueError as error:
        raise NodeError(f"{_where(source)}: ConfigMap {CONFIG_MAP} data.{NET_CONF} is not JSON ({error})") from None
    if not isinstance(net_conf, dict):
        raise NodeError(f"{_where(source)}: ConfigMap {CONFIG_MAP} data.{NET_CONF} is not a JSON object")
    net_conf["Network"] = pod_subnet
    backend = net_conf.get("Backend")
    if not isinstance(backend, dict) or backend.get("Type") != settings.backend:
        # Another backend's settings (vxlan's VNI, Port) mean nothing to this one.
        net_conf["Backend"] = {"Type": settings.backend}
    data[NET_CONF] = json.dumps(net_conf, indent=2) + "\n"
    container = _flanneld(_find(documents, "DaemonSet", None, source), source)
    args = container.get("args") or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise NodeError(f"{_where(source)}: the {CONTAINER} container's args are not a list of strings")
    kept = [arg for arg in args if arg.split("=", 1)[0] not in INTERFACE_FLAGS]
    container["args"] = kept + [f"--iface={name}" for name in settings.ifaces] + [f"--iface-regex={regex}" for regex in settings.iface_regexes]
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, explicit_start=True)


def _find(documents: list, kind: str, name: str | None, source: str) -> dict:
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == kind:
            metadata = document.get("metadata") or {}
            if name is None or (isinstance(metadata, dict) and metadata.get("name") == name):
                return document
    raise NodeError(f"{_where(source)} has no {kind}{' ' + name if name else ''}; is this flannel's kube-flannel.yml?")


def _flanneld(daemon_set: dict, source: str) -> dict:
    try:
        containers = daemon_set["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER)
    except (KeyError, TypeError, StopIteration):
        raise NodeError(f"{_where(source)}: the DaemonSet has no container {CONTAINER}; is this flannel's kube-flannel.yml?") from None
