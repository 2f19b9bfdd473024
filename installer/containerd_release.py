"""Which containerd release a node's program is: `containerd --version` and `ctr --version`, asked and read.

Read-only, so the phases ask it in --dry-run as well. What the answers look like:
an upstream build's `containerd github.com/containerd/containerd/v2 v2.3.4 <commit>`,
Debian's `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3`
and `ctr github.com/containerd/containerd/v2 2.1.9+unknown`.
"""

from __future__ import annotations

import subprocess

from bundle.containerd import ContainerdVersionError, minor_of
from installer.node import NodeError


def release_in(answer: str) -> str:
    """The release in a `--version` answer of containerd or ctr (`2.3.4`, `1.6.20~ds1`), without a leading v."""
    words = answer.split()
    if len(words) >= 3 and words[0] in ("containerd", "ctr"):
        try:
            minor_of(words[2])
            return words[2].lstrip("v")
        except ContainerdVersionError:
            pass
    raise NodeError(f"--version answered {answer.strip()[:200]!r}, which names no containerd release; cannot tell what it reads and does")


def ask(program: str) -> str:
    """The release of `program` (containerd or ctr), asked with --version."""
    try:
        answer = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NodeError(f"{program} --version did not answer ({error}); is it containerd's?") from None
    try:
        return release_in(answer)
    except NodeError as error:
        raise NodeError(f"{program} {error}") from None
