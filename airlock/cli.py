"""Composes `airlock` from the two halves: builder.cli (connected host) and installer.cli (node)."""

from __future__ import annotations

import typer

from builder.cli import app as build_app
from bundle.memory import keep_freed_memory
from installer.cli import HELP, PLAIN
from installer.cli import app as node_app


def compose() -> typer.Typer:
    app = typer.Typer(name="airlock", help=HELP, no_args_is_help=True, **PLAIN)
    app.registered_callback = node_app.registered_callback  # --version
    app.registered_commands = [*build_app.registered_commands, *node_app.registered_commands]
    app.registered_groups = [*build_app.registered_groups, *node_app.registered_groups]
    return app


def main() -> None:
    keep_freed_memory()
    compose()(prog_name="airlock")
