"""The bundle format refuses anything it was not written to hold."""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bundle.errors import BundleError, TrustError
from bundle.manifest import FileEntry, Manifest
from bundle.source import TarSource
from bundle.trust import TrustedKey, algorithm_of, key_id
from bundle.verify import verify_stream

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PRIVATE = ed25519.Ed25519PrivateKey.generate()
TRUSTED = [TrustedKey(key_id(PRIVATE.public_key()), algorithm_of(PRIVATE.public_key()), PRIVATE.public_key(), "test")]


def manifest_for(members: dict[str, bytes], **changes) -> Manifest:
    files = tuple(FileEntry(path, hashlib.sha256(data).hexdigest(), len(data), 0o644) for path, data in members.items())
    values = dict(
        name="t",
        serial=1,
        created=NOW - timedelta(days=1),
        expires=NOW + timedelta(days=1),
        requested="v1.36.4",
        version="v1.36.4",
        platforms=("linux/amd64",),
        components={},
        files=files,
        images=(),
    )
    values.update(changes)
    return Manifest(**values)


def tar_of(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                archive.addfile(info, io.BytesIO(entry[1]))
    return buffer.getvalue()


def signed(manifest: Manifest, members: list) -> bytes:
    data = manifest.to_json()
    return tar_of([("bundle.json", data), ("bundle.json.sig", PRIVATE.sign(data)), *members])


def check(data: bytes) -> None:
    verify_stream(TarSource(io.BytesIO(data)), TRUSTED, now=NOW)


GOOD = {"bin/a": b"alpha", "images/oci-layout": b"beta"}


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_a_good_bundle_verifies():
    check(signed(manifest_for(GOOD), list(GOOD.items())))


@pytest.mark.parametrize(
    "member, message",
    [
        (special("bin/a", tarfile.SYMTYPE, "/etc/shadow"), "symbolic link"),
        (special("bin/a", tarfile.LNKTYPE, "bundle.json"), "hard link"),
        (special("bin/a", tarfile.CHRTYPE), "character device"),
        (special("bin/a", tarfile.BLKTYPE), "block device"),
        (special("bin/a", tarfile.FIFOTYPE), "fifo"),
        (special("bin", tarfile.DIRTYPE), "directory"),
    ],
)
def test_links_devices_fifos_and_directories_are_refused(member, message):
    with pytest.raises(BundleError, match=message):
        check(signed(manifest_for(GOOD), [member, *GOOD.items()]))


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "bin/../../x", "bin//a", "./bin/a"])
def test_unsafe_member_names_are_refused(path):
    with pytest.raises(BundleError):
        check(signed(manifest_for(GOOD), [(path, b"alpha"), *GOOD.items()]))
    with pytest.raises(BundleError):
        check(signed(manifest_for({path: b"alpha"}), [(path, b"alpha")]))


def test_unlisted_missing_duplicate_and_resized_members_are_refused():
    manifest = manifest_for(GOOD)
    with pytest.raises(BundleError, match="not listed"):
        check(signed(manifest, [*GOOD.items(), ("extra", b"")]))
    with pytest.raises(BundleError, match="missing"):
        check(signed(manifest, [("bin/a", b"alpha")]))
    with pytest.raises(BundleError, match="twice"):
        check(signed(manifest, [*GOOD.items(), ("bin/a", b"alpha")]))
    with pytest.raises(BundleError, match="bytes but bundle.json lists"):
        check(signed(manifest, [("bin/a", b"alphaX"), ("images/oci-layout", b"beta")]))


def test_order_signature_and_dates_are_enforced():
    manifest = manifest_for(GOOD)
    data = manifest.to_json()
    with pytest.raises(BundleError, match="not an airlock bundle: its first member is"):
        check(tar_of([("bin/a", b"alpha"), ("bundle.json", data), ("bundle.json.sig", PRIVATE.sign(data))]))
    with pytest.raises(BundleError, match="second member must be bundle.json.sig"):
        check(tar_of([("bundle.json", data), *GOOD.items()]))
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(TrustError, match="trusted key"):
        check(tar_of([("bundle.json", data), ("bundle.json.sig", other.sign(data)), *GOOD.items()]))
    expired = manifest_for(GOOD, expires=NOW - timedelta(seconds=1))
    with pytest.raises(TrustError, match="expired"):
        check(signed(expired, list(GOOD.items())))


def test_manifest_parser_is_strict():
    good = manifest_for(GOOD).to_json()
    assert Manifest.parse(good) == manifest_for(GOOD)
    with pytest.raises(BundleError, match="twice"):
        Manifest.parse(good[:-1] + b',"name":"again"}')
    with pytest.raises(BundleError, match="schema"):
        Manifest.parse(good.replace(b"airlock.bundle/v1", b"airlock.bundle/v9"))
    with pytest.raises(BundleError, match="serial"):
        Manifest.parse(good.replace(b'"serial":1', b'"serial":true'))
    with pytest.raises(BundleError, match="not valid JSON"):
        Manifest.parse(b"{")
