"""Version requests: parsed once into typed values; labels are looked up, exact versions never."""

import pytest

from builder.errors import ResolveError
from builder.resolve import VersionRequest, resolve
from bundle.version import KubernetesVersion, VersionError


@pytest.mark.parametrize(
    "text, label, exact, minor",
    [
        ("stable", "stable", None, None),
        ("stable-1", "stable-1", None, None),
        ("stable-1.36", "stable-1.36", None, 36),
        ("latest", "latest", None, None),
        ("latest-1.36", "latest-1.36", None, 36),
        ("v1.36.4", None, "v1.36.4", 36),
        ("1.36.4", None, "v1.36.4", 36),
        (" v1.32.0-rc.1 ", None, "v1.32.0-rc.1", 32),
    ],
)
def test_accepted_requests(text, label, exact, minor):
    request = VersionRequest.parse(text)
    assert (request.label, str(request.exact) if request.exact else None, request.minor) == (label, exact, minor)


@pytest.mark.parametrize("text", ["", "stable-x", "v1.31", "1.31", "stable-1.36.4", "head", "vv1.36.4", "stable-1.36/../x", None, 36])
def test_refused_requests(text):
    with pytest.raises(ResolveError, match="is not a version or label"):
        VersionRequest.parse(text)


def test_a_kubernetes_version_is_parsed_once_and_typed():
    version = KubernetesVersion.parse("1.36.4")
    assert (version.major, version.minor, version.patch, str(version)) == (1, 36, 4, "v1.36.4")
    assert version == KubernetesVersion.parse("v1.36.4") and hash(version) == hash(KubernetesVersion(1, 36, 4))
    ordered = ["v1.9.9", "v1.36.0-rc.1", "v1.36.0", "v1.36.4", "v1.37.0"]
    assert sorted(KubernetesVersion.parse(text) for text in reversed(ordered)) == [KubernetesVersion.parse(text) for text in ordered]
    for bad in ("v1.36", "1.36.4\nx", "v1.36.4 junk", b"v1.36.4", None, "x" * 500):
        with pytest.raises(VersionError) as caught:
            KubernetesVersion.parse(bad, "bundle.json version")
        message = str(caught.value)
        assert message.startswith("bundle.json version: ") and "like v1.36.4" in message and "\n" not in message and len(message) < 150


def test_exact_versions_are_never_looked_up():
    def read_label(label):
        raise AssertionError(f"looked up {label}")

    assert resolve(VersionRequest.parse("1.36.4"), read_label).version == KubernetesVersion(1, 36, 4)


def test_labels_must_hold_a_version_of_their_minor():
    resolution = resolve(VersionRequest.parse("stable-1.36"), lambda label: b"v1.36.4\n")
    assert (resolution.requested, resolution.version) == ("stable-1.36", KubernetesVersion(1, 36, 4))
    with pytest.raises(ResolveError, match="not in that minor"):
        resolve(VersionRequest.parse("stable-1.36"), lambda label: b"v1.30.9\n")
    with pytest.raises(ResolveError, match="not in that major"):
        resolve(VersionRequest.parse("stable-1"), lambda label: b"v2.0.0\n")
    with pytest.raises(ResolveError, match="not a version like"):
        resolve(VersionRequest.parse("stable"), lambda label: b"<html>")
    with pytest.raises(ResolveError, match="not a version like"):
        resolve(VersionRequest.parse("stable"), lambda label: b"1.36.4")
