"""The docs an operator follows on the first day are true: every command line in README and docs/ is one the
program it names accepts, names the node command as it exists on a node, links only inside the repository,
and every command's --help shows an example that runs. The runbooks themselves run in the tests named in
each doc's own words (see `RUNBOOK_TESTS`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from airlock.cli import compose
from installer.cli import app as node_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NODE_ONLY = ("init", "join", "upgrade", "reset", "store", "status", "token", "trust", "phases", "registry")
PLACEHOLDERS = {"bundle": "k8s.tar", "private key": "keys/airlock.key", "public key": "airlock.pub", "node config": "node.yaml"}


def program_for(argv: list[str]) -> tuple[typer.Typer, list[str]]:
    """The Typer app a documented command line runs, and its arguments."""
    if argv[0] == "airlock":
        return compose(), argv[1:]
    if argv[0] == "airlock-node":
        return node_app, argv[1:]
    if argv[:2] in (["python3", "airlock-node.pyz"],) or (argv[0] == "python3" and argv[1:2] == ["-I"] and argv[2].endswith("airlock-node.pyz")):
        return node_app, argv[argv.index(next(a for a in argv if a.endswith("airlock-node.pyz"))) + 1 :]
    raise ValueError(f"not an airlock command line: {argv}")


def is_group(command) -> bool:
    return hasattr(command, "commands")


def parse(argv: list[str]):
    """Parse a command line as the program would (options, arguments, sub-commands); raise its UsageError if it would refuse it."""
    app, args = program_for(argv)
    command = typer.main.get_command(app)
    context = command.make_context(argv[0], list(args), resilient_parsing=False)
    while is_group(command):
        # The sub-command's name is held apart from the rest of the arguments (`_protected_args` since click 8.2).
        held = getattr(context, "_protected_args", None) or getattr(context, "protected_args", [])
        name, command, rest = command.resolve_command(context, [*held, *context.args])
        context = command.make_context(name, rest, parent=context)
    return context


def commands(group, path: tuple[str, ...] = ()):
    if is_group(group):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name))
    else:
        yield path, group


def doc_command_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of every airlock / airlock-node / python3 airlock-node.pyz line in the doc's ```sh blocks."""
    found = []
    text = path.read_text()
    for block in re.finditer(r"```sh\n(.*?)```", text, re.S):
        start = text[: block.start()].count("\n") + 2
        joined = block.group(1).replace("\\\n", " ")
        for offset, line in enumerate(joined.splitlines()):
            line = line.strip()
            if line.startswith("echo ") and "| airlock" in line:
                line = line.split("| ", 1)[1]
            if not re.match(r"^(airlock |airlock-node |python3 (-I )?\S*airlock-node\.pyz )", line):
                continue
            found.append((start + offset, shlex.split(line, comments=True)))
    return found


def test_every_command_has_a_help_example_that_its_program_accepts():
    for program, app in (("airlock", compose()), ("airlock-node", node_app)):
        for path, command in commands(typer.main.get_command(app)):
            helped = command.help or ""
            examples = [line.strip()[len("Example: ") :] for line in helped.splitlines() if line.strip().startswith("Example: ")]
            assert examples, f"{program} {' '.join(path)} --help has no example"
            for example in examples:
                argv = shlex.split(example)
                context = parse(argv)
                assert context.command is command or context.command.name == command.name, (example, path)


def test_help_examples_use_the_same_placeholders_in_both_programs():
    texts = []
    for app in (compose(), node_app):
        for _, command in commands(typer.main.get_command(app)):
            texts += [line for line in (command.help or "").splitlines() if line.strip().startswith("Example: ")]
    joined = "\n".join(texts)
    for other in ("bundle.tar", "BUNDLE.tar", "pub.pem", "key.pub", "OUT.tar", "config.yaml"):
        assert other not in joined, other
    for what, name in PLACEHOLDERS.items():
        assert name in joined, f"no example names the {what} as {name}"


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_every_documented_command_line_is_accepted_by_the_program_it_names(doc):
    lines = doc_command_lines(doc)
    for number, argv in lines:
        if argv[0] == "airlock" and len(argv) > 1 and argv[1] in NODE_ONLY:
            pytest.fail(f"{doc.name}:{number}: `{' '.join(argv[:2])}` runs on a node, where the command is airlock-node (python3 airlock-node.pyz before the first install)")
        try:
            parse(argv)
        except Exception as error:  # typer's (vendored click's) UsageError and its kin
            if not hasattr(error, "format_message"):
                raise
            pytest.fail(f"{doc.name}:{number}: {shlex.join(argv)}: {error.format_message()}")


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_docs_link_only_inside_the_repository(doc):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        resolved = (doc.parent / target).resolve()
        assert ROOT in resolved.parents or resolved == ROOT, f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to {target}, which is not in the repository"


def test_prose_names_the_node_command_as_it_exists_on_a_node():
    """`airlock init`, `airlock reset`… in running text: on a node there is only airlock-node (and python3 airlock-node.pyz)."""
    wrong = re.compile(r"`airlock (?:" + "|".join(NODE_ONLY) + r")(?![\w-])")
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            assert not wrong.search(line), f"{doc.name}:{number}: {line.strip()}"


def test_the_registry_unit_in_the_docs_is_the_one_the_registry_phase_writes():
    from installer.phases.binaries import NODE_PYZ_PATH
    from installer.phases.registry import registry_unit

    text = (ROOT / "docs" / "existing-registry.md").read_text()
    documented = re.search(r"```ini\n(.*?)```", text, re.S).group(1).splitlines()
    written = registry_unit(["/usr/bin/python3", "-I", NODE_PYZ_PATH], "0.0.0.0:5443", "/etc/airlock/pki/registry.crt", "/etc/airlock/pki/registry.key")
    assert documented and set(documented) <= set(written.splitlines()), set(documented) - set(written.splitlines())
