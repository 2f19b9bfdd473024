"""What airlock put on a node, so that `reset` takes away exactly that and puts back what it replaced.

Every file, link and directory the installer makes outside /var/lib/airlock
goes through `Host`, which notes it here the first time it touches the path:
made by airlock (reset removes it), or replacing something that was there (a
copy of the original is kept first, and reset puts it back). Directories
airlock made are removed by reset once they are empty. What airlock never
touched is not in the ledger, so reset leaves it alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path

from bundle.atomic import make_dirs, write_atomic
from bundle.errors import AirlockError

LEDGER = "/var/lib/airlock/ledger.json"
ORIGINALS = "/var/lib/airlock/originals"
CREATED, REPLACED, DIRECTORY = "created", "replaced", "directory"


class LedgerError(AirlockError):
    """The ledger cannot be read; the message says where and why."""


class Ledger:
    """The ledger of one node root (`--root` or /), read once and rewritten atomically on every new entry."""

    def __init__(self, root: Path, state_dir: Path):
        self.root = Path(root)
        self.state_dir = Path(state_dir)
        self.file = self.root / LEDGER.lstrip("/")
        self.originals = self.root / ORIGINALS.lstrip("/")
        self._entries: dict[str, dict] | None = None
        self._lock = threading.Lock()

    def entries(self) -> dict[str, dict]:
        """node path -> {"kind": created|replaced|directory, "original": file name under originals/ for replaced files}."""
        if self._entries is None:
            try:
                document = json.loads(self.file.read_text())
            except FileNotFoundError:
                document = {}
            except (OSError, ValueError) as error:
                raise LedgerError(f"{self.file}: unreadable ({error}); it lists what airlock installed, so reset needs it") from None
            entries = document.get("entries") if isinstance(document, dict) else None
            self._entries = entries if isinstance(entries, dict) else {}
        return self._entries

    def node_path(self, path: Path) -> str | None:
        """`path` as the node sees it (/etc/...), or None when it is not airlock's to note (the state directory, outside the root)."""
        path = Path(path)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        if path == self.state_dir or self.state_dir in path.parents:
            return None
        return "/" + str(relative)

    def note(self, path: Path) -> None:
        """Call before making or replacing `path`: its missing directories, and the path itself, are noted the first time."""
        node = self.node_path(path)
        if node is None:
            return
        with self._lock:
            entries = self.entries()
            if node in entries:
                return
            missing = []
            parent = Path(path).parent
            while not parent.exists() and parent != self.root and self.node_path(parent) is not None:
                missing.append(parent)
                parent = parent.parent
            for directory in reversed(missing):
                entries.setdefault(self.node_path(directory), {"kind": DIRECTORY})
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                entries[node] = {"kind": CREATED}
            else:
                entries[node] = {"kind": REPLACED, "original": self._keep_original(Path(path), node, info)}
            self._save()

    def _keep_original(self, path: Path, node: str, info: os.stat_result) -> str:
        name = hashlib.sha256(node.encode()).hexdigest()
        make_dirs(self.originals, 0o700)
        kept = self.originals / name
        if stat.S_ISLNK(info.st_mode):
            kept.unlink(missing_ok=True)
            kept.symlink_to(os.readlink(path))
        else:
            shutil.copy2(path, kept, follow_symlinks=False)
        return name

    def _original(self, entry: dict) -> Path | None:
        name = entry.get("original")
        if not isinstance(name, str) or len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
            return None
        kept = self.originals / name
        return kept if kept.is_symlink() or kept.exists() else None

    def _save(self) -> None:
        write_atomic(self.file, json.dumps({"entries": self._entries}, indent=2).encode(), 0o600)

    def undo(self, echo, dry_run: bool) -> None:
        """Remove what airlock made and put back what it replaced, newest first; then forget the ledger."""
        entries = self.entries()
        directories = []
        for node, entry in reversed(list(entries.items())):
            if not isinstance(entry, dict) or not node.startswith("/") or os.path.normpath(node) != node or node == "/":
                continue  # only root writes the ledger; still, nothing but a plain absolute path is acted on
            path = self.root / node.lstrip("/")
            kind = entry.get("kind")
            if kind == DIRECTORY:
                directories.append(path)
            elif kind == REPLACED and self._original(entry) is not None:
                echo(f"{'would restore' if dry_run else 'restoring'} {path} (as it was before airlock)")
                if not dry_run:
                    restore(self._original(entry), path)
            elif kind in (CREATED, REPLACED) and (path.is_symlink() or path.exists()):
                echo(f"{'would remove' if dry_run else 'removing'} {path}")
                if not dry_run:
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        for directory in directories:
            if directory.is_dir() and not any(directory.iterdir()):
                echo(f"{'would remove' if dry_run else 'removing'} {directory}/")
                if not dry_run:
                    directory.rmdir()
        if not dry_run:
            shutil.rmtree(self.originals, ignore_errors=True)
            self.file.unlink(missing_ok=True)
            self._entries = {}


def restore(kept: Path, path: Path) -> None:
    """Put a kept original back at `path`: copied beside it (the state directory may be another file system), then renamed."""
    temporary = path.with_name(f".{path.name}.airlock-restore")
    temporary.unlink(missing_ok=True)
    if kept.is_symlink():
        temporary.symlink_to(os.readlink(kept))
    else:
        shutil.copy2(kept, temporary)
    os.replace(temporary, path)
