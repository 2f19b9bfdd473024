"""The docs an operator follows on the first day are true: every command line in README and docs/ is one the
program it names accepts, names the node command as it exists on a node, links only inside the repository,
and every command's --help shows an example that runs. Every ```sh block runs in the test `RUNBOOK_TESTS`
names for it (most of them here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
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


def options(program: str):
    """(command path, option) for every option of every command of `program` (airlock or airlock-node)."""
    app = compose() if program == "airlock" else node_app
    for path, command in commands(typer.main.get_command(app)):
        for option in command.params:
            yield path, option


def test_dash_o_means_the_file_to_write_in_every_command():
    """`-o` is the one file a command writes (build's bundle, join-parts' bundle), in both programs; a format is
    `--output text|json`, never `-o`."""
    short = []
    for program in ("airlock", "airlock-node"):
        for path, option in options(program):
            if "-o" in option.opts:
                short.append(path)
                assert option.opts == ["--output", "-o"] and isinstance(option.type, click.Path), (program, path, option.opts, option.type)
                assert "write" in (option.help or ""), (program, path, option.help)
            elif "--output" in option.opts:
                assert option.help == "text or json.", (program, path, option.help)
    assert ("build",) in short


@pytest.mark.parametrize("program", ["airlock", "airlock-node"])
def test_root_help_says_what_each_command_does_there(program):
    """Only init, join and upgrade write a node under --root; every other command's --root names the node installed
    there (`store check --root DIR` checks the store of the node installed under DIR)."""
    seen = set()
    for path, option in options(program):
        if "--root" not in option.opts:
            continue
        seen.add(path)
        writes = (option.help or "").startswith("Write everything under this directory")
        assert writes == (path in (("init",), ("join",), ("upgrade",))), (path, option.help)
    assert {("store", "check"), ("reset",), ("status",)} <= seen


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


def test_help_names_the_node_command_as_it_exists_on_a_node():
    """Every --help text of both programs (commands, options, examples): a node command is `airlock-node …`."""
    wrong = re.compile(r"(?<![\w/-])airlock (?:" + "|".join(NODE_ONLY) + r")(?![\w-])")
    for program in ("airlock", "airlock-node"):
        app = compose() if program == "airlock" else node_app
        for path, command in commands(typer.main.get_command(app)):
            texts = [command.help or "", *((option.help or "") for option in command.params)]
            for text in texts:
                assert not wrong.search(text), f"{program} {' '.join(path)} --help: {wrong.search(text).group(0)!r} in {text!r}"
            if path[0] in NODE_ONLY:
                for line in (command.help or "").splitlines():
                    if line.strip().startswith("Example: "):
                        assert line.strip()[len("Example: "):].startswith(("airlock-node ", "python3 airlock-node.pyz ")), (program, path, line)


def test_the_registry_unit_in_the_docs_is_the_one_the_registry_phase_writes():
    from installer.node import NODE_PYZ_PATH
    from installer.phases.registry import registry_unit

    text = (ROOT / "docs" / "existing-registry.md").read_text()
    documented = re.search(r"```ini\n(.*?)```", text, re.S).group(1).splitlines()
    written = registry_unit(["/usr/bin/python3", "-I", NODE_PYZ_PATH], "0.0.0.0:5443", "/etc/airlock/pki/registry.crt", "/etc/airlock/pki/registry.key")
    assert documented and set(documented) <= set(written.splitlines()), set(documented) - set(written.splitlines())


def test_the_hosts_toml_in_the_docs_is_the_one_push_prints():
    from builder.push import Target, hosts_toml

    text = (ROOT / "docs" / "existing-registry.md").read_text()
    documented = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    assert documented == hosts_toml("registry.k8s.io", Target.parse("harbor.corp.example/k8s", insecure=False))


# ---- runbooks run as written -----------------------------------------------------------------------------------------
# Every ```sh block of README and docs/, by the heading it stands under, and the test that runs it. "as written": the
# lines themselves run, a test adding only what a scratch node or the local upstream needs (--root, mirror flags).
# "story": the same commands with a site's names (harbor.corp.example, cp1's address, PORT) swapped for local ones.
RUNBOOK_TESTS = {
    ("README.md", "## Two commands on a fresh Debian machine"): "not run: `make demo` and `make test` are the Makefile's targets (make test runs this suite)",
    ("README.md", "## Quick start on the connected host"): "as written: tests/test_docs.py::test_readme_connected_host_quick_start_runs_as_written",
    ("README.md", "### Trying `build` offline: the local upstream"): "story: tests/test_local_upstream.py::test_local_upstream_serves_a_build_then_stops_with_its_registry_on_sigterm"
                                                                    " (its PORTs), as written: tests/test_docs.py::test_readme_connected_host_quick_start_runs_as_written (the openssl check)",
    ("README.md", "## Quick start on the disconnected node"): "as written: tests/test_pyz.py::test_readme_node_quick_start_runs_as_written, "
                                                            "tests/test_pyz.py::test_readme_split_bundle_check_runs_as_written, tests/test_docs.py::test_readme_day_two_runs_as_written",
    ("build.md", "# Building a bundle"): "as written: tests/test_docs.py::test_build_md_first_block_runs_as_written",
    ("build.md", "## build.yaml"): "as written: tests/test_docs.py::test_build_yaml_example_builds_as_written",
    ("existing-registry.md", "## Push"): "story: tests/test_from_registry.py::test_push_makes_one_artifact_that_oras_and_skopeo_read",
    ("existing-registry.md", "## The rest of the bundle, as one OCI artifact"): "story: tests/test_from_registry.py::test_push_makes_one_artifact_that_oras_and_skopeo_read",
    ("existing-registry.md", "## The node's own registry"): "story: tests/test_from_registry.py::test_second_node_joins_from_the_first_nodes_registry_over_tls_with_no_bundle_file",
    ("keys.md", "## The key pair"): "as written: tests/test_docs.py::test_keygen_block_runs_as_written",
    ("keys.md", "## What a node trusts"): "as written: tests/test_docs.py::test_trust_commands_run_as_written",
    ("keys.md", "## Rotating the signing key"): "as written: tests/test_docs.py::test_key_rotation_runbook_runs_as_written",
    ("keys.md", "## RHEL and Rocky 8 (OpenSSL 1.1.1)"): "as written: tests/test_docs.py::test_openssl_111_route_checks_an_ecdsa_bundle_as_written",
    ("fleet.md", "## Install the collection (on the Ansible controller)"): "as written: tests/test_fleet.py::test_docs_fleet_commands_run_as_written",
    ("fleet.md", "## Bring the cluster up, and upgrade it"): "story: tests/test_fleet.py::test_the_playbook_brings_up_the_fleet_in_order_in_batches_and_a_rerun_changes_nothing"
                                                         " (its inventory of network namespaces); tests/test_fleet.py::test_docs_fleet_commands_run_as_written (--syntax-check of both lines)",
    ("multi-node.md", "## Three control planes behind a virtual IP (kube-vip)"): "story: tests/test_ha.py::test_three_control_planes_share_the_virtual_ip"
                                                                                " (a bundle built with the kube-vip image, cp1's init, two control-plane joins and a worker with the documented node.yaml)",
    ("multi-node.md", "## First control plane"): "as written: tests/test_docs.py::test_multi_node_runbook_runs_as_written",
    ("multi-node.md", "## Workers and extra control planes"): "as written: tests/test_docs.py::test_multi_node_runbook_runs_as_written",
    ("multi-node.md", "## Where each node gets its images"): "story: tests/test_from_registry.py::test_second_node_joins_from_the_first_nodes_registry_over_tls_with_no_bundle_file",
    ("multi-node.md", "## Nodes that install straight from a registry (`--from`)"):
        "story: tests/test_from_registry.py::test_second_node_joins_from_the_first_nodes_registry_over_tls_with_no_bundle_file, "
        "tests/test_from_registry.py::test_a_node_joins_from_a_distribution_registry_after_push",
    ("node.md", "## Day two on a node"): "as written: tests/test_docs.py::test_day_two_on_a_node_runs_as_written",
    ("provenance.md", "### With sigstore-python"): "as written: tests/test_provenance_offline.py::test_the_reviewers_sigstore_python_procedure_verifies_every_signature_as_written_and_fails_on_a_bad_one",
    ("review.md", "# Signing off a bundle: what is inside, known vulnerabilities, API versions, the report"): "as written: tests/test_report.py::test_the_review_commands_in_the_docs_run_as_written",
    ("provenance.md", "### Re-verified offline on the node"): "story: tests/test_provenance_offline.py::test_verify_provenance_re_verifies_every_carried_signature_offline",
    ("provenance.md", "## A reviewer's procedure with standard tools"):
        "as written: tests/test_provenance_offline.py::test_the_reviewers_openssl_procedure_runs_as_written_and_fails_on_a_bad_signature",
    ("sneakernet.md", "## Sidecars for a reviewer or a cross-domain guard"): "as written: tests/test_parts.py::test_the_reviewers_commands_in_the_docs_run_as_written",
    ("sneakernet.md", "## On the disconnected side"): "as written: tests/test_parts.py::test_the_documented_pyz_checks_pass_on_the_signed_pyz_and_fail_on_another",
    ("troubleshooting.md", "## Is this the key I trust? (compare a fingerprint by phone)"): "as written: tests/test_docs.py::test_fingerprint_by_phone_runs_as_written",
    ("troubleshooting.md", "## Resume"): "as written: tests/test_docs.py::test_troubleshooting_resume_and_start_over_run_as_written",
    ("troubleshooting.md", "## A failed `kubeadm-init`"): "as written: tests/test_docs.py::test_troubleshooting_resume_and_start_over_run_as_written",
    ("upgrades.md", "## Build an upgrade bundle"): "as written: tests/test_upgrade.py::test_the_upgrades_runbook_runs_as_written",
    ("upgrades.md", "## Upgrade a node"): "as written: tests/test_upgrade.py::test_upgrade_a_node_and_afterwards_run_as_written",
    ("upgrades.md", "## Afterwards"): "as written: tests/test_upgrade.py::test_upgrade_a_node_and_afterwards_run_as_written",
}


def sh_block_headings(doc: Path) -> list[str]:
    """The heading each ```sh block of `doc` stands under (`#` lines inside code blocks are comments, not headings)."""
    found, heading, fence = [], "", None
    for line in doc.read_text().splitlines():
        if line.strip().startswith("```"):
            if fence is None:
                fence = line.strip()[3:]
                if fence == "sh":
                    found.append(heading)
            else:
                fence = None
        elif fence is None and re.match(r"#+ ", line):
            heading = line
    return found


def test_every_sh_block_is_run_by_the_test_runbook_tests_names():
    for doc in DOCS:
        for heading in sh_block_headings(doc):
            assert (doc.name, heading) in RUNBOOK_TESTS, f"{doc.name}: no test runs the ```sh block under {heading!r}; add one to RUNBOOK_TESTS"
    for (name, heading), how in RUNBOOK_TESTS.items():
        doc = ROOT / name if name == "README.md" else ROOT / "docs" / name
        assert heading in sh_block_headings(doc), f"RUNBOOK_TESTS names {name}: {heading!r}, which holds no ```sh block"
        assert how.startswith(("as written: ", "story: ", "not run: ")), how
        for path, function in re.findall(r"(tests/\w+\.py)::(\w+)", how):
            assert re.search(rf"^def {function}\(", (ROOT / path).read_text(), re.M), f"{path}::{function} does not exist"
            assert name.removesuffix(".md") in (ROOT / path).read_text(), f"{path} never names {name}"
        assert how.startswith("not run: ") or re.search(r"tests/\w+\.py::\w+", how), how


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
    """Runs documented lines as written with bash in a scratch directory, `airlock` (this checkout), `airlock-node`
    (the pyz under `python3 -I`, as the launcher runs it) and `python3` (the node's system Python) on PATH. `extra`
    appends flags to a command named by its first two or three words (`airlock build`: the local upstream;
    `python3 airlock-node.pyz init`: a scratch --root), `substitute` swaps a URL for its local stand-in."""

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
        python3 = bin_dir / "python3"
        python3.write_text(f'#!/bin/sh\nexec {shlex.quote(NODE_PYTHON)} "$@"\n')
        python3.chmod(0o755)
        self.env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(self, line: str, check: bool = True) -> str:
        """Run one documented line; its stdout and stderr. With `check` (the default) it must exit 0, else it must fail."""
        import subprocess

        for old, new in self.substitute.items():
            line = line.replace(old, new)
        words = shlex.split(line)
        key = next((key for key in (" ".join(words[:3]), " ".join(words[:2])) if key in self.extra), None)
        if key is not None:
            line = f"{line} {shlex.join(map(str, self.extra[key]))}"
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=900)
        assert (result.returncode == 0) == check, f"{line}\n{result.stdout}\n{result.stderr}"
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


def test_multi_node_runbook_runs_as_written(node_bundle, keys, tmp_path):
    """docs/multi-node.md: the first control plane's init, fresh join tokens made on it, then a worker and a second
    control plane joining with the node.yaml those tokens give, each line as written on a node holding the three files
    (scratch roots; kubeadm is the stand-in, admin.conf written where kubeadm writes it)."""
    import json
    import os
    import shutil
    import stat

    import yaml

    from tests.conftest import NODE_PYZ
    from tests.nodenet import host_address
    from tests.test_install import IGNORE
    from tests.test_node_day2 import write_admin_conf
    from tests.upstream import free_port

    doc = ROOT / "docs" / "multi-node.md"
    init_block, token_block = blocks(doc, "## First control plane")[:2]
    (join_block,) = blocks(doc, "## Workers and extra control planes")[:1]
    assert init_block == ["python3 airlock-node.pyz init k8s.tar --key airlock.pub --config cp1.yaml"]
    log = tmp_path / "standin.log"
    env = {"AIRLOCK_STANDIN_LOG": str(log)}

    def node(name: str, config: dict) -> Path:
        """A node's directory holding what the doc says it needs (the bundle, the pyz and the key) and its node.yaml."""
        here = tmp_path / name
        here.mkdir()
        shutil.copy(node_bundle, here / "k8s.tar")
        shutil.copy(NODE_PYZ, here / "airlock-node.pyz")
        shutil.copy(keys["ed25519"] / "airlock.pub", here / "airlock.pub")
        (here / f"{name}.yaml").write_text(yaml.safe_dump(config) if isinstance(config, dict) else config)
        return here

    def own(name: str) -> dict:
        return {"nodeName": name, "advertiseAddress": host_address(), "registry": {"listen": f"127.0.0.1:{free_port()}"}}

    cp1_root = tmp_path / "cp1-root"
    cp1 = Shell(node("cp1", own("cp1")), env=env, extra={
        "python3 airlock-node.pyz init": ["--root", cp1_root, "--ignore-preflight-errors", IGNORE, "--skip-phases", "images,cni"],
        "airlock-node token": ["--root", cp1_root],
    })
    printed = cp1.run(init_block[0])
    # At the end it prints what the other nodes need, and keeps the token and key (0600) for a rerun.
    secrets = cp1_root / "var/lib/airlock/kubeadm/secrets.json"
    kept = json.loads(secrets.read_text())
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"token: {kept['token']}" in printed and f"certificateKey: {kept['certificate_key']}" in printed
    assert "python3 airlock-node.pyz join k8s.tar --key airlock.pub --config node.yaml" in printed
    pin = write_admin_conf(cp1_root, "https://10.0.0.10:6443")
    worker_fields, cp2_fields = (cp1.run(line) for line in token_block)
    for fields in (worker_fields, cp2_fields):
        assert yaml.safe_load(fields)["caCertHashes"] == [pin] and yaml.safe_load(fields)["controlPlaneEndpoint"] == "10.0.0.10:6443"
    assert "certificateKey" not in yaml.safe_load(worker_fields)
    certificate_key = yaml.safe_load(cp2_fields)["certificateKey"]
    # worker.yaml and cp2.yaml: token create's output with the joining node's own name and registry.
    joined = {}
    for name, fields, line in (("worker", worker_fields, join_block[0]), ("cp2", cp2_fields, join_block[1])):
        root = tmp_path / f"{name}-root"
        shell = Shell(node(name, fields + yaml.safe_dump(own(name + "1" if name == "worker" else name))), env=env, extra={
            "python3 airlock-node.pyz join": ["--root", root, "--ignore-preflight-errors", IGNORE, "--skip-phases", "images"],
        })
        assert f"--config {name}.yaml" in line
        shell.run(line)
        (joined[name],) = yaml.safe_load_all((root / "var/lib/airlock/kubeadm/join.yaml").read_text())
        assert os.access(root / "usr/local/bin/airlock-node", os.X_OK), "the node command later lines use"
    token = yaml.safe_load(worker_fields)["token"]
    assert joined["worker"]["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "10.0.0.10:6443", "token": token, "caCertHashes": [pin]}
    assert "controlPlane" not in joined["worker"]
    assert joined["cp2"]["controlPlane"]["certificateKey"] == certificate_key
    assert joined["cp2"]["discovery"]["bootstrapToken"]["token"] == yaml.safe_load(cp2_fields)["token"]


def test_troubleshooting_resume_and_start_over_run_as_written(node_bundle, keys, tmp_path):
    """docs/troubleshooting.md on a first control plane whose kubeadm init fails: the error names the phase and the
    kubeadm step; "Resume" reruns the same line and skips what is done; "A failed kubeadm-init" starts over with reset
    and an init that needs no --key and does not move the bundle's images into the store again."""
    import json
    import shutil

    from tests.conftest import NODE_PYZ
    from tests.test_install import IGNORE, node_config
    from tests.upstream import free_port

    doc = ROOT / "docs" / "troubleshooting.md"
    (resume,) = blocks(doc, "## Resume")[0]
    reset, again = blocks(doc, "## A failed `kubeadm-init`")[0]
    assert resume.startswith("airlock-node init ") and reset == "airlock-node reset" and again.startswith("python3 airlock-node.pyz init ")
    here, root = tmp_path / "node", tmp_path / "root"
    here.mkdir()
    shutil.copy(node_bundle, here / "k8s-1.36.tar")
    shutil.copy(NODE_PYZ, here / "airlock-node.pyz")
    shutil.copy(keys["ed25519"] / "airlock.pub", here / "airlock.pub")
    shutil.copy(node_config(tmp_path, free_port()), here / "node.yaml")
    install = ["--root", root, "--ignore-preflight-errors", IGNORE, "--skip-phases", "images,cni"]
    extra = {"airlock-node init": install, "python3 airlock-node.pyz init": install, "airlock-node reset": ["--root", root]}
    log = str(tmp_path / "standin.log")
    failing = Shell(here, extra=extra, env={"AIRLOCK_STANDIN_LOG": log, "AIRLOCK_STANDIN_FAIL": "control-plane"})
    working = Shell(here, extra=extra, env={"AIRLOCK_STANDIN_LOG": log})
    first = failing.run("python3 airlock-node.pyz init k8s-1.36.tar --key airlock.pub --config node.yaml", check=False)
    (error,) = [line for line in first.splitlines() if line.startswith("airlock: error:")]
    assert error.startswith("airlock: error: phase kubeadm-init: ") and "init phase control-plane all" in error and "exit 1" in error, error
    # Resume: the same line again; what is done is skipped, the bundle is checked again, kubeadm-init runs again.
    resumed = failing.run(resume, check=False)
    assert "[verify]" in resumed and "[verify] already done" not in resumed
    for phase in ("preflight", "unpack", "binaries", "runtime", "registry", "kubelet"):
        assert f"[{phase}] already done (resuming)" in resumed, phase
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"] is None
    # Start over: reset, then init without --key (the trusted key stayed) and without storing the images again.
    store = root / "var/lib/airlock/store/blobs/sha256"
    blobs = {path.name: path.stat().st_ino for path in store.iterdir()}
    assert blobs
    working.run(reset)
    assert not (root / "usr/local/bin/airlock-node").exists() and (root / "etc/airlock/trusted-keys").is_dir()
    done = working.run(again)
    assert "now trusting" not in done, "the key was kept, not given again"
    assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"] is not None
    assert {path.name: path.stat().st_ino for path in store.iterdir()} == blobs, "the store's blobs were kept, not written again"


def test_build_md_first_block_runs_as_written(upstream, keys, tmp_path):
    """docs/build.md's first line: the newest stable release for both architectures (builds gain the local upstream's flags)."""
    import json
    import tarfile

    (lines,) = blocks(ROOT / "docs" / "build.md")[:1]
    shutil_copy_keys(keys["ed25519"], tmp_path / "keys")
    shell = Shell(tmp_path, extra={"airlock build": [*upstream.build_flags(), "--cache-dir", tmp_path / "cache"]})
    for line in lines:
        shell.run(line)
    with tarfile.open(tmp_path / "k8s.tar") as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
    assert manifest["platforms"] == ["linux/amd64", "linux/arm64"]
    assert manifest["kubernetes"]["version"] == upstream.labels["stable"] and manifest["kubernetes"]["requested"] == "stable"


def test_keygen_block_runs_as_written(tmp_path):
    """docs/keys.md's key pair: the private key 0600, and the fingerprint it prints is the key's (the one inspect shows)."""
    import stat

    from bundle.trust import load_trusted_keys

    (lines,) = blocks(ROOT / "docs" / "keys.md", "## The key pair")[:1]
    printed = "".join(Shell(tmp_path).run(line) for line in lines)
    assert stat.S_IMODE((tmp_path / "keys" / "airlock.key").stat().st_mode) == 0o600
    assert f"fingerprint {load_trusted_keys([tmp_path / 'keys' / 'airlock.pub'])[0].key_id}" in printed


def test_trust_commands_run_as_written(keys, tmp_path):
    """docs/keys.md's "What a node trusts" block on a node that trusts airlock.pub (the example fingerprint prefix
    stands for that key's)."""
    from bundle.trust import load_trusted_keys
    from installer.trusted import kept_keys

    (lines,) = blocks(ROOT / "docs" / "keys.md", "## What a node trusts")[:1]
    import shutil

    root = tmp_path / "root"
    shutil.copy(keys["ed25519"] / "airlock.pub", tmp_path / "airlock.pub")
    shutil.copy(keys["ecdsa-p256"] / "airlock.pub", tmp_path / "airlock-2027.pub")
    old, new = (load_trusted_keys([tmp_path / name])[0].key_id for name in ("airlock.pub", "airlock-2027.pub"))
    example = re.search(r"trust remove (sha256:[0-9a-f]{8})\b", "\n".join(lines)).group(1)
    shell = Shell(tmp_path, extra={"airlock-node trust": ["--root", root]}, substitute={example: old[: len("sha256:") + 8]})
    shell.run("airlock-node trust add airlock.pub")  # what the first install with --key airlock.pub kept
    listed, added, removed = (shell.run(line) for line in lines)
    assert listed.split()[:2] == [old, "ed25519"]
    assert f"now trusting {new}" in added and removed.startswith(f"no longer trusting {old}")
    assert [key.key_id for key in kept_keys(root)] == [new]


def test_readme_day_two_runs_as_written(upstream, node_bundle, keys, tmp_path):
    """README's lines for after the first install: status, an upgrade with no --key (to 1.37.2), a fresh join."""
    import shutil

    from tests.conftest import build
    from tests.test_install import IGNORE, install, node_config
    from tests.test_node_day2 import write_admin_conf
    from tests.upstream import free_port

    (lines,) = [block for block in blocks(ROOT / "README.md", "## Quick start on the disconnected node") if block[0].startswith("airlock-node status")]
    root, config = tmp_path / "root", node_config(tmp_path, free_port())
    assert install("init", node_bundle, keys, root, config, None, tmp_path / "log", "--skip-phases", "images,cni").returncode == 0
    here = tmp_path / "here"
    build(upstream, keys, tmp_path / "built" / "k8s.tar", "v1.37.2", tmp_path / "cache", "--serial", "9999999999", check=True)
    here.mkdir()
    shutil.copy(tmp_path / "built" / "k8s.tar", here / "k8s-1.37.2.tar")
    pin = write_admin_conf(root, "https://10.0.0.10:6443")
    shell = Shell(here, env={"AIRLOCK_STANDIN_LOG": str(tmp_path / "log")}, extra={
        "airlock-node status": ["--root", root],
        "airlock-node upgrade": ["--root", root, "--config", config, "--ignore-preflight-errors", IGNORE, "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade"],
        "airlock-node token": ["--root", root],
    })
    status, upgraded, token = (shell.run(line) for line in lines)
    assert "installed    airlock serial" in status and "registry     " in status and "images       " in status and "signed by    sha256:" in status
    assert "installed airlock serial 9999999999 (kubernetes v1.37.2)" in upgraded
    assert f"caCertHashes:\n- {pin}" in token and "token: " in token


def test_the_contract_in_docs_names_every_command_and_the_supported_range():
    """docs/design.md is the operator's contract inside the repository: every command of both programs is in its
    tables, and it and the README state the Kubernetes minors the builder accepts, and what a node needs besides Python."""
    from builder.versions import SUPPORTED_MINORS

    design = (ROOT / "docs" / "design.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for program, app in (("airlock", compose()), ("airlock-node", node_app)):
        for path, _ in commands(typer.main.get_command(app)):
            name = " ".join(path)
            assert re.search(rf"^\| `(?:airlock )?{re.escape(name)}[ `]|/ `(?:airlock )?{re.escape(name)}[ `]", design, re.M), \
                f"docs/design.md's command tables do not name `{program} {name}`"
    named = [f"1.{minor}" for minor in SUPPORTED_MINORS]
    assert ", ".join(named) in design, named
    assert f"**Supported Kubernetes: {', '.join(named[:-1])} and {named[-1]}**" in readme, named
    prerequisites = readme.split("## Quick start on the disconnected node", 1)[1].split("```", 1)[0]
    for needed in ("kernel's modules package", "iptables", "conntrack", "time kept in sync", "swap off"):
        assert needed in prerequisites, needed
    # Where the pyz's native code goes, and the variable the pyz reads to move it.
    assert 'os.environ.get("AIRLOCK_PYZ_CACHE")' in (ROOT / "installer" / "zipapp_main.py").read_text()
    assert "`AIRLOCK_PYZ_CACHE` picks" in readme and "(`AIRLOCK_PYZ_CACHE` overrides)" in design
