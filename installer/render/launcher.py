"""/usr/local/bin/airlock-node: the node command, a two-line shell launcher of the installed pyz."""

from __future__ import annotations

import shlex

from installer.node import NODE_PYZ_PATH


def launcher(python: str) -> str:
    """/usr/local/bin/airlock-node: exec the installed pyz under `python -I` with the caller's arguments, word for word.

    Nothing is interpolated but "$@": the two paths are fixed, quoted for the shell all the same.
    """
    return (
        "#!/bin/sh\n"
        "# Written by airlock: the node command. It runs the installed node installer with an isolated Python.\n"
        f"exec {shlex.quote(python)} -I {shlex.quote(NODE_PYZ_PATH)} \"$@\"\n"
    )
