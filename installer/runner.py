"""Walk the phases in order, journal each finished one in state.json, resume after a failure."""

from __future__ import annotations

import time

from bundle.errors import AirlockError
from installer.errors import NodeError, NothingToDo
from installer.node import node_lock
from installer.phases import Context, Phase
from installer.state import Installed, State


def select(phases: list[Phase], skip: set[str]) -> list[Phase]:
    names = {phase.name for phase in phases}
    unknown = sorted(skip - names)
    if unknown:
        raise NodeError(f"--skip-phases: unknown phase {', '.join(unknown)}; `airlock-node phases` lists them")
    return phases


def run_phases(context: Context, phases: list[Phase], skip: set[str]) -> None:
    select(phases, skip)
    if context.host.dry_run:
        _run(context, phases, skip)
        return
    with node_lock(context.paths):
        _run(context, phases, skip)


def _run(context: Context, phases: list[Phase], skip: set[str]) -> None:
    dry_run = context.host.dry_run
    state = State.load(context.paths) if not dry_run else State()
    for phase in phases:
        if phase.name in skip:
            context.echo(f"would skip phase {phase.name} (--skip-phases)" if dry_run else f"[{phase.name}] skipped (--skip-phases)")
            continue
        if not phase.always and state.journal_for(context.command, context.manifest_sha256) and phase.name in state.run["done"]:
            context.echo(f"[{phase.name}] already done (resuming)")
            continue
        if phase.run_if is not None and not phase.run_if(context):
            context.echo(f"would not run phase {phase.name}: not needed here" if dry_run else f"[{phase.name}] not needed here")
            continue
        context.echo(f"would run phase {phase.name}: {phase.description}" if dry_run else f"[{phase.name}] {phase.description}")
        started = time.monotonic()
        try:
            phase.run(context)
        except NothingToDo as done:
            context.echo(str(done))
            return
        except AirlockError as error:
            raise NodeError(f"phase {phase.name}: {error}") from None
        if context.host.dry_run:
            continue
        if not state.journal_for(context.command, context.manifest_sha256):
            # The bundle is known once the first phase has read it; a journal of another bundle or command starts over.
            state.run = {"command": context.command, "bundle_sha256": context.manifest_sha256, "done": []}
        if phase.name not in state.run["done"]:
            state.run["done"].append(phase.name)
        if phase is phases[-1]:
            manifest = context.manifest
            from installer.phases.runtime import mirror_url, mirror_urls

            state.installed = Installed(
                serial=manifest.serial,
                sha256=context.manifest_sha256,
                version=manifest.version,
                name=manifest.name,
                command=context.command,
                role=context.role,
                # Where this node's containerd pulls from, for `airlock-node status`.
                registry=mirror_url(context) if context.serves_registry else mirror_urls(context)[0],
                registries=tuple(mirror_urls(context)),
                registry_ca=context.config.registry_ca,
            )
            state.run = None
        state.save(context.paths)
        context.echo(f"[{phase.name}] done in {time.monotonic() - started:.1f}s")
