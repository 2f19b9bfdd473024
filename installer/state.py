"""`state.json`: what is installed on this node (an `Installed` record), and the journal of the run in progress."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bundle.atomic import write_atomic
from installer.errors import NodeError
from installer.node import Paths

ROLES = ("first-control-plane", "control-plane", "worker")


def _kind(value: object) -> str:
    return {bool: "true/false", int: "a number", str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Installed:
    """The bundle this node runs, as the last finished init, join or upgrade recorded it (state.json's `installed`).

    Read by type: a field of the wrong type stops the command with one line naming state.json and the field. The
    fields and their JSON names are the ones airlock has always written; `to_json` writes them back unchanged.
    """

    serial: int
    sha256: str
    version: str  # bundle.json's kubernetes.version, e.g. v1.36.4
    name: str
    command: str  # init, join or upgrade: the command that finished
    role: str  # first-control-plane, control-plane or worker
    registry: str  # where this node's containerd pulls from, for `airlock-node status`
    registries: tuple[str, ...]
    registry_ca: str

    @property
    def control_plane(self) -> bool:
        return self.role in ("first-control-plane", "control-plane")

    @classmethod
    def from_json(cls, document: object, where: str) -> Installed:
        """The record from state.json's `installed` object; NodeError naming `where` and the field when one is missing or mistyped."""

        def wrong(name: str, expected: str, value: object) -> NodeError:
            return NodeError(f"{where}: installed.{name} is {_kind(value)}, not {expected}; restore state.json from a backup, or reset the node and install again")

        if not isinstance(document, dict):
            raise NodeError(f"{where}: installed is {_kind(document)}, not an object; restore state.json from a backup, or reset the node and install again")

        def text(name: str, default: str | None = None) -> str:
            value = document.get(name, default)
            if not isinstance(value, str):
                raise wrong(name, "a string", value)
            return value

        serial = document.get("serial")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise wrong("serial", "a whole number", serial)
        registries = document.get("registries", [])
        if not isinstance(registries, list) or not all(isinstance(item, str) for item in registries):
            raise wrong("registries", "a list of strings", registries)
        role = text("role", "worker")
        if role not in ROLES:
            raise NodeError(f"{where}: installed.role is {role[:40]!r}, not one of {', '.join(ROLES)}; restore state.json from a backup, or reset the node")
        return cls(
            serial=serial,
            sha256=text("sha256"),
            version=text("version"),
            name=text("name", ""),
            command=text("command", ""),
            role=role,
            registry=text("registry", ""),
            registries=tuple(registries),
            registry_ca=text("registry_ca", ""),
        )

    def to_json(self) -> dict:
        return {
            "serial": self.serial,
            "sha256": self.sha256,
            "version": self.version,
            "name": self.name,
            "command": self.command,
            "role": self.role,
            "registry": self.registry,
            "registries": list(self.registries),
            "registry_ca": self.registry_ca,
        }


@dataclass
class State:
    """`state.json`: what is installed, and the journal of the run in progress."""

    installed: Installed | None = None
    run: dict | None = None

    @classmethod
    def load(cls, paths: Paths) -> State:
        try:
            document = json.loads(paths.state_file.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, json.JSONDecodeError) as error:
            raise NodeError(f"{paths.state_file}: unreadable ({error}); move it aside to start over") from None
        if not isinstance(document, dict):
            raise NodeError(f"{paths.state_file}: not a JSON object; move it aside to start over")
        installed = document.get("installed")
        run = document.get("run")
        if run is not None and not isinstance(run, dict):
            raise NodeError(f"{paths.state_file}: run is {_kind(run)}, not an object; move it aside to start over")
        return cls(Installed.from_json(installed, str(paths.state_file)) if installed is not None else None, run)

    def journal_for(self, command: str, bundle_sha256: str) -> bool:
        """Whether the journal in progress is this command's run of this bundle (so it can resume)."""
        run = self.run or {}
        return bool(bundle_sha256) and run.get("command") == command and run.get("bundle_sha256") == bundle_sha256

    def save(self, paths: Paths) -> None:
        document = {"installed": self.installed.to_json() if self.installed is not None else None, "run": self.run}
        write_atomic(paths.state_file, json.dumps(document, indent=2, sort_keys=True).encode(), 0o600)
