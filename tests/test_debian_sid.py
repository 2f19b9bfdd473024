"""`make containerd-sid` (tests/debian_sid.py): the pinned package of Debian sid, found through this machine's apt
configuration, and a failure to fetch it that fails CI and lets a workstation skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.debian_sid import PACKAGE, PACKAGE_VERSION, debian_archive, installed

ROOT = Path(__file__).resolve().parent.parent


def unpacked(root: Path, marker: str) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/containerd").write_bytes(b"\x7fELF")
    (root / ".airlock-package").write_text(marker)
    return root


def test_only_the_pinned_package_counts_as_unpacked(tmp_path):
    """The corpus and the tests expect sid's 2.1.9+ds1-5: a root holding another version is fetched again."""
    assert (PACKAGE, PACKAGE_VERSION) == ("containerd", "2.1.9+ds1-5")
    pinned = unpacked(tmp_path / "pinned", f"containerd {PACKAGE_VERSION} from http://deb.example/debian sid\n")
    assert installed(pinned) == f"containerd {PACKAGE_VERSION} from http://deb.example/debian sid"
    assert installed(unpacked(tmp_path / "newer", "containerd 2.2.1+ds1-1 from http://deb.example/debian sid\n")) is None
    assert installed(unpacked(tmp_path / "other", f"runc {PACKAGE_VERSION} from http://deb.example/debian sid\n")) is None
    half = unpacked(tmp_path / "half", f"containerd {PACKAGE_VERSION} from http://deb.example/debian sid\n")
    (half / "usr/bin/containerd").unlink()
    assert installed(half) is None


def test_the_archive_is_the_main_one_this_machines_apt_names(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/site.gpg\n"
    )
    assert debian_archive(etc) == ("http://mirror.example/debian", "/usr/share/keyrings/site.gpg")
    (etc / "sources.list.d/debian.sources").unlink()
    (etc / "sources.list").write_text("# site mirror\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert debian_archive(etc) == ("http://old.example/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")


def test_a_failed_fetch_fails_ci_and_lets_a_workstation_skip(tmp_path):
    """No Debian archive to ask (an empty apt configuration): one line on stderr; exit 1 with CI=true, else 0."""
    (tmp_path / "apt").mkdir()
    command = [sys.executable, "-m", "tests.debian_sid", "--root", str(tmp_path / "root"), "--apt-etc", str(tmp_path / "apt")]
    for ci, code, ending in (("true", 1, "CI=true: failing"), ("", 0, "the tests that need it will skip")):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "CI": ci}, timeout=60)
        assert result.returncode == code, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("containerd from Debian sid: no Debian archive in ") and lines[0].endswith(ending)
        assert not (tmp_path / "root").exists()
