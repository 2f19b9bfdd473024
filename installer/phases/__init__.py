"""The installer's phases, modelled on kubeadm's workflow: plain values in an ordered list.

A phase has a name, a one-line description, a `run(context)` and optionally
`run_if(context)`; the runner walks the list, so `airlock-node phases`,
`--skip-phases`, `--dry-run` and resuming an interrupted run all come from
this one data structure. The lists themselves are in `installer.workflow`:
this package defines what a phase is and imports none of its phases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bundle.manifest import Manifest
from bundle.trust import TrustedKey
from installer.node import Host, NodeConfig, Paths

if TYPE_CHECKING:
    from bundle.verify import Verified
    from installer.remote import RegistrySource


@dataclass
class Context:
    """What every phase may read; the verify phase records what it learns here (the manifest, the role)."""

    command: str  # "init", "join" or "upgrade"
    bundle: Path | None  # the bundle file, or None when installing from a registry (`remote`)
    keys: list[TrustedKey]
    paths: Paths
    host: Host
    config: NodeConfig
    containerd_address: str = "/run/containerd/containerd.sock"
    allow_downgrade: bool = False
    ignore_preflight: frozenset[str] = frozenset()
    control_plane: bool = False
    drain: bool = False
    kubeconfig: Path | None = None  # an admin kubeconfig for drain/uncordon (`upgrade --kubeconfig`)
    role: str = ""  # first-control-plane, control-plane or worker
    start_services: bool = True
    now: datetime | None = None
    arch: str = ""
    manifest: Manifest | None = None
    manifest_sha256: str = ""
    remote: RegistrySource | None = None  # `--from`: the bundle artifact in a registry
    signature: bytes = b""
    head: Verified | None = None  # the signed head the verify phase accepted; unpack holds the source to it, unchecked again

    @property
    def serves_registry(self) -> bool:
        """This node runs its own registry over its store: unless it pulls from one other registry (`registry.mirror`,
        `--from`), or it is a worker of a cluster whose control planes serve theirs (`registry.mirrors`)."""
        if self.config.registry_mirror or self.remote is not None:
            return False  # `--from` fetches no image blobs: this node has none to serve
        control_plane = self.command == "init" or self.control_plane or self.role in ("first-control-plane", "control-plane")
        return not self.config.registry_mirrors or control_plane

    @property
    def source(self) -> str:
        return self.remote.describe() if self.remote is not None else str(self.bundle)

    def echo(self, line: str) -> None:
        self.host.echo(line)

    def will_wait(self, timeout: float, waited_for: str, urls: str) -> bool:
        """Whether to wait for `waited_for` to answer at `urls`; a dry run, or services not started under --root, says why not."""
        if self.host.dry_run:
            self.echo(f"would wait up to {timeout:.0f}s for {waited_for} to answer at {urls}")
            return False
        if not self.start_services:
            self.echo(f"kubelet is not started under --root, so nothing will answer at {urls}; not waiting")
            return False
        return True


@dataclass(frozen=True)
class Phase:
    name: str
    description: str
    run: Callable[[Context], None]
    run_if: Callable[[Context], bool] | None = None
    steps: tuple[str, ...] = ()  # sub-steps shown by `airlock-node phases` (kubeadm's own phases)
    always: bool = False  # runs again on resume (it loads what later phases need)

