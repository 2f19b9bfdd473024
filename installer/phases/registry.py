"""registry: activate the bundle's images and its artifact in the store and run the node registry over it."""

from __future__ import annotations

import sys
from pathlib import Path

from bundle.artifact import build_artifact, with_artifact
from bundle.store import BlobStore, layout_index
from bundle.unpack import activate_index
from installer.phases import Context, Phase
from installer.phases.unpack import ensure_staged
from installer.templates import render


def airlock_program() -> str:
    program = Path(sys.argv[0]).resolve()
    return str(program) if program.name == "airlock" else "/usr/local/bin/airlock"


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host, config = context.paths, context.host, context.config
    if not host.dry_run:
        # The moment the new images (and the bundle artifact other nodes install from) become visible:
        # one atomic rename of index.json.
        artifact = build_artifact((staging / "bundle.json").read_bytes(), (staging / "bundle.json.sig").read_bytes(), context.manifest)
        activate_index(BlobStore(paths.store), layout_index(with_artifact((staging / "images/index.json").read_bytes(), artifact)))
    tls_args = f" --tls-cert {config.registry_tls_cert} --tls-key {config.registry_tls_key}" if config.registry_tls_cert else ""
    unit = render("systemd/airlock-registry.service", staging, airlock=airlock_program(), store="/var/lib/airlock/store", listen=config.registry_listen, tls_args=tls_args)
    host.write(paths("/etc/systemd/system/airlock-registry.service"), unit)
    host.enable_service("airlock-registry.service", context.start_services)


PHASE = Phase(
    "registry",
    "make the bundle's images visible in the store and enable the node registry",
    run,
    run_if=lambda context: not context.config.registry_mirror,
)
