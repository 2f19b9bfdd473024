"""Run commands in a network namespace of this machine (a node of a lab or test fleet), files on the local disk."""

from __future__ import annotations

import re
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
    name: netns
    short_description: run commands inside a network namespace on the controller
    description:
        - Like the local connection, but every command runs under C(nsenter --net=/run/netns/NAME), so it sees only
          that namespace's interfaces and addresses (a node of a lab fleet built with C(ip netns add)).
        - Files are copied on the controller's own disk, which the namespace shares.
    author: airlock
    options:
        netns:
            description: The namespace's name under /run/netns.
            type: str
            required: true
            vars:
                - name: airlock_netns
        become_success_timeout:
            type: int
            default: 10
            description: As for the local connection.
            vars:
                - name: ansible_local_become_success_timeout
        become_strip_preamble:
            type: bool
            default: true
            description: As for the local connection.
            vars:
                - name: ansible_local_become_strip_preamble
    extends_documentation_fragment:
        - connection_pipelining
"""

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Connection(LocalConnection):
    transport = "airlock.cluster.netns"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        namespace = self.get_option("netns")
        if not NAME.fullmatch(namespace or ""):
            raise AnsibleConnectionFailure(f"airlock_netns {namespace!r} is not a network namespace name")
        if isinstance(cmd, bytes):
            cmd = cmd.decode()
        return super().exec_command(f"nsenter --net={shlex.quote('/run/netns/' + namespace)} {cmd}", in_data, sudoable)
