"""The reviewer's report: `airlock report BUNDLE -o report.html [--base OLD]`, opened in real headless chromium.

Chromium (Debian's) loads the page from disk in a fresh profile with networking features off,
over the DevTools protocol (tests/browser.py). The page must render, log no console error, make
no request besides itself, and hold every section; its screenshot is kept at
<pytest tmp dir>/report-screenshot/report.png (the path is printed). The browser probe itself is
shown to catch a console error, an uncaught exception and a failed load on a page that has them.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from builder.report import SECTIONS
from tests.browser import chromium, open_page
from tests.conftest import airlock, build, require
from tests.imagefiles import ALPINE_IMAGE, DEBIAN_IMAGE

PROBE = """(() => {
  const sections = [...document.querySelectorAll('main > section')].map(s => ({id: s.id, title: s.querySelector('h2').textContent,
    text: s.innerText, visible: s.getBoundingClientRect().height > 20}));
  return {sections, title: document.title, scripts: document.scripts.length, links: document.querySelectorAll('link').length,
          width: document.documentElement.scrollWidth, resources: performance.getEntriesByType('resource').length};
})()"""


def need_chromium() -> None:
    require("chromium")
    assert chromium() is not None


def test_the_browser_probe_catches_console_errors_exceptions_and_failed_loads(tmp_path):
    need_chromium()
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><title>t</title><h1>x</h1><script>console.error("boom"); missingFunction();</script><img src="https://example.invalid/a.png">')
    seen = open_page(page, "document.querySelector('h1').textContent")
    assert seen.value == "x"
    assert "console.error: boom" in seen.errors
    assert any(e.startswith("uncaught: ReferenceError: missingFunction is not defined") for e in seen.errors)
    assert any("Failed to load resource" in e for e in seen.errors)
    assert "https://example.invalid/a.png" in seen.requests


@pytest.fixture(scope="module")
def bundles(scanned_upstream, keys, tmp_path_factory):
    upstream, _, _ = scanned_upstream
    work = tmp_path_factory.mktemp("report")
    common = ("--cni", "none", "--image", DEBIAN_IMAGE, "--image", ALPINE_IMAGE)
    build(upstream, keys, work / "old.tar", "stable", work / "cache", *common[:4], "--serial", "10", check=True)
    manifest = work / "site.yaml"
    manifest.write_text("apiVersion: v1\nkind: ComponentStatus\nmetadata:\n  name: scheduler\n")
    build(upstream, keys, work / "new" / "k8s.tar", "stable", work / "cache", *common, "--manifest", manifest, "--serial", "11", "--sidecars",
          "--base", work / "old.tar", check=True)  # fmt: skip
    return work


def test_report_renders_in_chromium_with_every_section_and_no_console_error(bundles, keys, tmp_path_factory):
    need_chromium()
    out = tmp_path_factory.mktemp("report-screenshot")
    page = out / "report.html"
    result = airlock("report", bundles / "new" / "k8s.tar", "-o", page, "--base", bundles / "old.tar", "--key", keys["ed25519"] / "airlock.pub", check=True)
    assert result.stdout.startswith(f"wrote {page}")
    html = page.read_text()
    assert "<script" not in html and "@font-face" not in html and "http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'" in html
    seen = open_page(page, PROBE)
    (out / "report.png").write_bytes(seen.screenshot)
    print(f"report screenshot: {out / 'report.png'}")
    assert seen.errors == [], seen.errors
    assert seen.requests == [page.resolve().as_uri()], seen.requests
    probe = seen.value
    assert probe["scripts"] == 0 and probe["links"] == 0 and probe["resources"] == 0
    assert [s["id"] for s in probe["sections"]] == list(SECTIONS)
    assert all(s["visible"] for s in probe["sections"])
    text = {s["id"]: s["text"] for s in probe["sections"]}
    manifest = json.loads(tarfile.open(bundles / "new" / "k8s.tar").extractfile("bundle.json").read())
    assert manifest["kubernetes"]["version"] in text["summary"] and "valid (checked against the given key)" in text["summary"]
    for image in manifest["images"]:
        assert image["reference"] in text["images"] and image["digest"] in text["images"]
    # This upstream signs nothing: each file and image was vouched for by a checksum published beside it, or pinned.
    files = {entry["path"]: entry for entry in manifest["files"]}
    published = sum(1 for entry in manifest["files"] if entry.get("provenance", {}).get("kind") == "published-sha256") + len(manifest["images"])
    assert "the build required any" in text["provenance"] and f"published checksum\n{published}" in text["provenance"]
    assert "airlock verify BUNDLE --provenance" in text["provenance"] and "Provenance: not recorded" not in text["provenance"]
    assert f"bin/linux-amd64/kubeadm\tpublished checksum\t{files['bin/linux-amd64/kubeadm']['provenance']['detail']}" in text["provenance"]
    assert "docker.io/library/debian-probe:12 linux/amd64" in text["packages"] and "alpine-probe" in text["packages"]
    assert "AIRLOCK-TEST-0001" in text["vulnerabilities"] and "critical" in text["vulnerabilities"].lower()
    assert "ComponentStatus" in text["api-versions"] and "is deprecated since 1.19" in text["api-versions"]
    assert "alpine-probe" in text["changes"] and "added" in text["changes"] and "new since serial 10: AIRLOCK-TEST-0004" in text["changes"]
    assert probe["width"] <= 1400, "the page should fit the window without sideways scrolling"
    # The sidecar written by the build is the same report of the same bundle (it names the build's key instead).
    sidecar = (bundles / "new" / "report.html").read_text()
    assert "AIRLOCK-TEST-0001" in sidecar and "signed with the --sign-key" in sidecar
    sums = (bundles / "new" / "SHA256SUMS").read_text()
    assert "  report.html" in sums and "  vulnerabilities.json" in sums


def test_a_report_of_an_unscanned_bundle_says_so(upstream, keys, tmp_path):
    build(upstream, keys, tmp_path / "k8s.tar", "stable", tmp_path / "cache", "--cni", "none", "--no-scan", check=True)
    airlock("report", tmp_path / "k8s.tar", "-o", tmp_path / "r.html", check=True)
    html = (tmp_path / "r.html").read_text()
    assert "NOT SCANNED: --no-scan: contents not read. This is not a clean result." in html
    assert "No earlier bundle given" in html


def test_the_review_commands_in_the_docs_run_as_written(scanned_upstream, keys, tmp_path):
    """docs/review.md's first block, line by line; the build only gains the flags that point at the local upstream."""
    import re
    import shlex
    import shutil
    import subprocess
    from pathlib import Path

    from tests.conftest import AIRLOCK

    upstream, _, _ = scanned_upstream
    text = (Path(__file__).parents[1] / "docs" / "review.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    (tmp_path / "keys").mkdir()
    for name in ("airlock.key", "airlock.pub"):
        shutil.copy(keys["ed25519"] / name, tmp_path / "keys" / name)
    (tmp_path / "site.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\n  namespace: default\n")
    said = []
    for line in block.splitlines():
        argv = shlex.split(line)
        assert argv[0] == "airlock"
        if argv[1] == "build":
            argv += ["--cache-dir", str(tmp_path / "cache"), *upstream.build_flags(), "--image", DEBIAN_IMAGE]
        result = subprocess.run([AIRLOCK, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        said.append(result.stdout + result.stderr)
    assert "vulnerabilities: " in said[0] and (tmp_path / "report.html").is_file() and (tmp_path / "vulnerabilities.json").is_file()
    assert "AIRLOCK-TEST-0001" in said[1] and said[2].startswith("wrote report.html")
