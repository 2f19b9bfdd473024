"""done: record the installed bundle; drop the staging copy."""

from __future__ import annotations

import shutil

from installer.phases import Context, Phase
from installer.staging import ensure_staged
from installer.trusted import TRUSTED_KEYS, keep_trusted_keys


def run(context: Context) -> None:
    staging = ensure_staged(context)
    manifest = context.manifest
    if context.host.dry_run:
        context.echo(f"would record serial {manifest.serial} as installed and keep the trusted keys in {TRUSTED_KEYS}")
        return
    context.host.write(context.paths.bundles / f"{manifest.serial}.json", (staging / "bundle.json").read_bytes())
    shutil.rmtree(staging, ignore_errors=True)
    keep_trusted_keys(context.host, context.paths.root, context.keys)
    context.echo(f"installed {manifest.name} serial {manifest.serial} (kubernetes {manifest.version})")


PHASE = Phase("done", "record the installed bundle and keep its trusted keys", run)
