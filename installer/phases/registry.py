"""registry: activate the bundle's images and its artifact in the store and run the node registry over it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bundle.errors import JsonObjectError
from bundle.jsonobject import parse_object
from bundle.manifest import NODE_PYZ
from bundle.oci import MAX_MANIFEST_BYTES
from bundle.store import BlobStore, layout_index, read_layout_index
from bundle.unpack import INDEX_MEMBER, activate_index
from installer.errors import NodeError
from installer.node import NODE_PYZ_PATH
from installer.phases import Context, Phase
from installer.render.unitfiles import registry_service
from installer.staging import ARTIFACT, ensure_staged, member_file, trusted_blob

STORE = "/var/lib/airlock/store"
CREDENTIAL_PATH = re.compile(r"/[A-Za-z0-9._+/-]+")
LISTEN = re.compile(r"[A-Za-z0-9.:\[\]-]*:[0-9]{1,5}")


def airlock_program(context: Context) -> list[str]:
    """The command the registry unit runs: the installed airlock-node.pyz (isolated system Python) when the bundle carries it."""
    if any(entry.path == NODE_PYZ for entry in context.manifest.files):
        return ["/usr/bin/python3", "-I", NODE_PYZ_PATH]
    program = Path(sys.argv[0]).resolve()
    return [str(program) if program.name == "airlock" else "/usr/local/bin/airlock"]


def registry_unit(airlock: list[str], listen: str, tls_cert: str, tls_key: str) -> str:
    """airlock-registry.service. TLS files reach the unprivileged (DynamicUser) service as systemd
    credentials: systemd reads the root-only key and hands the service a private copy."""
    if not LISTEN.fullmatch(listen):
        raise NodeError(f"node.yaml registry.listen: {listen!r} must be HOST:PORT, like 127.0.0.1:5000")
    credentials = {}
    if tls_cert or tls_key:
        credentials = {"tls.crt": tls_cert, "tls.key": tls_key}
        for name, path in credentials.items():
            if not CREDENTIAL_PATH.fullmatch(path or ""):
                raise NodeError(f"node.yaml registry.{'tlsCert' if name == 'tls.crt' else 'tlsKey'}: {path!r} must be an absolute path of letters, digits and ._+-/")
    return registry_service(airlock, STORE, listen, credentials)


def artifact_entry(staging: Path) -> dict:
    """The index entry of the bundle artifact unpack built and stored (staging is root's alone; see ensure_staged)."""
    try:
        entry = parse_object((staging / ARTIFACT).read_bytes(), str(staging / ARTIFACT), MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise NodeError(f"{staging / ARTIFACT} is missing; remove {staging} and rerun without skipping the unpack phase") from None
    except JsonObjectError:
        entry = {}
    if not isinstance(entry.get("digest"), str):
        raise NodeError(f"{staging / ARTIFACT} is not an index entry; remove {staging} and rerun without skipping the unpack phase")
    return entry


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host, config = context.paths, context.host, context.config
    if not host.dry_run:
        # The moment the new images (and the bundle artifact other nodes install from, which unpack put in the
        # store) become visible: one atomic rename of index.json. activate_index refuses an entry the store lacks.
        with trusted_blob(member_file(context, INDEX_MEMBER, staging), paths.state_dir) as index:
            entries = read_layout_index(index.read()) + [artifact_entry(staging)]
        activate_index(BlobStore(paths.store), layout_index(entries))
    unit = registry_unit(airlock_program(context), config.registry_listen, config.registry_tls_cert, config.registry_tls_key)
    host.write(paths("/etc/systemd/system/airlock-registry.service"), unit)
    host.enable_service("airlock-registry.service", context.start_services)


PHASE = Phase(
    "registry",
    "make the bundle's images visible in the store and enable the node registry",
    run,
    run_if=lambda context: context.serves_registry,
)
