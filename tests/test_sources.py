"""One verifier for every source: the hostile-bundle corpus (tests/hostile.py) through a bundle file, a split
bundle's parts and a registry artifact, each read by bundle/verify.py `verify_stream`, with the same verdicts.

A registry serves the signed head and then members by the digest bundle.json names, so what only a tar stream
can carry (a member bundle.json does not list, a second copy, framing damage) has no way to reach a node from one;
`STREAM_ONLY` names those cases, and for them the test says what the registry refuses instead, if anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bundle.errors import AirlockError
from bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
from bundle.source import open_source
from bundle.trust import load_trusted_keys
from bundle.verify import verify_stream
from tests.hostile import cases, standard
from tests.upstream import free_port

CASES = [case for case in cases() if case.suffix == ".tar" and not case.node_only]  # compression is a file's, not a tar's
TAG = "hostile-5"
ARTIFACT_TYPE = "application/vnd.airlock.bundle.v1"


class ArtifactRegistryDouble:
    """A test double of an OCI registry holding one bundle artifact: `GET /v2/airlock/bundle/manifests/TAG` and
    `GET /v2/airlock/bundle/blobs/DIGEST` (with `Range: bytes=N-`), 404 for anything else, as distribution answers."""

    def __init__(self, artifact: bytes, blobs: dict[str, bytes]):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                prefix = "/v2/airlock/bundle/"
                if self.path == f"{prefix}manifests/{TAG}":
                    return self.answer(200, artifact, "application/vnd.oci.image.manifest.v1+json")
                digest = self.path[len(prefix + "blobs/") :] if self.path.startswith(prefix + "blobs/") else None
                if digest not in blobs:
                    return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                data = blobs[digest]
                start = int(self.headers["Range"][len("bytes=") : -1]) if self.headers.get("Range") else 0
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    data = data[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def answer(self, status: int, data: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def as_artifact(data: bytes) -> tuple[bytes, dict[str, bytes]] | None:
    """What `airlock push` would have put in a registry for these tar bytes: the artifact manifest and its blobs by
    digest, each listed member's blob being the bytes the tar holds under that path. None when the tar has no head
    (its first two members are not bundle.json and its signature) to push."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            found = [(member.name, archive.extractfile(member).read() if member.isreg() else None) for member in archive.getmembers()]
    except (tarfile.TarError, OSError, ValueError, OverflowError):
        return None
    if [name for name, _ in found[:2]] != [MANIFEST_NAME, SIGNATURE_NAME]:
        return None
    (_, manifest_bytes), (_, signature) = found[:2]
    head = [(MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature)]
    blobs = {"sha256:" + hashlib.sha256(blob).hexdigest(): blob for _, blob in head}
    layers = [{"digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob), "annotations": {"org.opencontainers.image.title": title}}
              for title, blob in head]
    try:
        listed = Manifest.parse(manifest_bytes).files
    except AirlockError:
        listed = ()  # the node refuses it before asking for any member
    held = {}
    for name, content in found[2:]:
        if content is not None:
            held.setdefault(name, content)
    for entry in listed:
        if entry.path in held:
            blobs.setdefault("sha256:" + entry.sha256, held[entry.path])
    document = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2},
                "layers": layers}
    return json.dumps(document).encode(), blobs


def verdict(run) -> tuple[str, str]:
    """("accepted", "") or ("refused", what the refusal names: a member's path, or "head" for bundle.json and its signature)."""
    try:
        run()
    except AirlockError as error:
        member = getattr(error, "member", None)
        return "refused", "head" if member in (None, MANIFEST_NAME, SIGNATURE_NAME) else member
    return "accepted", ""


def verdict_of(opened, trusted) -> tuple[tuple[str, str], list[str]]:
    """The verdict of verify_stream over the source `opened()` gives, and the refusal's message if there is one."""
    messages = []

    def run():
        with opened() as source:
            try:
                verify_stream(source, trusted)
            except AirlockError as error:
                messages.append(str(error))
                raise

    return verdict(run), messages


@pytest.fixture(scope="module")
def signing(keys):
    private = serialization.load_pem_private_key((keys["ed25519"] / "airlock.key").read_bytes(), None)
    return private, load_trusted_keys([keys["ed25519"] / "airlock.pub"])


def through_file(data: bytes, directory: Path, trusted) -> str:
    path = directory / "bundle.tar"
    path.write_bytes(data)
    return verdict_of(lambda: open_source(path, trusted), trusted)


def through_parts(data: bytes, directory: Path, trusted, private) -> tuple:
    from builder.split import split_bundle

    whole = directory / "whole" / "k8s.tar"
    whole.parent.mkdir()
    whole.write_bytes(data)
    part_size = max(4096, -(-len(data) // 50))  # a few parts, many for the large cases, never over the 999 a split allows
    split = split_bundle(whole, directory / "parts", part_size, None)
    listing = split.listing
    listing.with_name(listing.name + ".sig").write_bytes(private.sign(listing.read_bytes()))
    assert len(list((directory / "parts").glob("k8s.tar.part*"))) == max(1, -(-len(data) // part_size)) > 1 or len(data) <= part_size
    return verdict_of(lambda: open_source(listing, trusted), trusted)


def through_registry(data: bytes, trusted) -> tuple:
    from installer.remote import Origin, RegistrySource

    pushed = as_artifact(data)
    if pushed is None:
        return ("unpushable", ""), []
    double = ArtifactRegistryDouble(*pushed)
    source = RegistrySource(Origin.parse(double.url, insecure=True), tag=TAG, attempts=1)
    try:
        return verdict_of(lambda: contextlib.nullcontext(source), trusted)
    finally:
        source.close()
        double.close()


# Only a tar stream can carry these. What a registry holding "the same bundle" does instead:
UNPUSHABLE = {  # the tar has no whole head (bundle.json, then its signature) to push: there is no artifact
    "member-before-signature", "manifest-not-first", "no-signature", "not-a-tar", "empty-file",
    "truncated-in-manifest", "truncated-after-signature", "truncated-mid-member",
    "size-base256-negative", "size-base256-huge", "size-pax-negative", "size-pax-plus", "size-pax-underscore", "size-pax-huge",
}
FRAMING = {  # the defect is in the tar around the listed members: a registry serves only what bundle.json lists, by digest
    "traversal-unlisted", "traversal-pax-path", "symlink", "hardlink", "char-device", "block-device", "fifo", "directory",
    "gnu-longname", "pax-global-header", "duplicate-member", "unlisted-member", "truncated-at-end-marker", "trailing-garbage",
    "pax-length-negative", "pax-length-past-end",
}
STREAM_ONLY = {
    **{name: ("unpushable", "") for name in UNPUSHABLE},
    **{name: ("accepted", "") for name in FRAMING},
    # a reader that skips the corrupt header (tarfile) loses the member behind it; the registry then lacks it (404)
    "corrupt-header": ("refused", "images/index.json"),
}


def test_the_stream_only_cases_are_cases_of_the_corpus():
    assert set(STREAM_ONLY) <= {case.name for case in CASES} and not UNPUSHABLE & FRAMING


def test_the_good_bundle_is_accepted_through_every_source(signing, tmp_path):
    private, trusted = signing
    data = standard(private)
    (tmp_path / "file").mkdir()
    (tmp_path / "parts").mkdir()
    assert through_file(data, tmp_path / "file", trusted)[0] == ("accepted", "")
    assert through_parts(data, tmp_path / "parts", trusted, private)[0] == ("accepted", "")
    assert through_registry(data, trusted)[0] == ("accepted", "")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_bundle_gets_the_same_verdict_from_every_source(case, signing, tmp_path):
    """File and parts: refused, naming the same member, in the corpus's words. Registry: the same verdict, unless
    the defect is one only a tar stream can carry (STREAM_ONLY)."""
    private, trusted = signing
    data = case.make(private)
    (tmp_path / "file").mkdir()
    (tmp_path / "parts").mkdir()
    from_file, file_messages = through_file(data, tmp_path / "file", trusted)
    assert from_file[0] == "refused" and case.expect in file_messages[0], file_messages
    if data:
        from_parts, parts_messages = through_parts(data, tmp_path / "parts", trusted, private)
        assert from_parts == from_file and case.expect in parts_messages[0], parts_messages
    else:
        with pytest.raises(AirlockError, match="needs 1 to 999 parts"):  # nothing to split: there are no parts of an empty file
            through_parts(data, tmp_path / "parts", trusted, private)
    from_registry, registry_messages = through_registry(data, trusted)
    assert from_registry == STREAM_ONLY.get(case.name, from_file), registry_messages


def test_the_signed_head_is_checked_once_and_held_to_what_was_admitted(signing, tmp_path):
    """The verify phase decides on the head (bundle/admission.py); unpack's verify_stream holds the source to that
    very head and does not check the signature again: with no trusted key at all it still reads the members, and a
    head that differs from the admitted one is refused."""
    from bundle.errors import BundleError
    from bundle.trust import TrustError
    from bundle.verify import check_head

    private, trusted = signing
    path = tmp_path / "bundle.tar"
    path.write_bytes(standard(private))
    with open_source(path, trusted) as source:
        admitted = check_head(*source.signed_head(), trusted)
    assert admitted.signature and admitted.manifest_bytes.startswith(b"{")
    with open_source(path) as source:
        assert verify_stream(source, [], admitted=admitted) == admitted
    with open_source(path) as source, pytest.raises(TrustError):
        verify_stream(source, [])
    other = tmp_path / "other.tar"
    other.write_bytes(standard(private, manifest=dataclasses.replace(admitted.manifest, serial=6)))  # signed too, by the same key
    with open_source(other) as source, pytest.raises(BundleError, match="changed since it was verified"):
        verify_stream(source, trusted, admitted=admitted)


def test_a_member_from_a_bundle_file_is_written_to_disk_once(node_bundle, keys, tmp_path):
    """Measured with strace, as for `--from` (tests/test_from_registry.py): every byte `init` writes from a bundle file,
    summed per member over the files its bytes go to (a staged copy or its temporary, a store partial, the store blob).
    Each member is written once in all; the store then holds it, whole."""
    import re
    import subprocess

    from tests.conftest import AIRLOCK, require
    from tests.test_from_registry import bytes_written
    from tests.test_install import IGNORE

    require("strace")
    with tarfile.open(node_bundle) as archive:
        carried = {item.name: archive.extractfile(item).read() for item in archive if item.isfile() and item.name not in (MANIFEST_NAME, SIGNATURE_NAME)}
    by_digest = {hashlib.sha256(data).hexdigest(): data for data in carried.values()}
    root, trace, config = tmp_path / "root", tmp_path / "trace", tmp_path / "node.yaml"
    config.write_text(json.dumps({"nodeName": "node1"}))
    syscalls = "trace=write,pwrite64,writev,pwritev,pwritev2,sendfile,sendfile64,copy_file_range"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-y", "-s", "0", "-e", syscalls, "-o", str(trace), AIRLOCK, "init", str(node_bundle),
         "--key", str(keys["ed25519"] / "airlock.pub"), "--root", str(root), "--config", str(config), "--ignore-preflight-errors", IGNORE,
         "--skip-phases", "binaries,runtime,registry,kubelet,images,kubeadm-init,cni,kube-vip,done"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    airlock = root / "var/lib/airlock"
    store = airlock / "store/blobs/sha256"
    for digest, data in by_digest.items():
        assert (store / digest).read_bytes() == data, digest
    # A file's bytes belong to the member it is named after: a blob or a partial by digest, a staged path, or its temporary.
    partials = {hashlib.sha256(f"sha256:{digest}".encode()).hexdigest(): digest for digest in by_digest}
    staged = {name: hashlib.sha256(data).hexdigest() for name, data in carried.items()}
    per_member: dict[str, int] = {}
    for path, count in bytes_written(trace).items():
        if not path.startswith(str(airlock)):
            continue
        relative = path[len(str(airlock)) + 1 :]
        name = relative.rsplit("/", 1)[-1]
        digest = by_digest.keys() & {name} or {partials.get(name)} - {None}
        if not digest and relative.startswith("staging/"):
            member = relative.split("/", 2)[-1]
            if temporary := re.match(r"^\.(.+)\.[0-9a-f]{16}\.partial$", name):  # bundle/atomic.py's temporary names
                member = str(Path(member).with_name(temporary.group(1)))
            digest = {staged[member]} if member in staged else set()
        for found in digest:
            per_member[found] = per_member.get(found, 0) + count
    twice = {digest: count for digest, count in per_member.items() if count != len(by_digest[digest])}
    assert not twice, {digest: (count, len(by_digest[digest])) for digest, count in twice.items()}
    assert per_member.keys() == by_digest.keys()
