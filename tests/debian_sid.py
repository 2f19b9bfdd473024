"""containerd 2.x for the tests: Debian sid's package, unpacked into a private root.

`make test` runs `python -m tests.debian_sid` (target `containerd-sid`). Nothing is
installed system-wide and /etc is not touched: apt reads a source list written in a
private temporary directory, keeps its package lists and downloads there, and
`apt-get download containerd=PACKAGE_VERSION` fetches that one .deb (apt checks the
archive's signature and the package's hash); `dpkg-deb -x` unpacks it into ROOT (default
.dist-cache/containerd-sid). The version is pinned: the tests' corpus (tests/data/containerd/
default-2.1.toml) and their expectations are that package's; a ROOT holding another is
fetched again, and a sid that no longer has it is a failure to fetch, never a silent swap.
The archive's address is the one this machine's own apt configuration names
(/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list), with the suite `sid`.

sid's containerd needs only glibc >= 2.34, so it runs on Debian 12 with bookworm's runc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".dist-cache/containerd-sid"
MARKER = ".airlock-package"  # in ROOT: "PACKAGE VERSION" of what was unpacked, written last
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGE, PACKAGE_VERSION = "containerd", "2.1.9+ds1-5"


class SidError(Exception):
    pass


def _deb822(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 .sources file (comments dropped, continuation lines joined)."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def debian_archive(etc: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(archive URI, keyring) of the Debian main archive this machine's apt uses: not its security or updates suites."""
    candidates: list[tuple[str, str]] = []
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in _deb822(path.read_text()):
            if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes").lower() == "no":
                continue
            suites = stanza.get("suites", "").split()
            if not any("-" not in suite for suite in suites):
                continue  # only bookworm-security / bookworm-updates here: not the main archive
            keyring = stanza.get("signed-by", DEFAULT_KEYRING)
            candidates += [(uri, keyring if keyring.startswith("/") else DEFAULT_KEYRING) for uri in stanza.get("uris", "").split()]
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            rest = line.split("#", 1)[0].strip()
            if not rest.startswith("deb "):
                continue
            rest, options = rest[4:].strip(), {}
            if rest.startswith("["):
                inside, rest = rest[1:].split("]", 1)
                options = dict(part.split("=", 1) for part in inside.split() if "=" in part)
            words = rest.split()
            if len(words) >= 2 and "-" not in words[1]:
                candidates.append((words[0], options.get("signed-by", DEFAULT_KEYRING)))
    # The main archive by its usual name (…/debian, not …/debian-security), else the first main-suite source.
    candidates.sort(key=lambda candidate: not candidate[0].rstrip("/").endswith("/debian"))
    if candidates:
        return candidates[0][0].rstrip("/"), candidates[0][1]
    raise SidError(f"no Debian archive in {etc}/sources.list or sources.list.d (only security or updates suites, or none); add one to this machine's apt configuration")


def _apt_options(work: Path) -> list[str]:
    """apt reads and writes only under `work`: its source list, package lists, cache, preferences."""
    for directory in ("lists/partial", "cache/archives/partial", "parts", "preferences.d"):
        (work / directory).mkdir(parents=True, exist_ok=True)
    return [
        "-o", f"Dir::Etc::SourceList={work / 'sid.sources'}",
        "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
        "-o", f"Dir::Etc::Preferences={work / 'preferences'}",
        "-o", f"Dir::Etc::PreferencesParts={work / 'preferences.d'}",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", "Dir::State::status=/dev/null",
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def fetch(package: str, version: str, root: Path, etc: Path = Path("/etc/apt")) -> str:
    """Unpack sid's `package` at exactly `version` into `root` (replacing what is there); returns that version."""
    uri, keyring = debian_archive(etc)
    with tempfile.TemporaryDirectory(prefix="airlock-sid-") as temporary:
        work = Path(temporary)
        source = f"Types: deb\nURIs: {uri}\nSuites: sid\nComponents: main\nSigned-By: {keyring}\n"
        descriptor = os.open(work / "sid.sources", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(source)
        options = _apt_options(work)
        _run(["apt-get", *options, "-q", "update"], work)
        _run(["apt-get", *options, "-q", "download", f"{package}={version}"], work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise SidError(f"apt-get download {package} left {len(debs)} packages in {work}")
        got = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], work).strip()
        if got != version:
            raise SidError(f"apt-get download {package}={version} gave version {got}")
        staging = root.with_name(root.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755, parents=True)
        _run(["dpkg-deb", "-x", str(debs[0]), str(staging)], work)
        (staging / MARKER).write_text(f"{package} {version} from {uri} sid\n")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    return version


def _run(argv: list[str], cwd: Path) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise SidError(f"{argv[0]} is not installed (Debian's apt and dpkg are needed)") from None
    if result.returncode != 0:
        raise SidError(f"{' '.join(argv[:1] + argv[-2:])} failed (exit {result.returncode}): {result.stderr.strip()[-600:]}")
    return result.stdout


def installed(root: Path = DEFAULT_ROOT) -> str | None:
    """`PACKAGE VERSION ...` of what `root` holds, or None when it holds nothing complete or another version."""
    marker = root / MARKER
    if not marker.is_file() or not (root / "usr/bin/containerd").is_file():
        return None
    text = marker.read_text().strip()
    return text if text.split()[:2] == [PACKAGE, PACKAGE_VERSION] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"where to unpack (default {DEFAULT_ROOT})")
    parser.add_argument("--refresh", action="store_true", help="fetch again even when ROOT already holds the package")
    parser.add_argument("--apt-etc", type=Path, default=Path("/etc/apt"), help="the apt configuration that names the Debian archive (default /etc/apt)")
    arguments = parser.parse_args()
    have = installed(arguments.root)
    if have and not arguments.refresh:
        print(f"containerd from Debian sid: {have} in {arguments.root}")
        return
    try:
        version = fetch(PACKAGE, PACKAGE_VERSION, arguments.root, arguments.apt_etc)
    except SidError as error:
        # Off CI the tests that need it skip; in CI a missing tool is a failure.
        ci = os.environ.get("CI") == "true"
        print(f"containerd from Debian sid: {error}; {'CI=true: failing' if ci else 'the tests that need it will skip'}", file=sys.stderr)
        sys.exit(1 if ci else 0)
    print(f"containerd from Debian sid: containerd {version} unpacked into {arguments.root}")


if __name__ == "__main__":
    main()
