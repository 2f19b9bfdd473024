"""airlock-node.pyz: the node side (installer, bundle, manifests) and what it imports, as one zipapp.

`python -m builder.zipapp` (what `make dist` runs) fetches the pinned wheels
listed in pyproject.toml's `[tool.airlock.node-pyz]` into a wheel cache,
checks each against the sha256 recorded there, and packs them with the node
packages into `dist/airlock-node-VERSION.pyz`. The archive is deterministic:
sorted names, fixed timestamps and modes, so the same inputs give the same bytes.

Pure Python goes in as is (zipimport loads it from the archive), each
module beside its bytecode: an unchecked hash-based `.pyc` (PEP 552) made by
the Python that runs `make dist`. zipimport uses a `.pyc` whose magic number
is its own Python's and compiles the source otherwise, so a node whose Python
is the builder's minor version (3.11: Debian 12) starts without compiling,
and any other Python it supports reads the sources as before. Shared
libraries cannot be loaded from a zip: they go under `_native/linux-{arch}/`,
listed with their sha256 in `_native/index.json`, and the archive's
`__main__` (installer/zipapp_main.py) extracts the ones for the running
machine and Python when they are first imported.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from builder.errors import BuildError
from bundle.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
NODE_PACKAGES = ("bundle", "installer", "manifests")
MAIN = ROOT / "installer" / "zipapp_main.py"  # node code: the archive's __main__, stored once, under that name only
SHEBANG = b"#!/usr/bin/env python3\n"
EPOCH = (1980, 1, 1, 0, 0, 0)
INDEX = "_native/index.json"
# Where the extension modules that the node imports sit inside their wheels.
NATIVE_MODULES = {"_cffi_backend": "_cffi_backend.", "cryptography.hazmat.bindings._rust": "cryptography/hazmat/bindings/_rust."}
SKIPPED_SUFFIXES = (".pyc", ".pyi", ".so", ".h", ".c")


@dataclass(frozen=True)
class Pins:
    """`[tool.airlock.node-pyz]`: the wheels the node archive carries, each pinned by version and sha256."""

    pure: tuple[str, ...]
    abi3: tuple[str, ...]
    per_python: tuple[str, ...]
    pythons: tuple[str, ...]
    arches: tuple[str, ...]
    sha256: dict[str, str]

    @classmethod
    def read(cls, pyproject: Path = ROOT / "pyproject.toml") -> Pins:
        table = tomllib.loads(pyproject.read_text())["tool"]["airlock"]["node-pyz"]
        return cls(
            tuple(table["pure"]), tuple(table["abi3"]), tuple(table["per-python"]), tuple(table["pythons"]), tuple(table["arches"]), dict(table["sha256"])
        )


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    return tomllib.loads(pyproject.read_text())["project"]["version"]


def default_output(version: str | None = None) -> Path:
    return ROOT / "dist" / f"airlock-node-{version or project_version()}.pyz"


def wheel_name(requirement: str) -> str:
    """`typing_extensions==4.16.0` -> `typing_extensions-4.16.0` as wheel file names spell it."""
    name, version = requirement.split("==")
    return f"{name.replace('-', '_').lower()}-{version}"


def _pip_download(cache: Path, requirement: str, python: str, abi: str | None, arch: str | None) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(cache), "--python-version", python]
    if abi:
        command += ["--implementation", "cp", "--abi", abi]
        # pip takes the first platform a release has a wheel for: the order must give the pinned files.
        for platform in ("manylinux_2_28", "manylinux2014", "manylinux_2_17"):
            command += ["--platform", f"{platform}_{arch}"]
    command.append(requirement)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"pip download {requirement} (Python {python}, {abi or 'pure'}, {arch or 'any'}) failed: {result.stderr.strip()[-400:]}")


def _find(pins: Pins, cache: Path, requirement: str, tag: str, arch: str | None) -> Path | None:
    """The cached wheel for this tag and architecture, a pinned one first."""
    stem = wheel_name(requirement)
    matching = [c for c in sorted(cache.glob(f"{stem}-*.whl")) if tag in c.name.lower() and (arch is None or arch in c.name.lower())]
    matching.sort(key=lambda candidate: candidate.name not in pins.sha256)
    return matching[0] if matching else None


def _checked(pins: Pins, wheel: Path) -> Path:
    expected = pins.sha256.get(wheel.name)
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if expected is None:
        raise BuildError(f"{wheel.name} has no sha256 in [tool.airlock.node-pyz.sha256] of pyproject.toml (its sha256 is {actual}); add it after checking the wheel")
    if actual != expected:
        raise BuildError(f"{wheel} does not match the sha256 pinned in pyproject.toml; delete it and run make dist again")
    return wheel


def fetch_wheels(pins: Pins, cache: Path) -> dict[str, list[Path]]:
    """Every wheel the archive needs, from the cache or pip; each checked against its pinned sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[Path]] = {"pure": [], "native": []}

    def get(requirement: str, tag: str, python: str, abi: str | None, arch: str | None) -> Path:
        wheel = _find(pins, cache, requirement, tag, arch)
        if wheel is None:
            _pip_download(cache, requirement, python, abi, arch)
            wheel = _find(pins, cache, requirement, tag, arch)
        if wheel is None:
            raise BuildError(f"pip found no wheel of {requirement} for {tag} {arch or ''} in {cache}")
        return _checked(pins, wheel)

    for requirement in pins.pure:
        # Pure Python only: a platform wheel (PyYAML) contributes its Python files; its C speed-up is left out.
        found["pure"].append(get(requirement, "", "3.9.2", None, None))
    for arch in pins.arches:
        for requirement in pins.abi3:
            found["native"].append(get(requirement, "-abi3-", "3.9.2", "abi3", arch))
        for python in pins.pythons:
            tag = "cp" + python.replace(".", "")
            for requirement in pins.per_python:
                found["native"].append(get(requirement, f"-{tag}-{tag}-", python, tag, arch))
    return found


def _node_package_files() -> dict[str, bytes]:
    files = {}
    for package in NODE_PACKAGES:
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BuildError(f"package {package} is not importable from {ROOT}; run make venv")
        directory = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(SKIPPED_SUFFIXES) and path != MAIN:
                files[f"{package}/{path.relative_to(directory).as_posix()}"] = path.read_bytes()
    return files


def _wheel_members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def _wheel_tags(wheel: Path) -> tuple[str, str]:
    """(abi, arch) of a platform wheel: ("abi3", "x86_64"), ("cp39", "aarch64")."""
    parts = wheel.name[: -len(".whl")].split("-")
    abi, platform = parts[-2], parts[-1]
    arch = "aarch64" if "aarch64" in platform else "x86_64" if "x86_64" in platform else platform
    return abi, arch


def _python_of(wheel: Path) -> list[int]:
    python = wheel.name.split("-")[-3]
    return [int(python[2]), int(python[3:])]


def collect(wheels: dict[str, list[Path]]) -> tuple[dict[str, bytes], list[dict]]:
    """Archive members: node packages, wheels' Python files once, each native module under _native/."""
    members = _node_package_files()
    natives: list[dict] = []
    for wheel in wheels["pure"]:
        for name, data in _wheel_members(wheel).items():
            if not name.endswith(SKIPPED_SUFFIXES) and not name.endswith("/RECORD"):
                members[name] = data
    python_parts: dict[str, bytes] = {}
    for wheel in wheels["native"]:
        abi, arch = _wheel_tags(wheel)
        for name, data in _wheel_members(wheel).items():
            module = next((m for m, prefix in NATIVE_MODULES.items() if name.startswith(prefix) and name.endswith(".so")), None)
            if module is not None:
                path = f"_native/linux-{arch}/{abi}/{name}"
                members[path] = data
                natives.append({"module": module, "arch": arch, "abi": abi, "python": _python_of(wheel), "path": path, "sha256": hashlib.sha256(data).hexdigest()})
            elif name.endswith(".so"):
                raise BuildError(f"{wheel.name} holds {name}, a shared library the node archive does not know how to load")
            elif not name.endswith(SKIPPED_SUFFIXES) and not name.endswith(("/RECORD", "/WHEEL")) and "/sboms/" not in name:
                # The Python half of a platform wheel must be the same for every platform: it is stored once.
                if python_parts.setdefault(name, data) != data:
                    raise BuildError(f"{name} differs between the platform wheels of {wheel.name}; the node archive needs one copy")
    members.update(python_parts)
    natives.sort(key=lambda entry: entry["path"])
    return members, natives


def bytecode(sources: dict[str, bytes]) -> dict[str, bytes]:
    """`name.pyc` for every `name.py` (archive paths), compiled by this Python in a child with a fixed hash seed.

    Unchecked hash-based: zipimport takes them without reading the source (the archive is signed as a whole), and
    they do not depend on timestamps. A fixed PYTHONHASHSEED keeps set constants in one order, so the same sources
    give the same bytes. Tracebacks name `airlock-node.pyz/<path>`, and show the lines from the source beside it.
    """
    with tempfile.TemporaryDirectory(prefix="airlock-pyz-bytecode-") as scratch:
        root = Path(scratch)
        for name, data in sources.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        command = [sys.executable, "-s", "-m", "compileall", "-q", "-b", "-d", "airlock-node.pyz", "--invalidation-mode", "unchecked-hash", str(root)]
        result = subprocess.run(command, capture_output=True, text=True, env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"})
        if result.returncode != 0:
            raise BuildError(f"compiling the node archive's Python failed: {(result.stdout + result.stderr).strip()[-400:]}")
        return {name[:-3] + ".pyc": (root / name).with_suffix(".pyc").read_bytes() for name in sources}


def write_pyz(output: Path, members: dict[str, bytes], natives: list[dict]) -> Path:
    """Write the zipapp atomically: shebang, then a zip with sorted names, fixed times and modes."""
    version = project_version()
    members = {
        **members,
        INDEX: json.dumps({"files": natives}, sort_keys=True, indent=1).encode() + b"\n",
        "__main__.py": MAIN.read_bytes(),
        # `airlock-node --version` reads the version from package metadata; importlib.metadata finds it in the zip.
        f"airlock-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: airlock\nVersion: {version}\n".encode(),
    }
    members.update(bytecode({name: data for name, data in members.items() if name.endswith(".py")}))
    buffer = io.BytesIO()
    buffer.write(SHEBANG)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, members[name], compresslevel=9)
    write_atomic(output, buffer.getvalue(), 0o755)
    return output


def build_pyz(output: Path, cache: Path, pins: Pins | None = None) -> Path:
    members, natives = collect(fetch_wheels(pins or Pins.read(), cache))
    return write_pyz(output, members, natives)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder.zipapp", description="Build airlock-node-VERSION.pyz, the node side as one file.")
    parser.add_argument("--output", "-o", type=Path, default=None, help="the .pyz to write (default dist/airlock-node-VERSION.pyz)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".dist-cache" / "wheels", help="wheel cache (default .dist-cache/wheels)")
    args = parser.parse_args(argv)
    try:
        output = build_pyz(args.output or default_output(), args.wheels)
    except BuildError as error:
        print(f"airlock: error: {error}", file=sys.stderr)
        return 1
    print(f"{output} ({output.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
