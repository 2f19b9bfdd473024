"""A node being installed: its configuration, its paths, and the one place that changes it.

`NodeConfig` is parsed once from `--config node.yaml`. `Host` is the edge
where files are written and commands run; `DryRunHost` takes the same
calls and prints them instead, so `--dry-run` shows every file and command
and the phases themselves never need to know which one they have.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml

from bundle.atomic import AtomicFile, write_atomic
from bundle.errors import NO_SPACE, no_space
from bundle.smallfile import SmallFileError, read_small_file
from installer.errors import NodeError, NothingToDo  # noqa: F401  (NothingToDo: still importable from here)


@dataclass(frozen=True)
class KubeletSettings:
    cgroup_driver: str = "systemd"
    max_pods: int = 110
    extra_args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlannelSettings:
    """node.yaml `cni.flannel`: how the pod network reaches the other nodes (applied by the first control plane)."""

    backend: str = "vxlan"
    ifaces: tuple[str, ...] = ()
    iface_regexes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeConfig:
    """Local choices for this node (`--config node.yaml`); every field has a sane default.

    Every value has been checked by type (see `installer.nodeschema`), so the
    files written from it never carry more than the field could hold.
    """

    node_name: str = ""
    advertise_address: str = ""
    control_plane_endpoint: str = ""
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    cert_sans: tuple[str, ...] = ()
    cluster_name: str = "kubernetes"
    cri_socket: str = "unix:///run/containerd/containerd.sock"
    registry_listen: str = "127.0.0.1:5000"
    registry_mirror: str = ""  # another node's registry (https://cp1:5443) instead of this node's own
    # Every control plane's registry (https://cp1:5443, …): containerd tries them in an order spread per node; the
    # control planes serve their own store, workers keep no copy of the images.
    registry_mirrors: tuple[str, ...] = ()
    registry_ca: str = ""
    registry_tls_cert: str = ""
    registry_tls_key: str = ""
    registry_lockdown: bool = False  # every other registry too is pulled from the node registry only (certs.d/_default)
    kubelet: KubeletSettings = field(default_factory=KubeletSettings)
    flannel: FlannelSettings = field(default_factory=FlannelSettings)
    # highAvailability: kube-vip holds this address on every control plane; controlPlaneEndpoint names it.
    virtual_ip: str = ""
    virtual_ip_interface: str = ""
    token: str = ""
    certificate_key: str = ""
    ca_cert_hashes: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None) -> NodeConfig:
        if path is None:
            return cls()
        try:
            data = read_small_file(path, MAX_CONFIG_BYTES, "node.yaml (a few settings)")
        except SmallFileError as error:
            raise NodeError(f"--config {path}: {error}") from None
        try:
            document = yaml.safe_load(data.decode("utf-8")) or {}
        except UnicodeDecodeError:
            raise NodeError(f"--config {path}: not UTF-8 text") from None
        except yaml.YAMLError as error:
            raise NodeError(f"--config {path}: not valid YAML: {error}") from None
        return cls.from_dict(document, str(path))

    @classmethod
    def from_dict(cls, document: dict, where: str = "node config") -> NodeConfig:
        from installer.nodeschema import parse

        return parse(cls, KubeletSettings, document, where, FlannelSettings)


MAX_CONFIG_BYTES = 64 << 10
BIN = "/usr/local/bin"  # where airlock installs kubeadm, kubelet, kubectl, crictl (and containerd) and the node command
NODE_PYZ_PATH = "/usr/local/lib/airlock/airlock-node.pyz"  # the installed node installer, run by the node command and the registry unit


class Paths:
    """Every path the installer touches, under `--root` (tests, golden images) or `/`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __call__(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def state_dir(self) -> Path:
        return self("/var/lib/airlock")

    @property
    def store(self) -> Path:
        return self.state_dir / "store"

    @property
    def staging(self) -> Path:
        return self.state_dir / "staging"

    @property
    def bundles(self) -> Path:
        return self.state_dir / "bundles"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


@contextmanager
def node_lock(paths: Paths) -> Iterator[None]:
    """One airlock run at a time on a node: a second one fails at once instead of interleaving writes."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.state_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeError(f"another airlock run holds {paths.state_dir / '.lock'}; wait for it to finish") from None
        yield


class Host:
    """Does things to the node. Every change a phase makes goes through here."""

    dry_run = False

    def __init__(self, paths: Paths, echo=None):
        from installer.ledger import Ledger

        self.paths = paths
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        # Every path made or replaced outside the state directory is noted first, for `reset`.
        self.ledger = Ledger(paths.root, paths.state_dir)

    def write(self, path: Path, data: bytes | str, mode: int = 0o644) -> bool:
        """Write a small file atomically; False when it already held exactly this (nothing changed)."""
        data = data.encode() if isinstance(data, str) else data
        if path.is_file() and path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
        self.ledger.note(path)
        try:
            write_atomic(path, data, mode)
        except OSError as error:
            if error.errno in NO_SPACE:
                raise no_space(path.parent, len(data)) from None
            raise
        return True

    def install(self, path: Path, source: Path | BinaryIO, mode: int = 0o755) -> None:
        """Stream `source` (a file or an open stream) into `path` under a temporary name, then rename it into place."""
        self.ledger.note(path)
        try:
            with AtomicFile(path, mode, durable=False) as handle:
                if isinstance(source, Path):
                    with open(source, "rb") as reader:
                        shutil.copyfileobj(reader, handle, 1 << 20)
                else:
                    shutil.copyfileobj(source, handle, 1 << 20)
        except OSError as error:
            if error.errno in NO_SPACE:
                raise no_space(path.parent) from None
            raise

    def run(
        self, argv: list[str], env: dict | None = None, check: bool = True, show: bool = True, timeout: float | None = None, binary: bool = False
    ) -> subprocess.CompletedProcess:
        """Run a command; its output comes back as text, or as bytes with `binary` (then it is never echoed)."""
        show = show and not binary
        if show:
            self.echo(f"+ {shlex.join(argv)}")
        try:
            result = subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=not binary, timeout=timeout)
        except FileNotFoundError:
            raise NodeError(f"{argv[0]}: not found") from None
        except subprocess.TimeoutExpired:
            raise NodeError(f"{shlex.join(argv)}: no answer within {timeout:.0f}s") from None
        if show and result.stdout.strip():
            self.echo(result.stdout.rstrip())
        if check and result.returncode != 0:
            stderr = result.stderr.decode(errors="replace") if binary else result.stderr
            raise NodeError(f"{shlex.join(argv)} failed (exit {result.returncode}): {stderr.strip()[-800:]}")
        return result

    def enable_service(self, name: str, start: bool) -> None:
        """Enable a systemd unit (a wants/ link, so it works under --root too); start it when asked."""
        link = self.paths(f"/etc/systemd/system/multi-user.target.wants/{name}")
        if not link.is_symlink():
            self.ledger.note(link)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"/etc/systemd/system/{name}")
        if start:
            self.run(["systemctl", "daemon-reload"])
            self.run(["systemctl", "restart", name])


class DryRunHost(Host):
    """Prints every file it would write and every command it would run; changes nothing."""

    dry_run = True

    def write(self, path: Path, data: bytes | str, mode: int = 0o644) -> bool:
        size = len(data.encode() if isinstance(data, str) else data)
        self.echo(f"would write {path} ({size} bytes, mode {mode:04o})")
        return True

    def install(self, path: Path, source: Path | BinaryIO, mode: int = 0o755) -> None:
        self.echo(f"would install {path} (mode {mode:04o})")

    def run(self, argv, env=None, check=True, show=True, timeout=None, binary=False):
        self.echo(f"would run {shlex.join(argv)}")
        return subprocess.CompletedProcess(argv, 0, b"" if binary else "", b"" if binary else "")

    def enable_service(self, name: str, start: bool) -> None:
        self.echo(f"would enable {name}" + (" and start it" if start else ""))
