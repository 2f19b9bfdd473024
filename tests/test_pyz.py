"""The node installer as one file: airlock-node.pyz runs under a bare system Python, carries both architectures,
and extracts its native code only into a private, checked cache."""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from builder.zipapp import ROOT, build_pyz, project_version
from installer import zipapp_main
from tests.conftest import NODE_PYTHON, NODE_PYZ, airlock, airlock_node, build, python39, require
from tests.test_install import IGNORE, node_config
from tests.upstream import free_port

WHEELS = ROOT / ".dist-cache" / "wheels"
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
PYTHONS = ("cp39", "cp310", "cp311", "cp312", "cp313")


def index_of(pyz: Path) -> list[dict]:
    with zipfile.ZipFile(pyz) as archive:
        return json.loads(archive.read("_native/index.json"))["files"]


def test_the_pyz_is_reproducible_within_budget_and_carries_both_architectures(tmp_path):
    again = build_pyz(tmp_path / "again.pyz", WHEELS)
    assert again.read_bytes() == NODE_PYZ.read_bytes(), "two builds from the same inputs differ"
    assert NODE_PYZ.stat().st_size <= 25 * 1024 * 1024
    entries = index_of(NODE_PYZ)
    expected = {(arch, "cryptography.hazmat.bindings._rust", "abi3") for arch in ELF_MACHINE}
    expected |= {(arch, "_cffi_backend", python) for arch in ELF_MACHINE for python in PYTHONS}
    assert {(e["arch"], e["module"], e["abi"]) for e in entries} == expected
    with zipfile.ZipFile(NODE_PYZ) as archive:
        for entry in entries:
            data = archive.read(entry["path"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            # An ELF shared object for the architecture it is filed under (e_machine at offset 18).
            assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == ELF_MACHINE[entry["arch"]], entry["path"]
            # The same bytes as in the upstream wheel, by that wheel's own RECORD.
            inner = entry["path"].split("/", 3)[3]
            project = "cffi-" if entry["module"] == "_cffi_backend" else "cryptography-"
            wheels = [w for w in WHEELS.glob(f"{project}*.whl") if entry["arch"] in w.name and f"-{entry['abi']}-" in w.name]
            assert len(wheels) == 1, (entry, wheels)
            with zipfile.ZipFile(wheels[0]) as wheel:
                record = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
            recorded = next(line.split(",")[1] for line in record.splitlines() if line.startswith(inner + ","))
            assert recorded == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        names = set(archive.namelist())
    assert {"__main__.py", "installer/cli.py", "bundle/trust.py", "installer/render/unitfiles.py", "installer/render/containerd_config.py", "typer/main.py", "click/core.py", "yaml/__init__.py", "tomlkit/api.py"} <= names
    # Only the node side: no builder, no builder-only dependencies.
    assert not any(n.startswith(("builder/", "airlock/", "requests/", "oras/", "tqdm/", "rich/", "pydantic")) for n in names)


def test_a_node_on_the_builders_python_runs_bytecode_and_other_pythons_compile_the_sources():
    """The archive's .pyc files are the build Python's (3.11, Debian 12's): that node skips compiling; 3.9 reads the sources."""
    where = "import sys; sys.path.insert(0, sys.argv[1]); import installer.cli, yaml; print(installer.cli.__file__, yaml.__file__)"
    node_minor = subprocess.run([NODE_PYTHON, "-I", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True).stdout
    assert node_minor.strip() == str(sys.version_info[:2]), "the node Python of these tests is the build's minor version"
    for python, suffix in ((NODE_PYTHON, ".pyc"), (python39(), ".py")):
        loaded = subprocess.run([python, "-I", "-c", where, str(NODE_PYZ)], capture_output=True, text=True, timeout=120)
        assert loaded.returncode == 0, loaded.stderr
        assert [name.rsplit(".", 1)[-1] for name in loaded.stdout.split()] == [suffix[1:]] * 2, (python, loaded.stdout)
    with zipfile.ZipFile(NODE_PYZ) as archive:
        names = set(archive.namelist())
    assert {name[:-1] for name in names if name.endswith(".pyc")} == {name for name in names if name.endswith(".py")}


@pytest.mark.parametrize("which", ["system", "3.9"])
def test_the_pyz_verifies_a_bundle_under_an_isolated_python(which, bundle, keys, tmp_path):
    python = python39() if which == "3.9" else NODE_PYTHON
    cache = tmp_path / "cache"
    env = {"AIRLOCK_PYZ_CACHE": str(cache)}
    version = subprocess.run([python, "-I", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True).stdout
    assert which != "3.9" or version.strip() == "(3, 9)"
    helped = airlock_node("--help", python=python, env=env, check=True)
    assert "  init " in helped.stdout and "  build " not in helped.stdout
    assert not cache.exists(), "help needs no native code, so nothing is extracted"
    phases = airlock_node("phases", python=python, env=env, check=True)
    assert phases.stdout.split()[:2] == ["init:", "verify"]
    result = airlock_node("verify", bundle, "--key", keys["ed25519"] / "airlock.pub", python=python, env=env, check=True)
    assert result.stdout.startswith(f"OK {bundle}")
    # The native modules for this machine and Python only, in private directories, read-only files.
    (directory,) = cache.iterdir()
    assert directory.name == hashlib.sha256(zipfile.ZipFile(NODE_PYZ).read("_native/index.json")).hexdigest()
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    tag = "cp" + version.strip("()\n").replace(", ", "")
    assert sorted(p.name for p in files) == [f"_cffi_backend.cpython-{tag[2:]}-x86_64-linux-gnu.so", "_rust.abi3.so"]
    for path in [cache, *(p for p in directory.rglob("*") if p.is_dir()), directory]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o500 for p in files)
    # A tampered extracted file is never loaded: it is replaced by the archive's checked copy.
    rust = next(p for p in files if p.name == "_rust.abi3.so")
    rust.chmod(0o700)
    rust.write_bytes(b"\x7fELF not the real library")
    airlock_node("verify", bundle, "--key", keys["ed25519"] / "airlock.pub", "-q", python=python, env=env, check=True)
    recorded = next(e["sha256"] for e in index_of(NODE_PYZ) if e["path"].endswith("x86_64/abi3/cryptography/hazmat/bindings/_rust.abi3.so"))
    assert hashlib.sha256(rust.read_bytes()).hexdigest() == recorded


# Every node module imported from the archive, with the archive's own native-module finder in place.
IMPORT_ALL = """
import importlib, pkgutil, sys, zipimport
pyz = sys.argv[1]
sys.path.insert(0, pyz)
importer = zipimport.zipimporter(pyz)
boot = {"__name__": "airlock_pyz_boot", "__file__": pyz + "/__main__.py", "__loader__": importer}
exec(importer.get_code("__main__"), boot)
boot["install_native_finder"]()
names = []
for package in ("bundle", "installer"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
import cryptography.hazmat.bindings._rust, yaml, tomlkit, typer
assert not yaml.__with_libyaml__ and "site-packages" not in cryptography.hazmat.bindings._rust.__file__
print(" ".join(names))
"""

# Other Pythons the node installer claims (3.10, 3.12, 3.13): checked where this machine has them.
OTHER_PYTHONS = sorted(glob.glob("/root/.pyenv/versions/3.1[0-3].*/bin/python3.1[0-3]"))


@pytest.mark.parametrize("which", ["system", "3.9", *OTHER_PYTHONS])
def test_every_node_module_imports_from_the_pyz(which, tmp_path):
    """Annotations that typer or a class body evaluates, and any stdlib newer than the Python, fail here."""
    python = {"system": NODE_PYTHON, "3.9": None}.get(which, which) or python39()
    result = subprocess.run([python, "-I", "-c", IMPORT_ALL, str(NODE_PYZ)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "AIRLOCK_PYZ_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert {"bundle.trust", "installer.cli", "installer.phases.kubeadm", "installer.registry.api"} <= imported
    shown = subprocess.run([python, "-I", str(NODE_PYZ), "--version"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and shown.stdout.split()[-1] == project_version(), shown.stdout + shown.stderr
    for command in ("init", "join", "upgrade", "verify", "reset", "store", "registry"):
        helped = subprocess.run([python, "-I", str(NODE_PYZ), command, "--help"], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "AIRLOCK_PYZ_CACHE": str(tmp_path / "cache")})
        assert helped.returncode == 0 and "Usage:" in helped.stdout, helped.stderr


def test_the_pyz_refuses_a_cache_others_could_write(bundle, keys, tmp_path):
    def verify(cache: Path) -> subprocess.CompletedProcess:
        return airlock_node("verify", bundle, "--key", keys["ed25519"] / "airlock.pub", env={"AIRLOCK_PYZ_CACHE": str(cache)})

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = verify(shared)
    assert refused.returncode == 1 and "writable by group or others" in refused.stderr and "Traceback" not in refused.stderr
    assert not any(shared.iterdir())
    linked = tmp_path / "linked"
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    linked.symlink_to(private)
    refused = verify(linked)
    assert refused.returncode == 1 and "is not a directory" in refused.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    refused = verify(blocked / "cache")
    assert refused.returncode == 1 and f"cannot use {blocked / 'cache'} for native code" in refused.stderr and "Traceback" not in refused.stderr
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        refused = verify(foreign)
        assert refused.returncode == 1 and "owned by uid 65534" in refused.stderr


def test_a_damaged_archive_is_refused_before_its_code_is_loaded(bundle, keys, tmp_path):
    """An archive whose native file does not hash to the list it carries (bit rot, a bad copy) stops with one line."""
    damaged = tmp_path / "damaged.pyz"
    with zipfile.ZipFile(NODE_PYZ) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "_native/index.json":
                files = json.loads(data)["files"]
                for entry in files:
                    entry["sha256"] = "0" * 64
                data = json.dumps({"files": files}).encode()
            target.writestr(info, data)
    result = subprocess.run(
        [NODE_PYTHON, "-I", str(damaged), "verify", str(bundle), "--key", str(keys["ed25519"] / "airlock.pub")],
        capture_output=True, text=True, env={**os.environ, "AIRLOCK_PYZ_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 1 and "does not match its recorded sha256" in result.stderr, result.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_an_ordinary_user_caches_under_xdg_cache_home(tmp_path):
    """Not root: the cache is $XDG_CACHE_HOME/airlock/pyz-cache, created by and private to that user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    require("setpriv")
    shared = Path(tempfile.mkdtemp(prefix="airlock-pyz-user-"))
    try:
        shared.chmod(0o755)
        pyz = shared / "airlock-node.pyz"
        shutil.copy(NODE_PYZ, pyz)
        pyz.chmod(0o644)
        home = shared / "home"
        home.mkdir()
        os.chown(home, 65534, 65534)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i", f"XDG_CACHE_HOME={home}/.cache", "PATH=/usr/bin:/bin",
                   NODE_PYTHON, "-I", str(pyz), "registry", "cert", "--ca-out", str(home / "pki"), "--name", "127.0.0.1"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        cache = home / ".cache/airlock/pyz-cache"
        assert cache.stat().st_uid == 65534 and stat.S_IMODE(cache.stat().st_mode) == 0o700
        assert [p.name for p in cache.rglob("*.so")] and (home / "pki/ca.crt").exists()
    finally:
        shutil.rmtree(shared)


def test_cache_location_by_user(monkeypatch):
    monkeypatch.delenv("AIRLOCK_PYZ_CACHE", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert zipapp_main.cache_base() == "/var/lib/airlock/pyz-cache"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/op/.cache")
    assert zipapp_main.cache_base() == "/home/op/.cache/airlock/pyz-cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/op")
    assert zipapp_main.cache_base() == "/home/op/.cache/airlock/pyz-cache"


def test_the_registry_serves_from_the_pyz_without_native_code(store, tmp_path):
    """airlock-registry.service runs the pyz as a dynamic user with a read-only file system: it must extract nothing."""
    port = free_port()
    unusable = tmp_path / "not-a-directory"
    unusable.write_text("")
    process = subprocess.Popen(
        [NODE_PYTHON, "-I", str(NODE_PYZ), "registry", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "AIRLOCK_PYZ_CACHE": str(unusable)},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                    connection.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
                    answer = connection.recv(100)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode() if process.poll() is not None else "no answer"
                time.sleep(0.2)
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        process.terminate()
        process.wait(15)


def test_build_carries_the_pyz_as_a_signed_member_and_beside_the_bundle(bundle):
    with tarfile.open(bundle) as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
        member = archive.extractfile("bin/airlock-node.pyz").read()
    (entry,) = [f for f in manifest["files"] if f["path"] == "bin/airlock-node.pyz"]
    assert entry["sha256"] == hashlib.sha256(NODE_PYZ.read_bytes()).hexdigest() == hashlib.sha256(member).hexdigest()
    assert entry["mode"] == 0o755
    beside = bundle.with_name("airlock-node.pyz")
    assert beside.read_bytes() == NODE_PYZ.read_bytes() and os.access(beside, os.X_OK)


def readme_node_block() -> list[str]:
    """The shell block of README's node quick start, as lines (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start on the disconnected node", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].rstrip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_node_quick_start_runs_as_written(node_bundle, keys, containerd, tmp_path):
    """Three files copied into a directory; the documented trust check with coreutils and openssl; one command.

    The test adds only what a scratch root needs (--root, its own containerd, a loopback registry port).
    """
    require("openssl", "tar", "sha256sum")
    lines = readme_node_block()
    install = [line for line in lines if " init " in line]
    checks = [line for line in lines if line not in install]
    assert len(install) == 1 and install[0].startswith("python3 airlock-node.pyz init k8s-1.36.tar --key airlock.pub")
    node = tmp_path / "node"
    node.mkdir()
    shutil.copy(node_bundle, node / "k8s-1.36.tar")
    shutil.copy(node_bundle.with_name("airlock-node.pyz"), node / "airlock-node.pyz")
    shutil.copy(keys["ed25519"] / "airlock.pub", node / "airlock.pub")
    trust = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(checks)], cwd=node, capture_output=True, text=True)
    assert trust.returncode == 0, trust.stderr
    assert "airlock-node.pyz: OK" in trust.stdout
    # A pyz that is not the signed one fails the same check.
    tampered = node / "airlock-node.pyz"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    refused = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(checks)], cwd=node, capture_output=True, text=True)
    assert refused.returncode != 0 and "FAILED" in refused.stdout + refused.stderr
    shutil.copy(node_bundle.with_name("airlock-node.pyz"), tampered)
    log, root = tmp_path / "standin.log", tmp_path / "root"
    extra = f" --root {root} --config {node_config(tmp_path, free_port())} --ignore-preflight-errors {IGNORE} --containerd-address {containerd.socket}"
    result = subprocess.run(["bash", "-c", install[0] + extra], cwd=node, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "AIRLOCK_STANDIN_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    with tarfile.open(node_bundle) as archive:
        expected = {image["reference"]: image["digest"] for image in json.loads(archive.extractfile("bundle.json").read())["images"]}
    assert containerd.image_digests() == expected


def readme_split_block() -> list[str]:
    """README's block for a split bundle, as lines (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if b.startswith("# the same check for a split bundle")]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_split_bundle_check_runs_as_written(node_bundle, keys, tmp_path):
    """The README's pyz check for parts, on what `airlock split` writes; then its init line plans from the parts list."""
    require("openssl", "tar", "sha256sum")
    lines = readme_split_block()
    install = [line for line in lines if " init " in line]
    checks = [line for line in lines if line not in install]
    assert install == ["python3 airlock-node.pyz init k8s-1.36.parts.json --key airlock.pub"]
    node = tmp_path / "node"
    shutil.copy(node_bundle, tmp_path / "k8s-1.36.tar")
    airlock("split", tmp_path / "k8s-1.36.tar", "--size", "300K", "--sign-key", keys["ed25519"] / "airlock.key", "--out-dir", node, check=True)
    shutil.copy(keys["ed25519"] / "airlock.pub", node / "airlock.pub")
    assert len(list(node.glob("k8s-1.36.tar.part*"))) > 1 and (node / "airlock-node.pyz").exists()
    trust = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(checks)], cwd=node, capture_output=True, text=True)
    assert trust.returncode == 0 and "airlock-node.pyz: OK" in trust.stdout, trust.stdout + trust.stderr
    pyz = node / "airlock-node.pyz"
    signed = pyz.read_bytes()
    pyz.write_bytes(signed[:-1] + bytes([signed[-1] ^ 1]))
    refused = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(checks)], cwd=node, capture_output=True, text=True)
    assert refused.returncode != 0 and "airlock-node.pyz: FAILED" in refused.stdout
    pyz.write_bytes(signed)
    extra = f" --dry-run --root {tmp_path / 'root'} --config {node_config(tmp_path, free_port())} --ignore-preflight-errors {IGNORE}"
    planned = subprocess.run(["bash", "-c", install[0] + extra], cwd=node, capture_output=True, text=True, timeout=600)
    assert planned.returncode == 0, planned.stderr
    assert "would " in planned.stdout


def test_build_without_a_node_installer_says_how_to_make_one(upstream, keys, tmp_path):
    result = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", "--node-pyz", tmp_path / "missing.pyz")
    assert result.returncode == 1 and f"no node installer at {tmp_path / 'missing.pyz'}: run `make dist`" in result.stderr
    assert not (tmp_path / "k8s.tar").exists() and not (tmp_path / "cache").exists()


def test_the_venv_and_the_pyz_run_one_typer_and_click_pin(tmp_path):
    """`airlock` (the venv) and `airlock-node.pyz` run the same typer and click: one pin, read from both places."""
    import tomllib
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def pins(requirements) -> dict[str, str]:
        found = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", text).groups() for text in requirements)
        return {name: found.get(name) for name in ("typer", "click")}

    venv, pyz = pins(project["project"]["dependencies"]), pins(project["tool"]["airlock"]["node-pyz"]["pure"])
    assert None not in venv.values() and venv == pyz, (venv, pyz)
    assert {name: metadata.version(name) for name in venv} == venv  # what the venv really installed
    # What the pyz really carries, as the node's Python imports it.
    probe = "import click, typer; print(typer.__version__, click.__version__)"
    result = subprocess.run([NODE_PYTHON, "-I", "-c", f"import sys; sys.path.insert(0, {str(NODE_PYZ)!r}); {probe}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [pyz["typer"], pyz["click"]]
