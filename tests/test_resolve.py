"""Version requests: labels are looked up, exact versions never."""

import pytest

from builder.errors import ResolveError
from builder.resolve import parse_request, resolve


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("stable", "label", "stable"),
        ("stable-1", "label", "stable-1"),
        ("stable-1.36", "label", "stable-1.36"),
        ("latest", "label", "latest"),
        ("latest-1.36", "label", "latest-1.36"),
        ("v1.36.4", "exact", "v1.36.4"),
        ("1.36.4", "exact", "v1.36.4"),
        ("v1.32.0-rc.1", "exact", "v1.32.0-rc.1"),
    ],
)
def test_accepted_requests(text, kind, value):
    assert parse_request(text) == (kind, value)


@pytest.mark.parametrize("text", ["", "stable-x", "v1.31", "1.31", "stable-1.36.4", "head", "vv1.36.4", "stable-1.36/../x"])
def test_refused_requests(text):
    with pytest.raises(ResolveError, match="is not a version or label"):
        parse_request(text)


def test_exact_versions_are_never_looked_up():
    def read_label(label):
        raise AssertionError(f"looked up {label}")

    assert resolve("1.36.4", read_label).version == "v1.36.4"


def test_labels_must_hold_a_version_of_their_minor():
    assert resolve("stable-1.36", lambda label: b"v1.36.4\n").version == "v1.36.4"
    with pytest.raises(ResolveError, match="not in that minor"):
        resolve("stable-1.36", lambda label: b"v1.30.9\n")
    with pytest.raises(ResolveError, match="not a version like"):
        resolve("stable", lambda label: b"<html>")
    with pytest.raises(ResolveError, match="not a version like"):
        resolve("stable", lambda label: b"1.36.4")
