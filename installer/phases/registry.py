"""registry: activate the bundle's images in the store and run the node registry over it."""

from __future__ import annotations

import sys
from pathlib import Path

from bundle.store import BlobStore
from bundle.unpack import activate_index
from installer.phases import Context, Phase
from installer.phases.unpack import ensure_staged
from installer.unitfiles import registry_service


def airlock_program() -> str:
    program = Path(sys.argv[0]).resolve()
    return str(program) if program.name == "airlock" else "/usr/local/bin/airlock"


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host, config = context.paths, context.host, context.config
    if not host.dry_run:
        # The moment the new images become visible: one atomic rename of index.json.
        activate_index(BlobStore(paths.store), (staging / "images/index.json").read_bytes())
    unit = registry_service(airlock_program(), "/var/lib/airlock/store", config.registry_listen, config.registry_tls_cert, config.registry_tls_key)
    host.write(paths("/etc/systemd/system/airlock-registry.service"), unit)
    host.enable_service("airlock-registry.service", context.start_services)


PHASE = Phase(
    "registry",
    "make the bundle's images visible in the store and enable the node registry",
    run,
    run_if=lambda context: not context.config.registry_mirror,
)
