"""Which containerd a bundle carries, and which config layout a node writes for the containerd it runs.

containerd 2.3 (LTS) is the default with the runc its release is tested with;
2.0-2.2 and 1.7 are accepted, anything else is refused with exit 2 before a
byte is fetched. On the node the layout follows the containerd that will read
config.toml: the node's own (asked with `--version`, as the real 1.6 and sid's
2.1 answer here) or, under --root, the bundle's.
"""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from builder import artifacts
from bundle.containerd import SUPPORTED, config_version, minor_of
from installer.containerd_release import release_in
from installer.node import NodeError
from tests.conftest import airlock_node, build, require
from tests.containerd import sid_programs


def components(bundle) -> dict:
    with tarfile.open(bundle) as archive:
        return json.loads(archive.extractfile("bundle.json").read())["components"]


def test_the_default_is_containerd_2_3_with_the_runc_and_cni_plugins_it_pairs_with(upstream, keys, tmp_path):
    out = tmp_path / "k8s.tar"
    build(upstream, keys, out, "stable", tmp_path / "cache", "--cni", "none", check=True)
    found = components(out)
    # v2.3.4: script/setup/runc-version says v1.4.3; go.mod's containernetworking/plugins is v1.9.1.
    assert (found["containerd"], found["runc"], found["cni"]) == ("2.3.4", "v1.4.3", "v1.9.1")
    with tarfile.open(out) as archive:
        names = archive.getnames()
    assert "bin/linux-amd64/containerd-2.3.4-linux-amd64.tar.gz" in names and "cni/linux-amd64/cni-plugins-linux-amd64-v1.9.1.tgz" in names


@pytest.mark.parametrize("asked, release, runc", [("2.1", "2.1.9", "v1.3.6"), ("v2.0.11", "2.0.11", "v1.3.6"), ("1.7", "1.7.34", "v1.3.6"), ("2.2.7", "2.2.7", "v1.3.6")])
def test_an_accepted_containerd_release_brings_its_runc(upstream, keys, tmp_path, asked, release, runc):
    out = tmp_path / "k8s.tar"
    build(upstream, keys, out, "stable", tmp_path / "cache", "--cni", "none", "--containerd-version", asked, check=True)
    assert (components(out)["containerd"], components(out)["runc"]) == (release, runc)


@pytest.mark.parametrize("asked", ["1.6.20", "2.4.0", "3.0", "1.7.x", "latest"])
def test_other_containerd_releases_are_refused_before_any_download(upstream, keys, tmp_path, asked):
    upstream.server.clear()
    result = build(upstream, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", "--containerd-version", asked)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"--containerd-version {asked!r}: airlock supports containerd 2.3, 2.2, 2.1, 2.0, 1.7" in result.stderr
    assert upstream.server.requests == [] and not (tmp_path / "k8s.tar").exists()


def test_the_supported_table_and_the_builders_pairings_agree():
    assert SUPPORTED == ("2.3", "2.2", "2.1", "2.0", "1.7")
    assert {f"{major}.{minor}" for major, minor in artifacts.CONTAINERD_RELEASES} == set(SUPPORTED)
    for patch, runc in artifacts.CONTAINERD_RELEASES.values():
        assert minor_of(patch) in artifacts.CONTAINERD_RELEASES and runc.startswith("v1.")
    assert [config_version(patch) for patch, _ in artifacts.CONTAINERD_RELEASES.values()] == [4, 3, 3, 3, 2]


def test_the_real_containerds_answers_name_their_layout():
    """What `containerd --version` prints, from Debian 12's 1.6 and sid's 2.1 (not from a copy of it)."""
    require("containerd")
    answers = {"debian-12": subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout,
               "sid": subprocess.run([sid_programs() / "containerd", "--version"], capture_output=True, text=True, check=True).stdout}  # fmt: skip
    assert minor_of(release_in(answers["debian-12"])) == (1, 6) and config_version(release_in(answers["debian-12"])) == 2
    assert minor_of(release_in(answers["sid"])) == (2, 1) and config_version(release_in(answers["sid"])) == 3
    assert release_in("containerd github.com/containerd/containerd/v2 v2.3.4 db8809540e1a7a9da5d518876894933ff55692ab\n") == "2.3.4"
    assert release_in("ctr github.com/containerd/containerd/v2 2.1.9+unknown\n") == "2.1.9+unknown"
    with pytest.raises(NodeError, match="names no containerd release"):
        release_in("containerd: command not found\n")


@pytest.mark.parametrize("written_for, applied", [("1.7.34", True), ("2.1.9", False)])
def test_real_containerd_1_6_applies_only_a_version_2_config(tmp_path, written_for, applied):
    """Debian 12's containerd 1.6 (end of life 2025-08-23, not a supported node runtime) starts on a version-3 file without a
    word, and its CRI plugin runs on defaults: another pause tag, no config_path. So a 1.x node only ever gets version 2."""
    import re

    from installer.render.containerd_config import merge
    from tests.containerd import Containerd, private_config

    require("containerd", "ctr")
    config = merge(None, "/etc/containerd/certs.d", "registry.k8s.io/pause:3.10", True, written_for).config
    root = tmp_path / "ctrd"
    with Containerd(root, config_text=private_config(config, root, root / "certs.d")) as containerd:
        assert containerd.release.startswith("1.6.")
        started = next(line for line in containerd.log_text().splitlines() if "Start cri plugin with config" in line)
    sandbox = re.search(r"SandboxImage:(\S*)", started).group(1)
    config_path = re.search(r"ConfigPath:(\S*)", started).group(1)
    if applied:
        assert (sandbox, config_path) == ("registry.k8s.io/pause:3.10", str(root / "certs.d"))
    else:
        assert sandbox != "registry.k8s.io/pause:3.10" and config_path == ""


def test_dry_run_names_the_layout_it_would_write(node_bundle, keys, tmp_path):
    """Under --root the bundle's containerd decides: the default bundle's 2.3.4 reads version 4."""
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "advertiseAddress": "192.0.2.10", "registry": {"listen": "127.0.0.1:5000"}}))
    result = airlock_node("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "root", "--config", config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would write containerd config.toml version 4 for containerd 2.3.4 (bundle.json)" in result.stderr + result.stdout


@pytest.mark.parametrize("runtime", ["debian-12", "sid"])
def test_on_a_node_its_own_containerd_decides_the_layout(node_bundle, keys, tmp_path, runtime):
    """Without --root (a dry run: nothing is written) the containerd on PATH is asked, not the bundle's 2.3.4."""
    import os
    import shutil

    require("containerd")
    programs = sid_programs() if runtime == "sid" else None
    path = f"{programs}:{os.environ['PATH']}" if programs else os.environ["PATH"]
    binary = shutil.which("containerd", path=path)
    release = release_in(subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout)
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "registry": {"listen": "127.0.0.1:5000"}}))
    result = airlock_node("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--config", config, "--dry-run", env={"PATH": path})
    assert result.returncode == 0, result.stderr
    # The layout is the node file's own version (kept), at most what this containerd reads.
    output = result.stdout + result.stderr  # --dry-run prints its plan on stdout
    layouts = [line for line in output.splitlines() if "would write containerd config.toml version" in line]
    assert len(layouts) == 1 and layouts[0].endswith(f"for containerd {release} ({binary})"), layouts
    assert int(layouts[0].split("version ")[1].split()[0]) <= config_version(release)
    unsupported = f"WARNING containerd {release} ({binary}) is not a release airlock supports"
    assert (unsupported in output) == (runtime == "debian-12")


def test_init_refuses_a_drop_in_that_would_undo_airlocks_config(node_bundle, keys, tmp_path):
    """containerd 2.3's own default config imports /etc/containerd/conf.d/*.toml and merges each file over config.toml:
    a site drop-in holding mirrors would meet airlock's config_path there. init names the file and leaves config.toml."""
    from pathlib import Path

    root = tmp_path / "root"
    conf_d = root / "etc/containerd/conf.d"
    conf_d.mkdir(parents=True)
    default = (Path(__file__).parent / "data/containerd/default-2.3.toml").read_text()
    (root / "etc/containerd/config.toml").write_text(default)
    (conf_d / "10-runtime.toml").write_text("version = 4\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n")
    (conf_d / "20-site.toml").write_text("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']\n  endpoint = ['https://harbor.corp.example']\n")
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "advertiseAddress": "192.0.2.10", "registry": {"listen": "127.0.0.1:5000"}}))
    init = ["init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
            "--ignore-preflight-errors", "all", "--skip-phases", "images,kubeadm-init,cni,done"]  # fmt: skip
    result = airlock_node(*init)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "/etc/containerd/conf.d/20-site.toml sets plugins.'io.containerd.cri.v1.images'.registry.mirrors" in last, result.stderr
    assert "hosts.toml" in last and "Traceback" not in result.stderr
    assert (root / "etc/containerd/config.toml").read_text() == default
    assert not (root / "etc/containerd/config.toml.airlock-backup").exists()
    # Moved to hosts.toml as the line says: init goes on, and the other drop-in stays the operator's.
    (conf_d / "20-site.toml").unlink()
    result = airlock_node(*init)
    assert result.returncode == 0, result.stderr
    assert "writing containerd config.toml version 4 for containerd 2.3.4 (bundle.json)" in result.stderr


DPKG_STATUS = """Package: runc
Status: install ok installed
Version: 1.1.5+ds1-1+deb12u1

Package: containerd
Status: install ok installed
Priority: optional
Version: 1.7.24~ds1-3
Description: open and reliable container runtime
 Version: 9.9.9 (a description line, not the field)
"""


@pytest.mark.parametrize(
    "status, layout, source",
    [
        (DPKG_STATUS, "version 2 for containerd 1.7.24~ds1-3", "var/lib/dpkg/status"),
        (DPKG_STATUS.replace("Package: containerd", "Package: containerd.io").replace("1.7.24~ds1-3", "1:2.1.4-1~debian.12~bookworm"),
         "version 3 for containerd 2.1.4-1~debian.12~bookworm", "var/lib/dpkg/status"),
        (DPKG_STATUS.replace("install ok installed\nPriority", "deinstall ok config-files\nPriority"), "version 4 for containerd 2.3.4", "bundle.json"),
        (None, "version 4 for containerd 2.3.4", "bundle.json"),
    ],
)  # fmt: skip
def test_under_root_a_golden_images_packaged_containerd_decides_the_layout(node_bundle, keys, tmp_path, status, layout, source):
    """A golden image holding its distribution's containerd (kept by the binaries phase): its dpkg database names the
    release, and a new config.toml takes the layout that release reads, not the bundle's 2.3.4 (version 4)."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/containerd").write_bytes(b"\x7fELF golden image's own")
    if status is not None:
        (root / "var/lib/dpkg").mkdir(parents=True)
        (root / "var/lib/dpkg/status").write_text(status)
    config = tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "cp1", "advertiseAddress": "192.0.2.10", "registry": {"listen": "127.0.0.1:5000"}}))
    result = airlock_node("init", node_bundle, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config, "--dry-run")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    expected_source = str(root / source) if source != "bundle.json" else "bundle.json"
    assert f"would write containerd config.toml {layout} ({expected_source})" in output, output[-3000:]
    assert "would keep: containerd is already on this node" in output
    # Nothing names the root's containerd: the bundle's release is assumed, and said so.
    assert ("is the root's own containerd, which is not run under --root" in output) == (source == "bundle.json")
