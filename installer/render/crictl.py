"""/etc/crictl.yaml, through PyYAML."""

from __future__ import annotations

import yaml


def crictl_config(cri_socket: str) -> str:
    """/etc/crictl.yaml: crictl talks to the node's CRI socket."""
    return yaml.safe_dump({"runtime-endpoint": cri_socket, "image-endpoint": cri_socket, "timeout": 10}, sort_keys=False)
