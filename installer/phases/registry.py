"""registry: activate the bundle's images in the store and run the node registry over it."""

from __future__ import annotations

import sys
from pathlib import Path

from bundle.manifest import NODE_PYZ
from bundle.store import BlobStore
from bundle.unpack import activate_index
from installer.phases import Context, Phase
from installer.phases.binaries import NODE_PYZ_PATH
from installer.phases.unpack import ensure_staged
from installer.templates import render


def airlock_program(context: Context) -> str:
    """The command the registry unit runs: the installed airlock-node.pyz (isolated system Python) when the bundle carries it."""
    if any(entry.path == NODE_PYZ for entry in context.manifest.files):
        return f"/usr/bin/python3 -I {NODE_PYZ_PATH}"
    program = Path(sys.argv[0]).resolve()
    return str(program) if program.name == "airlock" else "/usr/local/bin/airlock"


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host, config = context.paths, context.host, context.config
    if not host.dry_run:
        # The moment the new images become visible: one atomic rename of index.json.
        activate_index(BlobStore(paths.store), (staging / "images/index.json").read_bytes())
    tls_args = f" --tls-cert {config.registry_tls_cert} --tls-key {config.registry_tls_key}" if config.registry_tls_cert else ""
    unit = render("systemd/airlock-registry.service", staging, airlock=airlock_program(context), store="/var/lib/airlock/store", listen=config.registry_listen, tls_args=tls_args)
    host.write(paths("/etc/systemd/system/airlock-registry.service"), unit)
    host.enable_service("airlock-registry.service", context.start_services)


PHASE = Phase(
    "registry",
    "make the bundle's images visible in the store and enable the node registry",
    run,
    run_if=lambda context: not context.config.registry_mirror,
)
