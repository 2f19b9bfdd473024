"""Every command reads right: help, version, usage errors, plain messages, and a fast start."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from airlock.cli import compose
from tests.conftest import AIRLOCK, airlock, require

NODE = str(Path(sys.executable).with_name("airlock-node"))
HEAVY = ("oras", "requests", "jsonschema", "tqdm", "rich")


def commands(group, path=()):
    """(argv path, click command) for every command and subcommand of the composed program."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


def flat(text: str) -> str:
    return " ".join(text.split())


def option_help(help_text: str, option) -> str:
    """The part of a command's help that describes one option (up to the next option line)."""
    lines = help_text.split("\nOptions:\n", 1)[1].splitlines()
    names = sorted(option.opts, key=len, reverse=True)
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+(-\w, )?{re.escape(names[0])}\b", line))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s+-", lines[i])), len(lines))
    return flat(" ".join(lines[start:end]))


def shown_default(option) -> str | None:
    """What the help must show as the option's default, or None when it has none."""
    if option.show_default is False or option.required:
        return None
    if isinstance(option.show_default, str):
        return f"[default: ({option.show_default})]"
    default = option.default
    if default in (None, "", []) or (option.is_flag and default is False):
        return None
    if option.is_flag and option.secondary_opts:
        return "[default: " + (option.opts[0] if default else option.secondary_opts[0]).lstrip("-") + "]"
    return f"[default: {default}]"


def test_every_command_and_subcommand_has_help_that_shows_each_default():
    app = compose()
    program = typer.main.get_command(app)
    runner = CliRunner()
    walked = 0
    for path, command in commands(program):
        result = runner.invoke(app, [*path, "--help"], prog_name="airlock", terminal_width=100)
        assert result.exit_code == 0, f"airlock {' '.join(path)} --help: {result.output}{result.exception!r}"
        walked += 1
        for param in command.params:
            if param.param_type_name != "option" or param.hidden or "--help" in param.opts:
                continue
            part = option_help(result.output, param)
            expected = shown_default(param)
            if expected:
                assert flat(expected) in part, f"airlock {' '.join(path)} --help: {param.opts[0]} does not show {expected}: {part}"
            assert "[]" not in part and " ." not in part, f"airlock {' '.join(path)} {param.opts[0]}: {part}"
    assert walked >= 18  # the program, its commands, and the store and registry groups with theirs


def test_build_help_shows_the_defaults_a_build_really_uses():
    from builder.options import FLAGS, BuildOptions

    app = compose()
    build = typer.main.get_command(app).commands["build"]
    text = CliRunner().invoke(app, ["build", "--help"], terminal_width=100).output
    fields = {field.name: field for field in dataclasses.fields(BuildOptions)}
    checked = 0
    for name, flag in FLAGS.items():
        field = fields[name]
        value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if value in (None, dataclasses.MISSING, [], (), {}):
            continue
        option = next(p for p in build.params if flag.name in p.opts)
        shown = ",".join(value) if isinstance(value, tuple) else str(value)
        assert f"[default: ({shown})]" in option_help(text, option), flag.name
        checked += 1
    assert checked >= 10


# One value per build option, as build.yaml gives it; the same values as flags must make the same BuildOptions.
EVERY_BUILD_OPTION = {
    "output": "out.tar",
    "kubernetes-version": "v1.36.4",
    "sign-key": "k.key",
    "arch": "arm64,amd64",
    "cni": "none",
    "image": ["docker.io/library/busybox:1.36", "quay.io/x/y:1"],
    "images-file": "images.txt",
    "release-url": "http://127.0.0.1:1",
    "github-url": "http://127.0.0.1:2",
    "registry-mirror": ["registry.k8s.io=http://127.0.0.1:5001", "quay.io=http://127.0.0.1:5002"],
    "cache-dir": "cache",
    "concurrency": 3,
    "cni-version": "v1.9.0",
    "crictl-version": "v1.36.0",
    "containerd-version": "2.2",
    "runc-version": "v1.3.0",
    "flannel-version": "v0.25.6",
    "flannel-sha256": "a" * 64,
    "name": "lab",
    "serial": 7,
    "expires-days": 30,
    "base": "old.tar",
    "node-pyz": "n.pyz",
    "split": "4G",
    "sidecars": True,
    "image-list-from-table": True,
    "manifest": ["extra.yaml", "more.yaml"],
    "osv-url": "none",
    "fail-on": "HIGH",
    "no-scan": True,
    "require": "pinned",
    "trusted-root": "root.json",
    "allow-unsupported-version": True,
}


def built_options(monkeypatch, *args) -> object:
    """The BuildOptions `airlock build ARGS` hands to the build (a test double stands in for the build itself)."""
    import builder.build
    from builder.errors import BuildError

    seen = []

    def build_double(options, progress):
        seen.append(options)
        raise BuildError("stopped by the test before anything is fetched")

    monkeypatch.setattr(builder.build, "build", build_double)
    result = CliRunner().invoke(compose(), ["build", *map(str, args)])
    assert result.exit_code == 1 and "stopped by the test" in result.output, result.output
    return seen[0]


def test_build_options_are_listed_once_and_read_by_flags_config_and_build(monkeypatch, tmp_path):
    """BuildOptions (builder/options.py) is the one list: each field is a flag and a build.yaml key, and the build reads it."""
    import ast

    import yaml

    from builder.options import CONFIG_KEYS, FLAGS, BuildOptions

    fields = [field.name for field in dataclasses.fields(BuildOptions)]
    assert list(FLAGS) == fields and sorted(CONFIG_KEYS.values()) == sorted(fields)
    params = [p for p in typer.main.get_command(compose()).commands["build"].params if p.name not in ("config", "help")]
    assert [p.name for p in params] == fields and [p.opts[0] for p in params] == [FLAGS[name].name for name in fields]
    assert set(EVERY_BUILD_OPTION) == set(CONFIG_KEYS), "give the new option a value in EVERY_BUILD_OPTION"

    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump(EVERY_BUILD_OPTION))
    from_config = built_options(monkeypatch, "--config", config)
    flags = []
    for key, value in EVERY_BUILD_OPTION.items():
        if value is True:
            flags.append(f"--{key}")
        else:
            for item in value if isinstance(value, list) else [value]:
                flags += [f"--{key}", item]
    from_flags = built_options(monkeypatch, *flags)
    assert from_config == from_flags
    defaults = BuildOptions(output=Path("x"), kubernetes_version=from_flags.kubernetes_version, sign_key=Path("k"))
    assert [name for name in fields if name != "kubernetes_version" and getattr(from_flags, name) == getattr(defaults, name)] == []
    assert from_flags.arches == ("arm64", "amd64") and from_flags.registry_mirrors["quay.io"] == "http://127.0.0.1:5002"
    assert from_flags.osv_url is None and from_flags.fail_on == "high" and from_flags.split == 4 << 30

    # An option nothing reads is a flag that does nothing: the build reads every field.
    tree = ast.parse((Path(__file__).resolve().parents[1] / "builder" / "build.py").read_text())
    read = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (
            (isinstance(node.value, ast.Name) and node.value.id == "options")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "options")
        )
    }
    assert set(fields) - read == set(), "options the build never reads"


def test_help_and_version_as_programs():
    for program in (AIRLOCK, NODE):
        result = subprocess.run([program, "--version"], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.strip() == f"{Path(program).name} {metadata.version('airlock')}"
    for argv in ([AIRLOCK, "--help"], [AIRLOCK, "push", "--help"], [AIRLOCK, "registry", "serve", "--help"], [NODE, "--help"]):
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0 and "Traceback" not in result.stderr, argv
    assert "HOST[:PORT][/PREFIX]" in subprocess.run([AIRLOCK, "push", "--help"], capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    "args, listed",
    [
        (["build", "-o", "x.tar", "--sign-key", "k", "--kubernetes-version", "banana"], "stable-1.36"),
        (["build", "-o", "x.tar", "--sign-key", "k", "--kubernetes-version", "1.36.4", "--arch", "s390x"], "amd64, arm64"),
        (["build", "-o", "x.tar", "--sign-key", "k", "--kubernetes-version", "1.36.4", "--arch", "amd64,s390x"], "amd64, arm64"),
        (["build", "-o", "x.tar", "--sign-key", "k", "--kubernetes-version", "1.36.4", "--cni", "calico"], "flannel, none"),
        (["init", "b.tar", "--key", "k.pub", "--ignore-preflight-errors", "swap,no-such-check"], "module-br_netfilter"),
        (["join", "b.tar", "--key", "k.pub", "--skip-phases", "kubeadm-init"], "kubeadm-join"),
        (["upgrade", "b.tar", "--key", "k.pub", "--skip-phases", "nonsense"], "verify"),
        (["diff", "a.json", "b.json", "--output", "yaml"], "text or json"),
    ],
)
def test_usage_errors_exit_2_listing_the_valid_values(args, listed, tmp_path):
    result = airlock(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("airlock: error: ") and listed in result.stderr and result.stderr.count("\n") == 1


def test_known_check_names_are_not_usage_errors(tmp_path):
    # Past the usage checks, the missing bundle is an ordinary failure (exit 1).
    result = airlock("init", tmp_path / "none.tar", "--key", tmp_path, "--ignore-preflight-errors", "swap,port-6443,All", "--skip-phases", "cni")
    assert result.returncode == 1, result.stderr


def test_inspect_and_verify_name_a_file_that_is_not_a_bundle(keys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("NAME=Debian\n" * 20)
    tar = tmp_path / "other.tar"
    subprocess.run(["tar", "-cf", tar, "-C", tmp_path, "notes.txt"], check=True)
    for path, detail in ((text, "does not start with a tar header"), (tar, "its first member is notes.txt")):
        for command in (["inspect", path], ["verify", path, "--key", keys["ed25519"] / "airlock.pub"]):
            result = airlock(*command)
            assert result.returncode == 1 and "not an airlock bundle" in result.stderr and detail in result.stderr, result.stderr
            assert "truncated" not in result.stderr


def test_an_unresolvable_name_fails_at_once_pointing_at_the_mirror_flags(keys, tmp_path):
    result = airlock(
        "build", "-o", tmp_path / "k.tar", "--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key",
        "--cache-dir", tmp_path / "cache", "--release-url", "http://dl.airlock-offline.invalid", "--cni", "none",
    )
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "dl.airlock-offline.invalid does not resolve" in message
    assert all(flag in message for flag in ("--release-url", "--github-url", "--registry-mirror"))
    assert "retrying" not in result.stderr  # a name that does not resolve is not retried (five retries would take 15 s and more)


def test_an_unreachable_port_is_still_retried(tmp_path):
    from builder.errors import FetchError
    from builder.progress import Progress
    from builder.transfer import Http, RetryPolicy
    from tests.upstream import free_port

    http = Http(Progress(interactive=False), RetryPolicy(attempts=3, base_delay=0.01))
    with pytest.raises(FetchError, match="gave up after 3 attempts"):
        http.get_bytes(f"http://127.0.0.1:{free_port()}/nothing")


def manifest_json(tmp_path: Path, name: str, platforms: list[str], images: dict[str, str], files: dict[str, str]) -> Path:
    document = {
        "schema": "airlock.bundle/v1", "name": "airlock", "serial": 1, "created": "2026-01-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z",
        "kubernetes": {"requested": "v1.36.4", "version": "v1.36.4"}, "platforms": platforms, "components": {},
        "files": [{"path": p, "sha256": h * 64, "size": 10, "mode": 0o644, "source": None, "upstream_sha256": None} for p, h in files.items()],
        "images": [{"reference": r, "digest": "sha256:" + d * 64, "media_type": "application/vnd.oci.image.index.v1+json",
                    "platforms": platforms, "size": 1, "blobs": []} for r, d in images.items()],
        "signer": {}, "base": None,
    }
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_diff_reports_files_added_and_removed_and_image_digests(tmp_path):
    old = manifest_json(
        tmp_path, "old.json", ["linux/amd64"], {"registry.k8s.io/pause:3.10": "a", "registry.k8s.io/etcd:3.5.15-0": "b"},
        {"bin/linux-amd64/kubeadm": "1", "manifests/flannel.yaml": "2"},
    )
    new = manifest_json(
        tmp_path, "new.json", ["linux/amd64", "linux/arm64"], {"registry.k8s.io/pause:3.10": "c", "docker.io/library/busybox:1.36": "d"},
        {"bin/linux-amd64/kubeadm": "1", "bin/linux-arm64/kubeadm": "3", "manifests/flannel.yaml": "4"},
    )
    document = json.loads(airlock("diff", old, new, "--output", "json", check=True).stdout)
    assert document["files_added"] == ["bin/linux-arm64/kubeadm"]
    assert document["files_removed"] == []
    assert document["files_changed"] == ["manifests/flannel.yaml"]
    assert document["images_changed"] == [
        {"old": "registry.k8s.io/pause:3.10", "new": "registry.k8s.io/pause:3.10", "old_digest": "sha256:" + "a" * 64, "new_digest": "sha256:" + "c" * 64}
    ]
    assert document["images_added"] == [{"reference": "docker.io/library/busybox:1.36", "digest": "sha256:" + "d" * 64}]
    assert document["images_removed"] == [{"reference": "registry.k8s.io/etcd:3.5.15-0", "digest": "sha256:" + "b" * 64}]
    back = json.loads(airlock("diff", new, old, "--output", "json", check=True).stdout)
    assert back["files_removed"] == ["bin/linux-arm64/kubeadm"] and back["files_added"] == []
    text = airlock("diff", old, new, check=True).stdout
    assert "platforms   linux/amd64 -> linux/amd64,linux/arm64" in text
    assert "+ bin/linux-arm64/kubeadm" in text and "~ bin/linux-arm64/kubeadm" not in text
    assert f"~ registry.k8s.io/pause:3.10  sha256:{'a' * 12} -> sha256:{'c' * 12}" in text


def loaded_modules(*argv: str) -> set[str]:
    """Top-level packages a run of `airlock ARGV` imports (in a fresh interpreter)."""
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})) + '\\n'))\n"
        f"sys.argv = ['airlock', *{list(argv)!r}]\n"
        "from airlock.cli import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_verify_start_without_the_network_stack(bundle, keys):
    import_only = subprocess.run(
        [sys.executable, "-c", "import sys, airlock.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert not set(HEAVY) & set(import_only)
    assert not set(HEAVY) & loaded_modules("--help")
    verify = loaded_modules("verify", str(bundle), "--key", str(keys["ed25519"] / "airlock.pub"))
    assert "cryptography" in verify  # it did verify
    assert not set(HEAVY) & verify
    # The build does need them: the check above can tell.
    assert {"requests"} <= loaded_modules("build", "--kubernetes-version", "1.36.4", "-o", "/nonexistent/x.tar", "--sign-key", "/nonexistent/k")


def test_key_fingerprint_from_openssl_matches_what_keygen_inspect_and_verify_show(bundle, keys, tmp_path):
    require("openssl", "sha256sum")
    for algorithm in ("ed25519", "ecdsa-p256"):
        made = airlock("keygen", "--out", tmp_path / algorithm, "--algorithm", algorithm, check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-in", tmp_path / algorithm / "airlock.pub", "-outform", "DER"], capture_output=True, check=True).stdout
        printed = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
        assert f"fingerprint sha256:{printed} " in made, made
        pub = keys[algorithm] / "airlock.pub"
        der = subprocess.run(["openssl", "pkey", "-pubin", "-in", pub, "-outform", "DER"], capture_output=True, check=True).stdout
        fingerprint = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
        from bundle.trust import load_trusted_keys

        assert load_trusted_keys([pub])[0].key_id == f"sha256:{fingerprint}"
        if algorithm == "ed25519":
            assert f"sha256:{fingerprint}" in airlock("inspect", bundle, check=True).stdout
            assert f"signed by sha256:{fingerprint}" in airlock("verify", bundle, "--key", pub, check=True).stdout
