"""kube-vip as a static pod on every control plane: the virtual IP that controlPlaneEndpoint names.

The manifest is a value dumped by PyYAML, with the environment kube-vip's own
`kube-vip manifest pod --controlplane --arp --leaderElection` writes: ARP
announcements of the address on one interface, the control-plane lease
(`plndr-cp-lock`) deciding which control plane holds it. The image is the one
the bundle carries, so the kubelet pulls it through the node registry like any other.
"""

from __future__ import annotations

import yaml

from bundle.reference import ImageRef

MANIFEST = "/etc/kubernetes/manifests/kube-vip.yaml"
REPOSITORY = "kube-vip/kube-vip"
# kubeadm from 1.29 gives admin.conf its rights only after init has bound them; until then only super-admin.conf
# can take the lease, so the first control plane's kube-vip starts with that one (kube-vip issue #684) and is
# switched to admin.conf once the cluster is up (the kube-vip phase): super-admin.conf bypasses RBAC and is
# kubeadm's break-glass credential, not one a long-running pod should hold.
FIRST_KUBECONFIG = "/etc/kubernetes/super-admin.conf"
KUBECONFIG = "/etc/kubernetes/admin.conf"


def bundle_image(references: list[str]) -> str:
    """The kube-vip image among the bundle's images, or "" when it carries none."""
    for reference in sorted(references):
        if ImageRef.parse(reference).repository == REPOSITORY:
            return reference
    return ""


def static_pod(image: str, address: str, interface: str, port: int, kubeconfig: str) -> dict:
    env = {
        "vip_arp": "true",
        "port": str(port),
        "vip_interface": interface,
        "vip_subnet": "32" if ":" not in address else "128",
        "cp_enable": "true",
        "cp_namespace": "kube-system",
        "vip_leaderelection": "true",
        "vip_leasename": "plndr-cp-lock",
        "vip_leaseduration": "5",
        "vip_renewdeadline": "3",
        "vip_retryperiod": "1",
        "address": address,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        "spec": {
            "containers": [
                {
                    "name": "kube-vip",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["manager"],
                    "env": [{"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                    + [{"name": name, "value": value} for name, value in env.items()],
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                    "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/kubernetes/admin.conf"}],
                }
            ],
            "hostNetwork": True,
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}],
            "volumes": [{"name": "kubeconfig", "hostPath": {"path": kubeconfig}}],
        },
    }


def node_pod(virtual_ip: str, interface: str, control_plane_endpoint: str, references: list[str], kubeconfig: str) -> dict:
    """This control plane's kube-vip pod: node.yaml's virtual IP and interface, the endpoint's port, the bundle's image."""
    port = control_plane_endpoint.rsplit(":", 1)[-1]
    return static_pod(bundle_image(references), virtual_ip, interface, int(port) if port.isdigit() else 6443, kubeconfig)


def dump(pod: dict) -> str:
    return "# Written by airlock: kube-vip holds the control-plane virtual IP (highAvailability in node.yaml).\n" + yaml.safe_dump(pod, sort_keys=False)
