"""Shared fixtures: real tools are required; in CI a missing one is a failure, not a skip."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from builder.zipapp import ROOT, build_pyz, default_output
from tests.upstream import LocalUpstream

AIRLOCK = str(Path(sys.executable).with_name("airlock"))
# Node commands run the way a node runs them: the one-file installer under an isolated system Python
# (no site-packages, no venv), so anything missing from the archive fails here.
NODE_PYZ = Path(os.environ.get("AIRLOCK_NODE_PYZ") or default_output())
NODE_PYTHON = os.environ.get("AIRLOCK_NODE_PYTHON", "/usr/bin/python3")
# Its native modules are extracted into a private cache of this test run, not the host's /var/lib/airlock.
os.environ.setdefault("AIRLOCK_PYZ_CACHE", tempfile.mkdtemp(prefix="airlock-pyz-cache-"))
TOOLS = ("docker-registry", "skopeo", "umoci", "busybox", "openssl", "zstd", "containerd", "ctr", "runc")


def pytest_sessionstart(session) -> None:
    """Rebuild dist/airlock-node-VERSION.pyz (what `make dist` does) when the node code changed since it was built."""
    # With pytest-xdist the controller rebuilds it before any worker starts (xdist starts them last); workers only use it.
    if os.environ.get("AIRLOCK_NODE_PYZ") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    sources = [p for d in ("bundle", "installer", "manifests") for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    sources += [ROOT / "builder/zipapp.py", ROOT / "pyproject.toml"]
    if not NODE_PYZ.exists() or max(p.stat().st_mtime for p in sources) > NODE_PYZ.stat().st_mtime:
        build_pyz(NODE_PYZ, ROOT / ".dist-cache" / "wheels")


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"missing tools: {', '.join(missing)} (make deps installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def airlock(*args: str, env: dict | None = None, check: bool | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([AIRLOCK, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check is True:
        assert result.returncode == 0, f"airlock {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def python39() -> str:
    """A Python 3.9 to run the node installer with (pyenv's on the CI machine); in CI its absence is a failure."""
    candidates = [os.environ.get("AIRLOCK_PYTHON39"), *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")), shutil.which("python3.9")]
    for candidate in filter(None, candidates):
        # A pyenv shim that is not switched to 3.9 exits 127: only a Python that answers 3.9 counts.
        probe = subprocess.run([candidate, "-I", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return candidate
    message = "no Python 3.9 to run airlock-node.pyz with (set AIRLOCK_PYTHON39)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def node_command(python: str | None = None) -> list[str]:
    """How a node runs airlock: `python3 -I airlock-node.pyz`."""
    return [python or NODE_PYTHON, "-I", str(NODE_PYZ)]


def airlock_node(*args: str, env: dict | None = None, check: bool | None = None, python: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """A node command (verify, init, join, upgrade, reset...) run from airlock-node.pyz with `python -I`."""
    command = [*node_command(python), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check is True:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build(upstream, keys, out, version: str, cache, *extra, algorithm: str = "ed25519", env: dict | None = None, check: bool | None = None):
    """`airlock build` from the local upstream: output, version and cache, then any extra flags."""
    return airlock(
        "build",
        "-o",
        out,
        "--kubernetes-version",
        version,
        "--sign-key",
        keys[algorithm] / "airlock.key",
        "--cache-dir",
        cache,
        *upstream.build_flags(),
        *extra,
        env=env,
        check=check,
    )


def assert_blobs_whole(blobs: Path) -> None:
    """Every blob under a final name hashes to that name (checked here, independently of `airlock store check`)."""
    import hashlib

    for blob in blobs.iterdir():
        digest = hashlib.sha256()
        with open(blob, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == blob.name, f"{blob} is not what its name says"


@pytest.fixture(scope="session")
def upstream(tmp_path_factory):
    require(*TOOLS)
    local = LocalUpstream(tmp_path_factory.mktemp("upstream")).start()
    yield local
    local.close()


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, Path]:
    found = {}
    for algorithm in ("ed25519", "ecdsa-p256"):
        directory = tmp_path_factory.mktemp(f"keys-{algorithm}")
        airlock("keygen", "--out", directory, "--algorithm", algorithm, check=True)
        found[algorithm] = directory
    return found


@pytest.fixture(scope="session")
def bundle(upstream, keys, tmp_path_factory) -> Path:
    """One two-architecture bundle of stable-1.36, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("bundle") / "k8s.tar"
    airlock(
        "build",
        "-o",
        out,
        "--kubernetes-version",
        "stable-1.36",
        "--sign-key",
        keys["ed25519"] / "airlock.key",
        "--arch",
        "amd64,arm64",
        "--image",
        "busybox:1.36",
        "--cache-dir",
        tmp_path_factory.mktemp("cache"),
        *upstream.build_flags(),
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def store(bundle, keys, tmp_path_factory) -> Path:
    """The session bundle's images unpacked into a store, as a node holds them."""
    from bundle.trust import load_trusted_keys
    from bundle.unpack import unpack_images

    root = tmp_path_factory.mktemp("store")
    unpack_images(bundle, load_trusted_keys([keys["ed25519"] / "airlock.pub"]), root)
    return root


@pytest.fixture(scope="session")
def node_bundle(upstream, keys, tmp_path_factory) -> Path:
    """amd64 only, like the test node; flannel included."""
    out = tmp_path_factory.mktemp("node-bundle") / "k8s.tar"
    build(upstream, keys, out, "stable-1.36", tmp_path_factory.mktemp("node-cache"), check=True)
    return out


@pytest.fixture
def containerd():
    """A private containerd (Debian's) with its own config, root, state and socket; a short path for the socket."""
    import time

    from tests.containerd import Containerd

    require("containerd", "ctr", "runc")
    daemon = Containerd(Path(f"/tmp/ctd-{os.getpid()}-{time.monotonic_ns() % 10**9}"))
    yield daemon
    daemon.close()


CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
HIGH = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"  # 7.5
LOW = "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:L/I:N/A:N"  # 2.5


@pytest.fixture(scope="session")
def scanned_upstream(tmp_path_factory):
    """A local upstream with a Debian and an Alpine image holding real package databases and a Go program, and an
    OSV stand-in that knows test records for some of them: (upstream, work directory, the program's Go version)."""
    import subprocess

    from tests.goprobe import build_probe, go_version_m
    from tests.imagefiles import ALPINE_IMAGE, ALPINE_OS_RELEASE, APK_INSTALLED, DEBIAN_IMAGE
    from tests.osv import record
    from tests.upstream import DEFAULT_VERSION

    require(*TOOLS, "go", "dpkg-query")
    work = tmp_path_factory.mktemp("vulns")
    probe = build_probe(work / "probe", ("amd64",))
    go = go_version_m(probe["amd64"])["go"]
    shutil.copyfile("/var/lib/dpkg/status", work / "status")
    zlib = subprocess.run(
        ["dpkg-query", f"--admindir={work}", "-W", "-f", "${source:Package} ${source:Version}", "zlib1g"], capture_output=True, text=True, check=True
    ).stdout.split()
    records = [
        record("AIRLOCK-TEST-0001", "Go", "stdlib", [go[2:]], "1.99.0", "Go standard library flaw", cvss_v3=CRITICAL),
        record("AIRLOCK-TEST-0002", "Go", "example.com/greeting", ["1.4.2"], "1.4.3", "greeting flaw", word="MODERATE"),
        record("AIRLOCK-TEST-0003", "Debian:12", zlib[0], [zlib[1]], zlib[1] + "+fix1", "zlib flaw", cvss_v3=HIGH),
        record("AIRLOCK-TEST-0004", "Alpine:v3.19", "openssl", ["3.1.4-r5"], "3.1.4-r6", "openssl flaw", cvss_v3=LOW),
        record("AIRLOCK-TEST-0005", "Go", "stdlib", [go[2:]], "1.99.1", "second stdlib flaw, no severity given"),
        record("AIRLOCK-TEST-0006", "Go", "stdlib", [go[2:]], "1.99.2", "third stdlib flaw", word="HIGH"),
        record("AIRLOCK-TEST-0007", "Go", "stdlib", ["0.0.1"], "0.0.2", "a flaw of a version nobody carries", cvss_v3=CRITICAL),
    ]
    upstream = LocalUpstream(
        work / "upstream",
        versions=(DEFAULT_VERSION,),
        labels={"stable": DEFAULT_VERSION},
        extra_images={DEBIAN_IMAGE: ("amd64",), ALPINE_IMAGE: ("amd64",)},
        image_files={
            DEBIAN_IMAGE: {"/etc/os-release": Path("/etc/os-release").read_bytes(), "/var/lib/dpkg/status": (work / "status").read_bytes(),
                           "/usr/local/bin/probe": probe["amd64"]},
            ALPINE_IMAGE: {"/etc/os-release": ALPINE_OS_RELEASE.encode(), "/lib/apk/db/installed": APK_INSTALLED.encode()},
        },
        osv_records=records,
    ).start()  # fmt: skip
    yield upstream, work, go
    upstream.close()


