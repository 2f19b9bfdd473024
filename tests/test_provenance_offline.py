"""Signatures carried across the gap and re-verified offline: `verify --provenance` and the install, from the node's pyz.

The hostile bundles here are signed with the operator's key (a build host that lied, or a bug):
bundle.json's signature holds, and only the offline re-check of the carried evidence can refuse them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from builder import sign
from bundle.keyless import Evidence, LogEntry
from bundle.manifest import Manifest
from bundle.provenance import named_records
from tests.conftest import TOOLS, airlock, airlock_node, build, python39, require
from tests.standin.sigstore import KUBERNETES_BINARIES, KUBERNETES_IMAGES
from tests.upstream import LocalUpstream, free_port

MALLORY = ("mallory@example.com", "https://accounts.google.com")


@pytest.fixture(scope="module")
def signed_upstream(tmp_path_factory):
    require(*TOOLS)
    local = LocalUpstream(tmp_path_factory.mktemp("signed-upstream"), versions=("v1.36.4",), labels={"stable-1.36": "v1.36.4"}, signed=True, extra_images={}).start()
    yield local
    local.close()


@pytest.fixture(scope="module")
def signed_bundle(signed_upstream, keys, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signed-bundle") / "k8s.tar"
    build(signed_upstream, keys, out, "v1.36.4", tmp_path_factory.mktemp("cache"), "--cni", "none", "--arch", "amd64", check=True)
    return out


def members_of(bundle: Path) -> tuple[Manifest, dict[str, bytes], list[str]]:
    with tarfile.open(bundle) as archive:
        order = archive.getnames()
        data = {name: archive.extractfile(name).read() for name in order}
    return Manifest.parse(data["bundle.json"]), data, order[2:]


def rebundle(bundle: Path, out: Path, key: Path, changed: dict[str, bytes]) -> Path:
    """The bundle with some members replaced, bundle.json updated to match and signed again with the operator's key."""
    manifest, data, order = members_of(bundle)
    files = tuple(
        replace(entry, sha256=hashlib.sha256(changed[entry.path]).hexdigest(), size=len(changed[entry.path])) if entry.path in changed else entry
        for entry in manifest.files
    )
    manifest_bytes = replace(manifest, files=files).to_json()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in [("bundle.json", manifest_bytes), ("bundle.json.sig", sign.load(key).sign(manifest_bytes))] + [
            (name, changed.get(name, data[name])) for name in order
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    out.write_bytes(buffer.getvalue())
    return out


def evidence_for(upstream: LocalUpstream, data: bytes, identity, **options) -> bytes:
    """The stand-in's signature over `data`, as the Sigstore bundle a build would carry (with its Rekor entry)."""
    signed = upstream.signing.sign(data, identity, **options)
    entry = LogEntry.from_rekor(next(iter(upstream.signing.rekor.entry(signed.log_index).values())), "rekor") if signed.log_index is not None else None
    return Evidence(signed.certificate, signed.signature, hashlib.sha256(data).hexdigest(), entry).to_json()


def record_of(manifest: Manifest, name: str):
    for entry in manifest.files:
        if entry.path == name:
            return entry.provenance
    return next(image.provenance for image in manifest.images if image.reference == name)


def _flipped(upstream, manifest, data):
    kubectl = bytearray(data["bin/linux-amd64/kubectl"])
    kubectl[10] ^= 1
    return {"bin/linux-amd64/kubectl": bytes(kubectl)}


def _evidence(name: str, make):
    def change(upstream, manifest, data):
        return {record_of(manifest, name).evidence: make(upstream, manifest, data)}

    return change


def _entry_for_another_artifact(upstream, manifest, data):
    evidence = Evidence.parse(data[record_of(manifest, "registry.k8s.io/kube-scheduler:v1.36.4").evidence], "evidence")
    other = Evidence.parse(evidence_for(upstream, b"another payload", KUBERNETES_IMAGES), "other")
    return replace(evidence, entry=replace(other.entry, proof=None)).to_json()


def _expired_without_set(upstream, manifest, data):
    payload = data[record_of(manifest, "registry.k8s.io/kube-apiserver:v1.36.4").payload]
    evidence = Evidence.parse(evidence_for(upstream, payload, KUBERNETES_IMAGES, expired=True), "expired")
    return replace(evidence, entry=replace(evidence.entry, signed_entry_timestamp=None, proof=None)).to_json()


def _payload_of_another_image(upstream, manifest, data):
    return {record_of(manifest, "registry.k8s.io/kube-scheduler:v1.36.4").payload: data[record_of(manifest, "registry.k8s.io/kube-proxy:v1.36.4").payload]}


NODE_CASES = {
    "a flipped byte in a binary": (_flipped, "bin/linux-amd64/kubectl", "the signature is over sha256"),
    "a certificate for another identity": (
        _evidence("bin/linux-amd64/kubelet", lambda up, m, d: evidence_for(up, d["bin/linux-amd64/kubelet"], MALLORY)),
        "bin/linux-amd64/kubelet",
        "the certificate is for mallory@example.com",
    ),
    "a certificate from another CA": (
        _evidence("bin/linux-amd64/kubeadm", lambda up, m, d: evidence_for(up, d["bin/linux-amd64/kubeadm"], KUBERNETES_BINARIES, ca=up.signing.rogue)),
        "bin/linux-amd64/kubeadm",
        "does not chain to a certificate authority of the trust root",
    ),
    "a log entry for another artifact": (_evidence("registry.k8s.io/kube-scheduler:v1.36.4", _entry_for_another_artifact), "registry.k8s.io/kube-scheduler:v1.36.4", "is for another artifact"),
    "an expired certificate without a log timestamp": (
        _evidence("registry.k8s.io/kube-apiserver:v1.36.4", _expired_without_set),
        "registry.k8s.io/kube-apiserver:v1.36.4",
        "has no signed entry timestamp (SET)",
    ),
    "the payload of another image": (_payload_of_another_image, "registry.k8s.io/kube-scheduler:v1.36.4", "the signed payload is for the image"),
}


def spoiled(case: str, signed_upstream, signed_bundle, keys, tmp_path) -> Path:
    change, _, _ = NODE_CASES[case]
    manifest, data, _ = members_of(signed_bundle)
    return rebundle(signed_bundle, tmp_path / "spoiled.tar", keys["ed25519"] / "airlock.key", change(signed_upstream, manifest, data))


def test_verify_provenance_re_verifies_every_carried_signature_offline(signed_bundle, keys):
    result = airlock_node("verify", signed_bundle, "--key", keys["ed25519"] / "airlock.pub", "--provenance", check=True)
    assert result.stdout.startswith(f"OK {signed_bundle}: ")
    assert "provenance: 10 upstream signatures re-verified offline against the carried Sigstore trust root (sha256 " in result.stdout
    assert result.stdout.rstrip().endswith("10 signed, 4 published checksum, 0 pinned, 0 unpinned")


@pytest.mark.parametrize("case", sorted(NODE_CASES))
def test_each_bad_signature_is_refused_offline_on_the_node_by_name(signed_upstream, signed_bundle, keys, tmp_path, case):
    bad = spoiled(case, signed_upstream, signed_bundle, keys, tmp_path)
    pub = keys["ed25519"] / "airlock.pub"
    # The operator's signature over bundle.json holds: without --provenance the bundle verifies.
    airlock_node("verify", bad, "--key", pub, check=True)
    refused = airlock_node("verify", bad, "--key", pub, "--provenance")
    _, name, reason = NODE_CASES[case]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"airlock: error: {name}: its carried signature (provenance/") and reason in line, line


def test_an_install_re_verifies_the_signatures_and_refuses_a_bad_one_before_anything_leaves_staging(signed_upstream, signed_bundle, keys, tmp_path):
    from tests.test_install import FAST, install, node_config, outside_staging, tree

    python = python39()
    config = node_config(tmp_path, free_port())
    bad = spoiled("a certificate for another identity", signed_upstream, signed_bundle, keys, tmp_path)
    root = tmp_path / "root"
    refused = install("init", bad, keys, root, config, None, tmp_path / "log", *FAST, python=python)
    assert refused.returncode == 1 and "bin/linux-amd64/kubelet: its carried signature" in refused.stderr and "mallory@example.com" in refused.stderr
    assert outside_staging(tree(root)) == set()
    assert not (root / "var/lib/airlock/store/index.json").exists()
    good = install("init", signed_bundle, keys, tmp_path / "good", config, None, tmp_path / "log", *FAST, python=python)
    assert good.returncode == 0, good.stderr
    assert "re-verified 10 upstream signatures offline against the carried Sigstore trust root" in good.stdout + good.stderr


def test_a_bundle_whose_trust_root_is_not_the_pinned_one_is_refused(signed_bundle, keys, tmp_path):
    manifest, data, _ = members_of(signed_bundle)
    root = json.loads(data["provenance/trusted_root.json"])
    root["tlogs"][0]["baseUrl"] = "https://rekor.example"
    # bundle.json lists the new bytes (rebundle updates the member's sha256) but still pins the old root's sha256.
    bad = rebundle(signed_bundle, tmp_path / "root.tar", keys["ed25519"] / "airlock.key", {"provenance/trusted_root.json": json.dumps(root).encode()})
    refused = airlock_node("verify", bad, "--key", keys["ed25519"] / "airlock.pub", "--provenance")
    assert refused.returncode == 1 and "provenance/trusted_root.json: not the trust root bundle.json pins" in refused.stderr


def reviewer_blocks(heading: str = "# reviewer, provenance", count: int = 3) -> str:
    """docs/provenance.md's reviewer blocks under `heading`, in order, as one script."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "provenance.md").read_text()
    blocks = [block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if block.startswith(heading)]
    assert len(blocks) == count, f"docs/provenance.md: the reviewer's {count} blocks under {heading!r}"
    return "\n".join(blocks)


def _other_entry(up, m, d):
    evidence = Evidence.parse(d[record_of(m, "registry.k8s.io/kube-apiserver:v1.36.4").evidence], "evidence")
    other = Evidence.parse(evidence_for(up, b"another payload", KUBERNETES_IMAGES), "other")
    return replace(evidence, entry=other.entry).to_json()


# Bad signatures on the binary (kubectl) and the image (kube-apiserver) that the openssl blocks check.
REVIEWER_CASES = {
    "flipped": _flipped,
    "identity": _evidence("bin/linux-amd64/kubectl", lambda up, m, d: evidence_for(up, d["bin/linux-amd64/kubectl"], MALLORY)),
    "ca": _evidence("bin/linux-amd64/kubectl", lambda up, m, d: evidence_for(up, d["bin/linux-amd64/kubectl"], KUBERNETES_BINARIES, ca=up.signing.rogue)),
    "entry": _evidence("registry.k8s.io/kube-apiserver:v1.36.4", _other_entry),
    "no-set": _evidence("registry.k8s.io/kube-apiserver:v1.36.4", _expired_without_set),
}


def run_reviewer(script: str, signed_upstream, signed_bundle, keys, where: Path, case: str | None = None, env: dict | None = None):
    """The reviewer's script in `where`, holding k8s.tar (spoiled by `case`, signed again by the operator) and airlock.pub."""
    import shutil
    import subprocess

    where.mkdir()
    if case is None:
        shutil.copy(signed_bundle, where / "k8s.tar")
    else:
        manifest, data, _ = members_of(signed_bundle)
        change = REVIEWER_CASES.get(case) or NODE_CASES[case][0]
        rebundle(signed_bundle, where / "k8s.tar", keys["ed25519"] / "airlock.key", change(signed_upstream, manifest, data))
    shutil.copy(keys["ed25519"] / "airlock.pub", where / "airlock.pub")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=where, capture_output=True, text=True, env=env)


def test_the_reviewers_openssl_procedure_runs_as_written_and_fails_on_a_bad_signature(signed_upstream, signed_bundle, keys, tmp_path):
    require("openssl", "jq", "tar", "od")
    script = reviewer_blocks()
    result = run_reviewer(script, signed_upstream, signed_bundle, keys, tmp_path / "good")
    assert result.returncode == 0, result.stdout + result.stderr
    # Two signatures checked (the binary's, the image's): each with its chain, its artifact and its SET.
    assert result.stdout.count("leaf.pem: OK") == 2 and result.stdout.count("Verified OK") == 4, result.stdout
    # The same procedure on bundles whose checked binary (kubectl) or image (kube-apiserver) carries a bad signature.
    for case in REVIEWER_CASES:
        refused = run_reviewer(script, signed_upstream, signed_bundle, keys, tmp_path / case, case)
        assert refused.returncode != 0, case


def test_the_reviewers_sigstore_python_procedure_verifies_every_signature_as_written_and_fails_on_a_bad_one(signed_upstream, signed_bundle, keys, tmp_path):
    """sigstore-python's own command line, as docs/provenance.md has the reviewer run it: every signed record, offline."""
    import os
    import sys

    require("jq", "tar")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # sigstore, from the test dependencies
    script = "\n".join([reviewer_blocks("# reviewer, provenance: the bundle", 1), reviewer_blocks("# reviewer, sigstore-python", 1)])
    result = run_reviewer(script, signed_upstream, signed_bundle, keys, tmp_path / "good", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest, _, _ = members_of(signed_bundle)
    checked = sorted(line[len("OK: "):] for line in (result.stdout + result.stderr).splitlines() if line.startswith("OK: "))
    signed = [entry.path for entry in manifest.files if entry.provenance and entry.provenance.kind == "signed"]
    payloads = [image.provenance.payload for image in manifest.images if image.provenance and image.provenance.kind == "signed"]
    assert checked == sorted(signed + payloads) and len(checked) == 10
    for case in [*REVIEWER_CASES, "a certificate from another CA", "the payload of another image"]:
        refused = run_reviewer(script, signed_upstream, signed_bundle, keys, tmp_path / case.replace(" ", "-"), case, env=env)
        assert refused.returncode != 0, (case, refused.stdout + refused.stderr)
        assert "Traceback" not in refused.stderr, case


def test_a_delta_leaves_its_bases_evidence_to_the_base_and_a_bundle_without_provenance_says_so(signed_upstream, signed_bundle, keys, tmp_path):
    manifest, _, _ = members_of(signed_bundle)
    delta = tmp_path / "delta.tar"
    build(signed_upstream, keys, delta, "v1.36.4", tmp_path / "cache", "--cni", "none", "--arch", "amd64", "--base", signed_bundle,
          "--serial", str(manifest.serial + 1), check=True)  # fmt: skip
    checked = airlock_node("verify", delta, "--key", keys["ed25519"] / "airlock.pub", "--provenance", check=True)
    # Nothing changed upstream: every signature's evidence is the base's, so the delta alone re-verifies none of them.
    assert "provenance: 0 upstream signatures re-verified offline" in checked.stdout and "; 10 more need the base bundle's members" in checked.stdout
    from tests.hostile import standard

    old = tmp_path / "old.tar"
    old.write_bytes(standard(sign.load(keys["ed25519"] / "airlock.key")))
    refused = airlock_node("verify", old, "--key", keys["ed25519"] / "airlock.pub", "--provenance")
    assert refused.returncode == 1 and "bundle.json records no provenance" in refused.stderr
    assert airlock_node("verify", old, "--key", keys["ed25519"] / "airlock.pub").returncode == 0


def report_section(html: str, name: str) -> str:
    return re.search(rf'<section id="{name}">(.*?)</section>', html, re.S).group(1)


def test_the_report_shows_who_signed_each_file_and_image(signed_bundle, keys, tmp_path):
    """`airlock report` of a signed bundle: the provenance section counts each kind and names the signer of every signed file and image."""
    manifest, _, _ = members_of(signed_bundle)
    airlock("report", signed_bundle, "-o", tmp_path / "r.html", "--key", keys["ed25519"] / "airlock.pub", check=True)
    section = report_section((tmp_path / "r.html").read_text(), "provenance")
    signed = [(name, record) for name, record in named_records(manifest) if record.kind == "signed"]
    assert len(signed) >= 3, signed
    assert f"signed<b>{len(signed)}</b>" in section and "the build required <b>any</b>" in section
    assert manifest.provenance.trusted_root_sha256 in section and "airlock verify BUNDLE --provenance" in section
    assert "<h3>Signed by</h3>" in section
    for identity in (KUBERNETES_BINARIES[0], KUBERNETES_IMAGES[0]):
        assert f"<code>{identity}</code>" in section
    rows = dict(re.findall(r"<tr><td><code>([^<]+)</code></td><td>(.*?)</td></tr>", section))
    for name, record in signed:
        assert rows[name].startswith("signed</td><td>Kubernetes release engineering: "), (name, rows[name])
        assert f"transparency log index {record.log_index}" in rows[name]
    assert "Provenance: not recorded" not in section
