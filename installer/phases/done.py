"""done: record the installed bundle; drop the staging copy."""

from __future__ import annotations

import shutil

from installer.phases import Context, Phase
from installer.phases.unpack import ensure_staged


def run(context: Context) -> None:
    staging = ensure_staged(context)
    manifest = context.manifest
    if context.host.dry_run:
        context.echo(f"would record serial {manifest.serial} as installed")
        return
    context.host.write(context.paths.bundles / f"{manifest.serial}.json", (staging / "bundle.json").read_bytes())
    shutil.rmtree(staging, ignore_errors=True)
    context.echo(f"installed {manifest.name} serial {manifest.serial} (kubernetes {manifest.version})")


PHASE = Phase("done", "record the installed bundle", run)
