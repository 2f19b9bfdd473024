"""An operator checks a bundle on the node: any altered byte is found and named."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from bundle.tarstream import TarReader
from tests.conftest import airlock, airlock_node, build, node_command


def member_offsets(bundle) -> dict[str, tuple[int, int]]:
    with tarfile.open(bundle) as archive:
        return {m.name: (m.offset_data, m.size) for m in archive.getmembers()}


def flip(path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_verify_accepts_the_bundle(bundle, keys):
    result = airlock_node("verify", bundle, "--key", keys["ed25519"] / "airlock.pub", check=True)
    assert result.stdout.startswith(f"OK {bundle}")
    # A directory of keys is a trust store too.
    airlock_node("verify", bundle, "--key", keys["ed25519"], check=True)


def test_keys_are_private(keys):
    assert stat.S_IMODE(os.stat(keys["ed25519"] / "airlock.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys["ecdsa-p256"] / "airlock.key").st_mode) == 0o600
    again = airlock("keygen", "--out", keys["ed25519"])
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.parametrize("kind", ["bundle.json", "bundle.json.sig", "bin/", "cni/", "images/blobs/", "images/index.json", "sbom.spdx.json"])
def test_a_flipped_byte_in_any_member_is_named(bundle, keys, tmp_path, kind):
    copy = tmp_path / "tampered.tar"
    copy.write_bytes(bundle.read_bytes())
    offsets = member_offsets(copy)
    name = next(n for n in offsets if n == kind or (kind.endswith("/") and n.startswith(kind)))
    start, size = offsets[name]
    flip(copy, start + size // 2)
    result = airlock_node("verify", copy, "--key", keys["ed25519"] / "airlock.pub")
    assert result.returncode == 1
    expected = "bundle.json.sig" if name in ("bundle.json", "bundle.json.sig") else name
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_untrusted_key_is_refused_naming_the_signers_and_the_trusted_fingerprints(bundle, keys):
    from bundle.trust import load_trusted_keys

    signer = load_trusted_keys([keys["ed25519"] / "airlock.pub"])[0].key_id
    trusted = load_trusted_keys([keys["ecdsa-p256"] / "airlock.pub"])[0].key_id
    result = airlock_node("verify", bundle, "--key", keys["ecdsa-p256"] / "airlock.pub")
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("airlock: error:")]
    assert f"signed by key {signer}, which is not trusted here" in line and f"trusted: {trusted}" in line, line


def test_a_signature_that_does_not_verify_under_the_named_trusted_key_says_altered(bundle, keys, tmp_path):
    copy = tmp_path / "resigned.tar"
    copy.write_bytes(bundle.read_bytes())
    offsets = member_offsets(copy)
    start, size = offsets["bundle.json.sig"]
    flip(copy, start + size // 2)
    result = airlock_node("verify", copy, "--key", keys["ed25519"] / "airlock.pub")
    assert result.returncode == 1 and "does not match bundle.json under any trusted key" in result.stderr and "altered" in result.stderr


def test_truncated_and_padded_bundles_are_refused(bundle, keys, tmp_path):
    data = bundle.read_bytes()
    short = tmp_path / "short.tar"
    short.write_bytes(data[: len(data) // 2])
    result = airlock_node("verify", short, "--key", keys["ed25519"] / "airlock.pub")
    assert result.returncode == 1 and ("truncated" in result.stderr or "missing" in result.stderr)
    long = tmp_path / "long.tar"
    long.write_bytes(data + b"garbage")
    result = airlock_node("verify", long, "--key", keys["ed25519"] / "airlock.pub")
    assert result.returncode == 1 and "data follows the end of the archive" in result.stderr


def test_zstd_bundle_verifies(bundle, keys, tmp_path):
    import shutil
    import subprocess

    if shutil.which("zstd") is None:
        pytest.skip("zstd not installed")
    packed = tmp_path / "k8s.tar.zst"
    subprocess.run(["zstd", "-q", "-o", str(packed), str(bundle)], check=True)
    airlock_node("verify", packed, "--key", keys["ed25519"] / "airlock.pub", check=True)


def test_inspect_shows_versions_images_and_signer(bundle, keys):
    text = airlock("inspect", bundle, check=True).stdout
    assert "kubernetes  v1.36.4 (asked for stable-1.36)" in text
    assert "registry.k8s.io/kube-apiserver:v1.36.4" in text
    assert "signature not checked" in text
    document = json.loads(airlock("inspect", bundle, "--output", "json", "--key", keys["ed25519"] / "airlock.pub", check=True).stdout)
    assert document["signature"].startswith("valid")
    assert document["kubernetes"]["version"] == "v1.36.4"


def test_tar_reader_reads_what_python_tarfile_reads(bundle):
    with open(bundle, "rb") as handle:
        reader = TarReader(handle)
        ours = [(h.path, h.size, sum(len(c) for c in reader.content())) for h in reader.members()]
    with tarfile.open(bundle) as archive:
        theirs = [(m.name, m.size, m.size) for m in archive.getmembers()]
    assert ours == theirs


def test_a_bundle_is_read_on_while_a_member_is_still_being_written_and_no_further_than_the_lanes_hold(bundle, keys, monkeypatch):
    """Both cores: the verifier reads the next chunks while the sink still writes an earlier one, and holds at most
    LANE_DEPTH chunks per lane that were read and not yet written (bounded memory)."""
    import threading

    from bundle import verify
    from bundle.source import TarSource
    from bundle.tarstream import CHUNK
    from bundle.trust import load_trusted_keys

    depth = getattr(verify, "LANE_DEPTH", 4)
    monkeypatch.setattr("bundle.source.DELIVERY_CHUNK", CHUNK, raising=False)  # 1 MiB chunks: the bound shows on an 11 MB member
    offsets = member_offsets(bundle)
    biggest = max(offsets, key=lambda name: offsets[name][1])
    start, size = offsets[biggest]
    assert size > (depth + 2) * CHUNK, f"the test bundle's largest member {biggest} is too small to show the lanes"
    ahead = threading.Event()
    written = []
    leads = []

    class Watched:
        def __init__(self, handle):
            self._handle = handle

        def read(self, count=-1):
            data = self._handle.read(count)
            past = self._handle.tell() - start
            if past > 0:
                leads.append(past - sum(written))
            if past > 2 * CHUNK:
                ahead.set()
            return data

    class WaitingSink:
        def write(self, data):
            # On a verifier that writes on its reading thread this wait cannot end: nothing reads while it waits.
            if not written and not ahead.wait(60):
                raise AssertionError("the verifier read nothing further while the sink was writing")
            written.append(len(data))

        def done(self):
            pass

        def abort(self):
            pass

    trusted = load_trusted_keys([keys["ed25519"] / "airlock.pub"])
    with open(bundle, "rb", buffering=0) as handle:
        verify.verify_stream(TarSource(Watched(handle)), trusted, sink=lambda entry: WaitingSink() if entry.path == biggest else None)
    assert sum(written) == size
    # LANE_DEPTH chunks queued, one in the lane's hands, one just read.
    assert max(leads) <= (depth + 2) * CHUNK, max(leads) / CHUNK


def minor_faults(command: list[str]) -> int:
    """Page faults the command took (pages it touched that were not yet its own), as the kernel counts them."""
    probe = "import resource, subprocess, sys\nsubprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt)\n"
    return int(subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True).stdout)


def test_verifying_reuses_the_memory_of_each_chunk(upstream, bundle, keys, tmp_path):
    """A bundle passes through verify 4 MiB at a time. The memory of chunks done with is reused for the next
    member's (bundle/memory.py), not handed back to the kernel at the end of each member and faulted in afresh:
    eight members of 16 MiB more cost few page faults more. Without the reuse: ~130 a MiB here (0.3 s of system
    time over an 830 MB bundle of 40 MB layers)."""
    images = []
    for number in range(8):
        tag = upstream.factory.make(f"registry.k8s.io/airlock-test/chunks-{number}:v1", ("amd64",), payload_bytes=16 << 20)
        upstream.factory.push(tag, upstream.registry, f"airlock-test/chunks-{number}", "v1")
        images += ["--image", f"registry.k8s.io/airlock-test/chunks-{number}:v1"]
    larger = tmp_path / "larger.tar"
    build(upstream, keys, larger, "stable-1.36", tmp_path / "cache", *images, check=True)
    pub = keys["ed25519"] / "airlock.pub"
    small, large = (minor_faults([*node_command(None), "verify", path, "--key", pub]) for path in (bundle, larger))
    more = (larger.stat().st_size - bundle.stat().st_size) >> 20
    assert more >= 120
    assert large - small < 40 * more, f"{large - small} more page faults for {more} MiB more"
