"""The node's typed values: state.json's `Installed` record and the install options of init/join/upgrade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from installer.cli import InstallOptions, Source
from installer.node import NodeError, Paths
from installer.state import Installed, State
from tests.conftest import airlock_node

# state.json as airlock has written it (runner.py, json.dumps indent=2 sort_keys=True): the format on disk is kept.
WRITTEN = """{
  "installed": {
    "command": "init",
    "name": "k8s",
    "registries": [
      "http://10.0.0.5:5000"
    ],
    "registry": "http://10.0.0.5:5000",
    "registry_ca": "",
    "role": "first-control-plane",
    "serial": 100,
    "sha256": "%s",
    "version": "v1.36.4"
  },
  "run": null
}""" % ("ab" * 32)


def state_root(tmp_path: Path, text: str) -> Paths:
    paths = Paths(tmp_path / "root")
    paths.state_dir.mkdir(parents=True)
    paths.state_file.write_text(text)
    return paths


def test_a_state_file_as_airlock_wrote_it_reads_into_the_record_and_writes_back_byte_for_byte(tmp_path):
    paths = state_root(tmp_path, WRITTEN)
    state = State.load(paths)
    assert state.installed == Installed(100, "ab" * 32, "v1.36.4", "k8s", "init", "first-control-plane", "http://10.0.0.5:5000", ("http://10.0.0.5:5000",), "")
    assert state.installed.control_plane
    state.save(paths)
    assert paths.state_file.read_text() == WRITTEN


def test_a_state_file_of_an_airlock_before_registries_is_read_and_gains_the_list(tmp_path):
    older = json.loads(WRITTEN)
    del older["installed"]["registries"]
    paths = state_root(tmp_path, json.dumps(older))
    state = State.load(paths)
    assert state.installed.registries == ()
    state.save(paths)
    assert json.loads(paths.state_file.read_text())["installed"] == {**older["installed"], "registries": []}


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("serial", "100", "installed.serial is a string, not a whole number"),
        ("serial", True, "installed.serial is true/false, not a whole number"),
        ("sha256", None, "installed.sha256 is null, not a string"),
        ("version", 136, "installed.version is a number, not a string"),
        ("registries", "http://10.0.0.5:5000", "installed.registries is a string, not a list of strings"),
        ("role", "admin", "installed.role is 'admin', not one of first-control-plane, control-plane, worker"),
    ],
)
def test_a_wrong_typed_field_is_refused_in_one_line_naming_the_file_and_field(tmp_path, field, value, said):
    document = json.loads(WRITTEN)
    document["installed"][field] = value
    paths = state_root(tmp_path, json.dumps(document))
    with pytest.raises(NodeError) as refused:
        State.load(paths)
    message = str(refused.value)
    assert message.startswith(f"{paths.state_file}: {said}") and "\n" not in message


def test_status_stops_on_a_wrong_typed_state_file_with_one_line(tmp_path):
    """`airlock-node status` reads state.json by type: a serial written as text is named, not shown as if it were a serial."""
    document = json.loads(WRITTEN)
    document["installed"]["serial"] = "100"
    paths = state_root(tmp_path, json.dumps(document))
    result = airlock_node("status", "--root", paths.root)
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip() == (
        f"airlock: error: {paths.state_file}: installed.serial is a string, not a whole number; "
        "restore state.json from a backup, or reset the node and install again"
    )
    assert "Traceback" not in result.stderr


def test_install_options_are_one_frozen_value_with_the_comma_lists_parsed_once():
    source = Source(Path("k8s.tar"), None, None, False, None)
    options = InstallOptions.from_flags(
        "join", source, [Path("a.pub")], " preflight, ,images", "Swap,all,", root=Path("/"), dry_run=False, config=None,
        containerd_address="/run/containerd/containerd.sock", allow_downgrade=False, control_plane=True,
    )
    assert options.skip_phases == ("preflight", "images") and options.ignore_preflight_errors == ("Swap", "all")
    assert options.keys == (Path("a.pub"),) and options.control_plane and not options.drain and options.kubeconfig is None
    with pytest.raises(AttributeError):
        options.dry_run = True  # type: ignore[misc]
    assert InstallOptions.from_flags("init", source, None, "", "", root=Path("/"), dry_run=True, config=None, containerd_address="x",
                                     allow_downgrade=False).keys is None


def test_the_node_reads_a_kubernetes_version_label_one_way():
    """bundle.json's version, state.json's and the API server's go through bundle/version.py's KubernetesVersion: text
    after the release is refused in one line instead of being cut off, and a release candidate orders before its release."""
    from bundle.version import VersionError
    from installer import minors
    from installer.upgradecheck import check_skew

    assert minors.of("v1.36.4").number == 36 and minors.of("1.37.0-rc.1").number == 37
    with pytest.raises(VersionError) as refused:
        minors.of("v1.36.4; rm -rf /")
    assert str(refused.value) == "the bundle's Kubernetes version: 'v1.36.4; rm -rf /' is not a Kubernetes version like v1.36.4"
    with pytest.raises(VersionError, match="^the bundle's Kubernetes version: 'v1.37.0junk' is not"):
        check_skew("v1.36.4", "v1.37.0junk", "worker", None)
    with pytest.raises(VersionError, match="^state.json's installed version: '1.36' is not"):
        check_skew("1.36", "v1.37.0", "worker", None)
    with pytest.raises(NodeError, match="older than the installed v1.37.0"):
        check_skew("v1.37.0", "v1.37.0-rc.1", "first-control-plane", None)
    check_skew("v1.36.4", "v1.37.0", "worker", "v1.37.0+k3s1")  # build metadata does not order versions
