"""The one trust decision (bundle/admission.py), asked without a node or a network; and a registry whose tag
does not name the signed bundle it holds, refused by a node joining `--from` it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from bundle.admission import Accepted, Asked, Installed, Refusal, decide
from bundle.manifest import Manifest
from bundle.trust import load_trusted_keys
from tests.test_from_registry import HostileRegistry, bundle_json, nothing_outside_staging
from tests.test_network_policy import error_line, node_join


@pytest.fixture(scope="module")
def head(node_bundle, keys):
    manifest_bytes, signature, _ = bundle_json(node_bundle)
    return manifest_bytes, signature, Manifest.parse(manifest_bytes), load_trusted_keys([keys["ed25519"] / "airlock.pub"])


def verdict(head, installed=None, now=None, platform="linux/amd64", **asked):
    manifest_bytes, signature, _, trusted = head
    return decide(manifest_bytes, signature, trusted, installed, now, platform, Asked(**{"command": "join", **asked}))


def refusal(result) -> tuple[str, str]:
    assert isinstance(result, Refusal), result
    return result.kind, result.reason


def test_a_signed_bundle_fetched_by_its_own_tag_is_accepted(head):
    _, _, manifest, _ = head
    result = verdict(head, tag=f"{manifest.name}-{manifest.serial}", newest_serial=manifest.serial)
    assert isinstance(result, Accepted) and result.manifest.serial == manifest.serial


def test_a_tag_must_name_the_signed_bundle_it_holds(head):
    _, _, manifest, _ = head
    kind, reason = refusal(verdict(head, tag=f"{manifest.name}-{manifest.serial + 5}"))
    assert kind == "tag" and f"holds a bundle signed as {manifest.name} serial {manifest.serial}" in reason
    kind, _ = refusal(verdict(head, tag=f"other-{manifest.serial}"))
    assert kind == "tag"


def test_a_fresh_node_refuses_a_serial_below_the_newest_it_was_shown(head):
    _, _, manifest, _ = head
    kind, reason = refusal(verdict(head, newest_serial=manifest.serial + 1))
    assert kind == "tag" and f"lists serial {manifest.serial + 1}" in reason
    # An upgrade has its own rule (the installed serial), not the tag list's.
    installed = Installed(manifest.serial - 1, "0" * 64, "v1.35.0", "worker")
    assert isinstance(verdict(head, installed, command="upgrade", newest_serial=manifest.serial + 1), Accepted)


@pytest.mark.parametrize(
    "change, kind",
    [
        ("tampered", "signature"),
        ("expired", "expired"),
        ("platform", "platform"),
        ("initialised", "installed"),
        ("same-for-upgrade", "nothing-to-do"),
        ("older-for-upgrade", "installed"),
        ("fresh-upgrade", "installed"),
    ],
)
def test_each_other_reason_is_named_once(head, change, kind):
    manifest_bytes, signature, manifest, trusted = head
    sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    same = Installed(manifest.serial, sha256, manifest.version)
    newer = Installed(manifest.serial + 1, "1" * 64, manifest.version)
    cases = {
        "tampered": lambda: decide(manifest_bytes.replace(b'"serial":', b'"serial": '), signature, trusted, None, None, "linux/amd64", Asked("join")),
        "expired": lambda: verdict(head, now=manifest.expires + timedelta(seconds=1)),
        "platform": lambda: verdict(head, platform="linux/s390x"),
        "initialised": lambda: verdict(head, same),
        "same-for-upgrade": lambda: verdict(head, same, command="upgrade"),
        "older-for-upgrade": lambda: verdict(head, newer, command="upgrade"),
        "fresh-upgrade": lambda: verdict(head, None, command="upgrade"),
    }
    assert refusal(cases[change]())[0] == kind
    assert datetime.now(UTC) < manifest.expires  # the bundle itself is valid: only `change` made it refused


def test_installed_state_is_read_by_type():
    assert Installed.from_state(None) is None
    assert Installed.from_state({"serial": 3, "sha256": "a" * 64, "version": "v1.36.1", "role": "worker"}) == Installed(3, "a" * 64, "v1.36.1", "worker")
    from bundle.errors import BundleError

    with pytest.raises(BundleError):
        Installed.from_state({"serial": "3", "sha256": "a" * 64})


@pytest.mark.parametrize("how", ["--tag", "newest"])
def test_a_registry_tag_that_names_another_serial_is_refused_by_a_joining_node(how, node_bundle, keys, tmp_path):
    _, _, document = bundle_json(node_bundle)
    registry = HostileRegistry(node_bundle)
    try:
        registry.tag = f"{document['name']}-{document['serial'] + 40}"  # an older signed bundle, offered as a newer one
        root = tmp_path / "root"
        extra = ["--tag", registry.tag] if how == "--tag" else []
        line = error_line(node_join(registry.url, keys, root, tmp_path, "--insecure", *extra))
        assert f"tag {registry.tag} holds a bundle signed as {document['name']} serial {document['serial']}" in line, line
        assert nothing_outside_staging(root)
        manifest_bytes, signature, _ = bundle_json(node_bundle)
        head = {"sha256:" + hashlib.sha256(data).hexdigest() for data in (manifest_bytes, signature)}
        assert {path.rsplit("/", 1)[1] for path, _ in registry.log if "/blobs/" in path} == head  # nothing past the signed head
    finally:
        registry.close()


def test_the_right_tag_still_installs(node_bundle, keys, tmp_path):
    registry = HostileRegistry(node_bundle)
    try:
        _, _, document = bundle_json(node_bundle)
        result = node_join(registry.url, keys, tmp_path / "root", tmp_path, "--insecure", "--tag", registry.tag)
        assert result.returncode == 0, result.stderr
        assert f"bundle {document['name']} serial {document['serial']} from {registry.url}" in result.stderr
    finally:
        registry.close()
