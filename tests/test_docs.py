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


# ---- runbooks run as written -----------------------------------------------------------------------------------------
# Where each doc's blocks run: here, and elsewhere (README's node quick start: tests/test_pyz.py; docs/upgrades.md:
# tests/test_upgrade.py; docs/sneakernet.md's reviewer blocks: tests/test_parts.py).


def blocks(doc: Path, after: str = "") -> list[list[str]]:
    """The ```sh blocks of a doc (after a heading, when given), each as its command lines: continuations joined,
    comment lines and trailing `  # comments` dropped."""
    text = doc.read_text()
    if after:
        text = text.split(after, 1)[1]
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = [line.split("  #")[0].rstrip() for line in block.replace("\\\n", " ").splitlines()]
        found.append([line.strip() for line in lines if line.strip() and not line.strip().startswith("#")])
    return found


class Shell:
    """Runs documented lines as written with bash in a scratch directory, `airlock` (this checkout) and `airlock-node`
    (the pyz under `python3 -I`, as the launcher runs it) on PATH. `extra` appends flags to a command (`airlock build`:
    the local upstream; `airlock-node init`: a scratch --root), `substitute` swaps a URL for its local stand-in."""

    def __init__(self, cwd: Path, extra: dict[str, list[str]] | None = None, substitute: dict[str, str] | None = None, env: dict | None = None):
        import os
        import sys

        from tests.conftest import NODE_PYTHON, NODE_PYZ

        self.cwd, self.extra, self.substitute = cwd, extra or {}, substitute or {}
        cwd.mkdir(parents=True, exist_ok=True)
        bin_dir = cwd / ".bin"
        bin_dir.mkdir(exist_ok=True)
        launcher = bin_dir / "airlock-node"
        launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(NODE_PYTHON)} -I {shlex.quote(str(NODE_PYZ))} "$@"\n')
        launcher.chmod(0o755)
        self.env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(self, line: str) -> str:
        import subprocess

        for old, new in self.substitute.items():
            line = line.replace(old, new)
        words = shlex.split(line)
        key = " ".join(words[:2])
        if key in self.extra:
            line = f"{line} {shlex.join(map(str, self.extra[key]))}"
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr


def upstream_flags(upstream) -> list[str]:
    """What points a documented build at the local upstream instead of dl.k8s.io, GitHub and the registries."""
    return ["--release-url", upstream.release_url, "--github-url", upstream.github_url, *upstream.mirror_flags()]


def test_readme_connected_host_quick_start_runs_as_written(upstream, tmp_path):
    """Every line but the checkout's `make` targets (the test session built the venv and the pyz); GitHub is the local
    upstream's, and builds gain the flags that point them at it."""
    lines = blocks(ROOT / "README.md", "## Quick start on the connected host")[0]
    shell = Shell(tmp_path, extra={"airlock build": [*upstream_flags(upstream), "--cache-dir", tmp_path / "cache"]},
                  substitute={"https://github.com": upstream.github_url})
    outputs = [shell.run(line) for line in lines if not line.startswith("make ")]
    assert "fingerprint sha256:" in outputs[0]
    assert (tmp_path / "k8s-1.36.tar").is_file() and "OK k8s-1.36.tar" in outputs[-1]
    # The openssl-only check below the quick start, on that bundle.
    (check,) = [block for block in blocks(ROOT / "README.md", "Checking a bundle with nothing but openssl") if block][:1]
    assert "Signature Verified Successfully" in "".join(shell.run(line) for line in check)


def test_build_yaml_example_builds_as_written(upstream, keys, tmp_path):
    text = (ROOT / "docs" / "build.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (tmp_path / "build.yaml").write_text(example)
    shutil_copy_keys(keys["ed25519"], tmp_path / "keys")
    shell = Shell(tmp_path, extra={"airlock build": [*upstream.build_flags(), "--cache-dir", tmp_path / "cache"]})
    for line in blocks(ROOT / "docs" / "build.md", "## build.yaml")[0]:
        shell.run(line)
    import json
    import tarfile

    for name, serial in (("k8s.tar", None), ("k8s-42.tar", 42)):
        with tarfile.open(tmp_path / name) as archive:
            manifest = json.loads(archive.extractfile("bundle.json").read())
        assert manifest["name"] == "plant-7" and manifest["platforms"] == ["linux/amd64", "linux/arm64"]
        assert "docker.io/library/busybox:1.36" in {image["reference"] for image in manifest["images"]}
        assert serial is None or manifest["serial"] == serial
    assert (tmp_path / "SHA256SUMS").exists(), "sidecars: true"


def shutil_copy_keys(source: Path, target: Path) -> None:
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for name in ("airlock.key", "airlock.pub"):
        shutil.copy(source / name, target / name)


def test_key_rotation_runbook_runs_as_written(upstream, node_bundle, keys, tmp_path):
    """docs/keys.md: a node that trusts the old key; the build host's block, then the node's, as written."""
    from tests.test_install import IGNORE, install, node_config
    from tests.upstream import free_port

    root = tmp_path / "node-root"
    config = node_config(tmp_path, free_port())
    assert install("init", node_bundle, keys, root, config, None, tmp_path / "log", "--skip-phases", "images,kubeadm-init,cni").returncode == 0
    build_host, node = blocks(ROOT / "docs" / "keys.md", "## Rotating the signing key")[:2]
    built = Shell(tmp_path / "build-host", extra={"airlock build": [*upstream.build_flags(), "--cache-dir", tmp_path / "cache", "--serial", "9999999999"]})
    printed = built.run(build_host[0])
    fingerprint = re.search(r"fingerprint (sha256:[0-9a-f]{64})", printed).group(1)
    built.run(build_host[1])
    here = tmp_path / "node"
    here.mkdir()
    import shutil

    shutil.copy(tmp_path / "build-host" / "k8s.tar", here / "k8s.tar")
    shutil.copy(tmp_path / "build-host" / "keys-2027" / "airlock.pub", here / "airlock-2027.pub")
    shutil.copy(keys["ed25519"] / "airlock.pub", here / "airlock.pub")
    on_node = Shell(here, extra={
        "airlock-node trust": ["--root", root],
        "airlock-node upgrade": ["--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade"],
    })
    outputs = [on_node.run(line) for line in node]
    assert f"now trusting {fingerprint}" in outputs[0] and "no longer trusting" in outputs[2]
    listed = on_node.run("airlock-node trust list").split()
    assert listed[0] == fingerprint and len(listed) == 3
    refused = Shell(here).env
    import subprocess

    old = subprocess.run(["airlock-node", "verify", str(node_bundle), "--root", str(root)], env=refused, capture_output=True, text=True)
    assert old.returncode == 1 and "not trusted here" in old.stderr


def test_openssl_111_route_checks_an_ecdsa_bundle_as_written(upstream, keys, tmp_path):
    """docs/keys.md's RHEL/Rocky 8 block: only what OpenSSL 1.1.1 has (no pkeyutl -rawin), on an ECDSA-signed bundle."""
    from tests.conftest import build, require

    require("openssl", "tar", "sha256sum")
    (lines,) = blocks(ROOT / "docs" / "keys.md", "## RHEL and Rocky 8 (OpenSSL 1.1.1)")[:1]
    assert not any("-rawin" in line for line in lines), "OpenSSL 1.1.1 has no pkeyutl -rawin"
    build(upstream, keys, tmp_path / "built" / "k8s.tar", "v1.36.4", tmp_path / "cache", algorithm="ecdsa-p256", check=True)
    node = tmp_path / "node"
    node.mkdir()
    import shutil

    for name in ("k8s.tar", "airlock-node.pyz"):
        shutil.copy(tmp_path / "built" / name, node / name)
    shutil.copy(keys["ecdsa-p256"] / "airlock.pub", node / "airlock.pub")
    shell = Shell(node)
    outputs = [shell.run(line) for line in lines]
    assert "Verified OK" in outputs[1] and "airlock-node.pyz: OK" in outputs[2]


def test_fingerprint_by_phone_runs_as_written(keys, tmp_path):
    import shutil

    (lines,) = blocks(ROOT / "docs" / "troubleshooting.md", "## Is this the key I trust?")[:1]
    shutil.copy(keys["ecdsa-p256"] / "airlock.pub", tmp_path / "airlock.pub")
    from bundle.trust import load_trusted_keys

    printed = Shell(tmp_path).run(lines[0])
    assert "sha256:" + printed.split()[0] == load_trusted_keys([keys["ecdsa-p256"] / "airlock.pub"])[0].key_id


def test_day_two_on_a_node_runs_as_written(node_bundle, keys, tmp_path):
    """docs/node.md's day-two block on an installed control plane (a scratch --root; admin.conf where kubeadm writes it)."""
    from tests.test_install import install, node_config
    from tests.test_node_day2 import write_admin_conf
    from tests.upstream import free_port

    root = tmp_path / "root"
    assert install("init", node_bundle, keys, root, node_config(tmp_path, free_port()), None, tmp_path / "log", "--skip-phases", "images,cni").returncode == 0
    pin = write_admin_conf(root, "https://10.0.0.10:6443")
    (lines,) = blocks(ROOT / "docs" / "node.md", "## Day two on a node")[:1]
    shell = Shell(tmp_path / "here", extra={"airlock-node status": ["--root", root], "airlock-node token": ["--root", root]})
    outputs = [shell.run(line) for line in lines]
    assert "role         first-control-plane" in outputs[0]
    import json

    assert json.JSONDecoder().raw_decode(outputs[1])[0]["control_plane"] is True
    assert f"caCertHashes:\n- {pin}" in outputs[2] and "certificateKey: " not in outputs[2]
    assert "certificateKey: " in outputs[3]
