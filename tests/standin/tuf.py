"""A TUF repository that publishes a Sigstore trusted_root.json, as Sigstore's does, made by the tests.

The metadata is python-tuf's own (tuf.api.metadata), signed with ECDSA keys generated here, one per
top-level role; served over HTTP from a directory the way a TUF repository's CDN serves it
(`N.root.json`, `timestamp.json`, `snapshot.json`, `targets.json`, `targets/<name>`).
"""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

ROLES = ("root", "timestamp", "snapshot", "targets")


class TufRepository:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        (self.directory / "targets").mkdir(parents=True, exist_ok=True)
        self.signers = {role: CryptoSigner.generate_ecdsa() for role in ROLES}
        self.root = Metadata(Root(expires=self.later(), consistent_snapshot=False))
        for role, signer in self.signers.items():
            self.root.signed.add_key(signer.public_key, role)
        self.targets = Metadata(Targets(expires=self.later()))
        self.snapshot = Metadata(Snapshot(expires=self.later()))
        self.timestamp = Metadata(Timestamp(expires=self.later()))
        self._write(self.root, f"{self.root.signed.version}.root.json")
        self.server: ThreadingHTTPServer | None = None

    @staticmethod
    def later(days: int = 30) -> datetime:
        return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)

    @property
    def root_json(self) -> bytes:
        """The TUF root.json a client starts from (what a repository's operators hand out)."""
        return (self.directory / "1.root.json").read_bytes()

    def _write(self, metadata: Metadata, name: str) -> None:
        metadata.signatures.clear()
        metadata.sign(self.signers[metadata.signed.type])
        metadata.to_file(str(self.directory / name))

    def publish(self, name: str, data: bytes, *, timestamp_expires: datetime | None = None) -> None:
        """Add or replace a target, and publish new targets, snapshot and timestamp metadata for it."""
        (self.directory / "targets" / name).write_bytes(data)
        self.targets.signed.targets[name] = TargetFile.from_data(name, data, ["sha256"])
        self.targets.signed.version += 1
        self._write(self.targets, "targets.json")
        self.snapshot.signed.meta["targets.json"] = MetaFile(version=self.targets.signed.version)
        self.snapshot.signed.version += 1
        self._write(self.snapshot, "snapshot.json")
        self.timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
        self.timestamp.signed.version += 1
        self.timestamp.signed.expires = timestamp_expires or self.later()
        self._write(self.timestamp, "timestamp.json")

    def start(self) -> TufRepository:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(self.directory)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
