"""`state.json`: what is installed on this node, and the journal of the run in progress."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bundle.atomic import write_atomic
from installer.node import NodeError, Paths


@dataclass
class State:
    """`state.json`: what is installed, and the journal of the run in progress."""

    installed: dict | None = None
    run: dict | None = None

    @classmethod
    def load(cls, paths: Paths) -> State:
        try:
            document = json.loads(paths.state_file.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, json.JSONDecodeError) as error:
            raise NodeError(f"{paths.state_file}: unreadable ({error}); move it aside to start over") from None
        return cls(document.get("installed"), document.get("run"))

    def journal_for(self, command: str, bundle_sha256: str) -> bool:
        """Whether the journal in progress is this command's run of this bundle (so it can resume)."""
        run = self.run or {}
        return bool(bundle_sha256) and run.get("command") == command and run.get("bundle_sha256") == bundle_sha256

    def save(self, paths: Paths) -> None:
        document = {"installed": self.installed, "run": self.run}
        write_atomic(paths.state_file, json.dumps(document, indent=2, sort_keys=True).encode(), 0o600)
