"""Known vulnerabilities at build: OSV's batch API (a local STAND-IN with fixed test records), recorded signed in the bundle.

The packages are real: a Go program built here (its toolchain and vendored module), this machine's
own dpkg status (Debian 12) and an Alpine apk database, in layers of umoci images. The OSV records
are test fixtures with AIRLOCK-TEST ids, matched by the stand-in the way its API documents.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from builder.osv import cvss3_score
from tests.conftest import CRITICAL, HIGH, LOW, airlock_node, build
from tests.imagefiles import ALPINE_IMAGE, DEBIAN_IMAGE
from tests.upstream import free_port


def test_cvss3_base_scores_match_published_ones():
    # Scores as NVD publishes them for these vectors.
    assert cvss3_score(CRITICAL) == 9.8
    assert cvss3_score(HIGH) == 7.5
    assert cvss3_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == 6.1
    assert cvss3_score("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H") == 7.8
    assert cvss3_score(LOW) == 2.5
    assert cvss3_score("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N") is None


def images_flags() -> list[str]:
    return ["--cni", "none", "--image", DEBIAN_IMAGE, "--image", ALPINE_IMAGE]


def member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as archive:
        return archive.extractfile(name).read()


def test_build_records_what_osv_knows_signed_and_inspect_and_a_sidecar_show_it(scanned_upstream, keys, tmp_path):
    upstream, _, go = scanned_upstream
    out = tmp_path / "out" / "k8s.tar"
    result = build(upstream, keys, out, "stable", tmp_path / "cache", *images_flags(), "--sidecars", check=True)
    assert "vulnerabilities: " in result.stderr and "1 critical, 2 high, 1 medium, 1 low, 1 unknown" in result.stderr
    document = json.loads(member(out, "vulnerabilities.json"))
    manifest = json.loads(member(out, "bundle.json"))
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert listed["vulnerabilities.json"]["sha256"] == __import__("hashlib").sha256(member(out, "vulnerabilities.json")).hexdigest()
    assert document["status"] == "scanned" and document["source"] == upstream.osv.url
    found = {f["id"]: f for f in document["findings"]}
    assert sorted(found) == [f"AIRLOCK-TEST-000{n}" for n in range(1, 7)]
    assert [found[i]["severity"] for i in sorted(found)] == ["CRITICAL", "MEDIUM", "HIGH", "LOW", "UNKNOWN", "HIGH"]
    assert found["AIRLOCK-TEST-0001"]["score"] == 9.8 and found["AIRLOCK-TEST-0001"]["package"]["version"] == go
    assert found["AIRLOCK-TEST-0001"]["where"] == [f"{DEBIAN_IMAGE} linux/amd64: /usr/local/bin/probe"]
    assert found["AIRLOCK-TEST-0002"]["fixed"] == "1.4.3" and found["AIRLOCK-TEST-0002"]["package"]["purl"] == "pkg:golang/example.com/greeting@v1.4.2"
    assert found["AIRLOCK-TEST-0003"]["where"] == [f"{DEBIAN_IMAGE} linux/amd64"]
    assert [f["severity"] for f in document["findings"]][:2] == ["CRITICAL", "HIGH"]
    # Three stdlib records and two a page: the second page was asked for with the token the first gave.
    assert any(query.get("page_token") for query in upstream.osv.queries)
    assert all(set(query) <= {"package", "version", "page_token"} for query in upstream.osv.queries)
    sidecar = out.parent / "vulnerabilities.json"
    assert sidecar.read_bytes() == member(out, "vulnerabilities.json")
    assert any(line.endswith("  vulnerabilities.json") for line in (out.parent / "SHA256SUMS").read_text().splitlines())
    shown = airlock_node("inspect", out, "--vulnerabilities", check=True).stdout
    assert "CRITICAL  9.8  AIRLOCK-TEST-0001  stdlib " + go in shown
    assert f"in {DEBIAN_IMAGE} linux/amd64: /usr/local/bin/probe" in shown
    summary = airlock_node("inspect", out, check=True).stdout
    assert "1 critical, 2 high, 1 medium, 1 low, 1 unknown" in summary and "airlock inspect --vulnerabilities lists them" in summary


def test_fail_on_refuses_a_bundle_at_or_above_the_threshold(scanned_upstream, upstream, keys, tmp_path):
    found, _, _ = scanned_upstream
    # An earlier bundle's installer beside it: the node installer is written while the blobs arrive, and a refused
    # build must leave the earlier one as it was, with no temporary beside it.
    earlier = tmp_path / "airlock-node.pyz"
    earlier.write_bytes(b"an earlier bundle's node installer")
    refused = build(found, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", *images_flags(), "--fail-on", "critical")
    assert refused.returncode == 1 and not (tmp_path / "k8s.tar").exists()
    assert earlier.read_bytes() == b"an earlier bundle's node installer"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["airlock-node.pyz", "cache"]
    assert "--fail-on critical: 1 known vulnerabilities at or above critical: AIRLOCK-TEST-0001 (critical, stdlib" in refused.stderr
    assert "Traceback" not in refused.stderr
    # The session upstream's images hold no package databases and its binaries are scripts: nothing to refuse.
    clean = build(upstream, keys, tmp_path / "ok.tar", "stable", tmp_path / "cache2", "--cni", "none", "--fail-on", "low")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(member(tmp_path / "ok.tar", "vulnerabilities.json"))["status"] == "scanned"
    # Packed while the layers were read: bundle.json first (written last, into room kept for it), the review members last.
    names = subprocess.run(["tar", "-tf", tmp_path / "ok.tar"], capture_output=True, text=True, check=True).stdout.split()
    assert names[:2] == ["bundle.json", "bundle.json.sig"] and names[-3:] == ["api-versions.json", "sbom.spdx.json", "vulnerabilities.json"]
    airlock_node("verify", tmp_path / "ok.tar", "--key", keys["ed25519"] / "airlock.pub", check=True)
    usage = build(upstream, keys, tmp_path / "x.tar", "stable", tmp_path / "cache2", "--fail-on", "severe")
    assert usage.returncode == 2 and "--fail-on 'severe'" in usage.stderr


def test_osv_out_of_reach_is_said_and_recorded_as_not_scanned_never_clean(scanned_upstream, keys, tmp_path):
    upstream, _, _ = scanned_upstream
    closed = f"http://127.0.0.1:{free_port()}"
    flags = [flag for flag in upstream.build_flags()]
    at = flags.index("--osv-url")
    flags[at + 1] = closed
    common = ["build", "--kubernetes-version", "stable", "--sign-key", keys["ed25519"] / "airlock.key", "--cache-dir", tmp_path / "cache", *flags, *images_flags()]
    from tests.conftest import airlock

    result = airlock(*common, "-o", tmp_path / "k8s.tar", check=True)
    assert f"warning: vulnerabilities NOT SCANNED: OSV at {closed} could not be reached" in result.stderr
    document = json.loads(member(tmp_path / "k8s.tar", "vulnerabilities.json"))
    assert document["status"] == "not-scanned" and document["findings"] == [] and closed in document["reason"]
    shown = airlock_node("inspect", tmp_path / "k8s.tar", "--vulnerabilities", check=True).stdout
    assert shown.startswith("vulnerabilities  NOT SCANNED: OSV at") and "this is not a clean result" in shown
    flags[at + 1] = "http://osv.invalid"
    refused = airlock(*[flag if flag != closed else "http://osv.invalid" for flag in common], "-o", tmp_path / "r.tar", "--fail-on", "low")
    assert refused.returncode == 1 and "--fail-on low: the vulnerabilities could not be checked" in refused.stderr
    off = airlock(*[flag if flag != closed else "none" for flag in common], "-o", tmp_path / "off.tar", check=True)
    assert "vulnerabilities: not scanned (--osv-url none)" in off.stderr
    assert json.loads(member(tmp_path / "off.tar", "vulnerabilities.json"))["reason"] == "--osv-url none"
