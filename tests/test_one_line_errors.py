"""Failures an operator meets on the first day end in one line on stderr that says what, where and what to do.

Each test runs the command as documented against a real server or file system
that fails the way the field does (TLS at a plain-HTTP registry, a private CA,
output on another file system, a full disk, a registry answering nested JSON,
a release that does not exist) and reads what it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import airlock, build
from tests.upstream import FileServer


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("airlock: error:")]


def assert_one_line(result, *words: str) -> str:
    """Exit 1, no traceback, exactly one error line holding every word; the line is returned."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def tls_upstream(upstream, tmp_path):
    """The local upstream's release files served over HTTPS with a private CA (a mirror with an internal CA)."""
    airlock("registry", "cert", "--ca-out", tmp_path / "pki", "--name", "127.0.0.1", check=True)
    server = FileServer(upstream.files_root)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "pki" / "registry.crt", tmp_path / "pki" / "registry.key")
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.url = server.url.replace("http://", "https://")
    yield server, tmp_path / "pki" / "ca.crt"
    server.close()


def test_push_at_a_plain_http_registry_without_insecure_says_to_pass_it(bundle, keys, upstream, tmp_path):
    result = airlock("push", bundle, "--to", f"{upstream.registry.host}/k8s", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", tmp_path / "work")
    line = assert_one_line(result, upstream.registry.host, "plain HTTP", "--insecure")
    assert "retrying" not in result.stderr, "a TLS handshake fails the same way every time: no retries"
    assert line.count("--insecure") == 1


def test_build_from_a_mirror_with_an_internal_ca_says_how_to_trust_it(tls_upstream, upstream, keys, tmp_path):
    server, ca = tls_upstream
    flags = upstream.build_flags()
    flags[flags.index("--release-url") + 1] = f"{server.url}/release-server"
    common = ["build", "-o", tmp_path / "k8s.tar", "--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key",
              "--cache-dir", tmp_path / "cache", *flags]
    refused = airlock(*common)
    assert_one_line(refused, f"{server.url}/release-server/release/stable-1.36.txt", "not trusted", "REQUESTS_CA_BUNDLE")
    assert not (tmp_path / "k8s.tar").exists()
    # Done as the line says, the same build goes through.
    trusted = airlock(*common, env={"REQUESTS_CA_BUNDLE": str(ca)})
    assert trusted.returncode == 0, trusted.stderr


def test_build_at_a_plain_http_server_given_as_https_says_to_use_http(upstream, keys, tmp_path):
    flags = upstream.build_flags()
    flags[flags.index("--release-url") + 1] = upstream.release_url.replace("http://", "https://")
    result = airlock("build", "-o", tmp_path / "k8s.tar", "--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key",
                     "--cache-dir", tmp_path / "cache", *flags)
    assert_one_line(result, "plain HTTP", "http://", "--release-url")


def test_every_exception_behind_a_tls_failure_is_walked_without_tripping_on_string_reasons():
    from builder.transfer import causes, tls_failure, unresolvable

    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.reason = "CERTIFICATE_VERIFY_FAILED"  # a string, as ssl sets it
    outer = ConnectionError("wrapped")
    outer.__cause__ = verify
    assert list(causes(outer)) == [outer, verify]
    assert tls_failure(outer) is verify and not unresolvable(outer)


class NestingRegistry:
    """A registry front whose answers nest JSON 100 000 deep: manifests, or the token its Bearer challenge points at."""

    NESTED = b"[" * 100000 + b"]" * 100000

    def __init__(self, where: str):
        import http.server

        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                if where == "token" and self.path.startswith("/token"):
                    return self.answer(200, front.NESTED)
                if where == "token" and not self.headers.get("Authorization"):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", f'Bearer realm="{front.url}/token",service="nesting"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/manifests/" in self.path:
                    return self.answer(200, front.NESTED, "application/vnd.oci.image.index.v1+json")
                return self.answer(404, b"{}")

            def answer(self, status, body, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("where", ["manifests", "token"])
def test_build_from_a_registry_answering_deeply_nested_json_fails_in_one_line(where, upstream, keys, tmp_path):
    registry = NestingRegistry(where)
    try:
        flags = upstream.build_flags()
        flags[flags.index(f"registry.k8s.io={upstream.registry.url}")] = f"registry.k8s.io={registry.url}"
        result = airlock("build", "-o", tmp_path / "k8s.tar", "--kubernetes-version", "stable-1.36", "--sign-key", keys["ed25519"] / "airlock.key",
                         "--cache-dir", tmp_path / "cache", *flags)
    finally:
        registry.close()
    assert_one_line(result, registry.url, "nests" if where == "token" else "manifest")
    assert not (tmp_path / "k8s.tar").exists()


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` at `path` (another file system than the cache's: a USB stick or a DVD staging area stands in)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def used(path: Path) -> int:
    return shutil.disk_usage(path).used


def test_a_bundle_written_to_another_file_system_than_the_cache(upstream, keys, tmp_path):
    """The cache on this disk, the bundle (whole, split, or split afterwards) on a tmpfs: copy_file_range cannot cross, a plain copy does."""
    pub = keys["ed25519"] / "airlock.pub"
    with tmpfs(tmp_path / "media", "256m") as media:
        whole = build(upstream, keys, media / "k8s.tar", "v1.36.4", tmp_path / "cache", check=True)
        assert "Traceback" not in whole.stderr
        airlock("verify", media / "k8s.tar", "--key", pub, check=True)
        build(upstream, keys, media / "split" / "k8s.tar", "v1.36.4", tmp_path / "cache", "--split", "4M", check=True)
        airlock("verify", media / "split" / "k8s.parts.json", "--key", pub, check=True)
        local = tmp_path / "local" / "k8s.tar"
        build(upstream, keys, local, "v1.36.4", tmp_path / "cache", check=True)
        airlock("split", local, "--size", "4M", "--sign-key", keys["ed25519"] / "airlock.key", "--out-dir", media / "again", check=True)
        airlock("verify", media / "again" / "k8s.parts.json", "--key", pub, check=True)


def test_a_full_output_disk_on_the_build_host_is_one_line_and_leaves_nothing(upstream, keys, tmp_path):
    with tmpfs(tmp_path / "small", "4m") as small:
        result = build(upstream, keys, small / "k8s.tar", "v1.36.4", tmp_path / "cache")
        line = assert_one_line(result, f"{small}: no space left on the device", "needs about", "MiB there", "what was written is removed")
        assert list(small.iterdir()) == [], line
        assert used(small) < (1 << 20)


def test_a_full_cache_disk_on_the_build_host_is_one_line_and_drops_the_partial_download(upstream, keys, tmp_path):
    with tmpfs(tmp_path / "cache", "3m") as cache:
        result = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", cache)
        assert_one_line(result, f"{cache}: no space left on the device")
        assert not (tmp_path / "k8s.tar").exists()
        partials = cache / ".partial"
        assert not partials.exists() or all(path.stat().st_size == 0 for path in partials.iterdir())


def test_a_full_disk_on_the_node_leaves_the_installed_bundle_and_free_space_as_they_were(upstream, node_bundle, keys, tmp_path):
    from tests.test_install import install, node_config
    from tests.upstream import free_port

    # A newer bundle with one large image: it cannot fit beside the installed one.
    tag = upstream.factory.make("registry.k8s.io/airlock-test/large:v1", ("amd64",), payload_bytes=24 << 20)
    upstream.factory.push(tag, upstream.registry, "airlock-test/large", "v1")
    larger = tmp_path / "larger.tar"
    build(upstream, keys, larger, "v1.36.4", tmp_path / "cache", "--serial", "9999999999", "--image", "registry.k8s.io/airlock-test/large:v1", check=True)
    with tmpfs(tmp_path / "node", "96m") as root:
        config = node_config(tmp_path, free_port())
        first = install("init", node_bundle, keys, root, config, None, tmp_path / "log", "--skip-phases", "images,kubeadm-init,cni")
        assert first.returncode == 0, first.stderr
        subprocess.run(["mount", "-o", f"remount,size={(used(root) >> 20) + 12}m", str(root)], check=True)
        before_files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        before_installed = json.loads((root / "var/lib/airlock/state.json").read_text())["installed"]
        before_used = used(root)
        result = install("upgrade", larger, keys, root, config, None, tmp_path / "log", "--skip-phases", "images,kubeadm-upgrade,kubelet-upgrade")
        assert_one_line(result, f"phase unpack: {root}/var/lib/airlock: no space left on the device", "needs about")
        # What is installed is as it was (the journal records the upgrade's run, so that a rerun resumes after space is freed).
        assert json.loads((root / "var/lib/airlock/state.json").read_text())["installed"] == before_installed
        assert [p for p in sorted(str(p.relative_to(root)) for p in root.rglob("*")) if not p.startswith("var/lib/airlock/staging")] == [
            p for p in before_files if not p.startswith("var/lib/airlock/staging")
        ]
        assert used(root) <= before_used + (1 << 20), "the run's staged bytes are removed: the disk is not left full"
        status = airlock("status", "--root", root, check=True).stdout
        assert "installed    airlock serial" in status and "9999999999" not in status


@pytest.mark.parametrize("kind", ["label", "exact"])
def test_a_release_the_server_does_not_have_is_no_such_release_before_any_download(kind, upstream, keys, tmp_path):
    """A supported minor the release server lacks: a label it does not publish (moved aside here), or a patch that never was."""
    from builder.versions import SUPPORTED_RANGE
    from tests.upstream import DEFAULT_VERSION

    minor = DEFAULT_VERSION.split(".")[1]
    asked = f"latest-1.{minor}" if kind == "label" else f"v1.{minor}.44"
    label_file = upstream.files_root / "release-server" / "release" / f"{asked}.txt"
    aside = label_file.with_name(label_file.name + ".aside")
    if kind == "label":
        label_file.rename(aside)
    upstream.server.clear()
    try:
        result = build(upstream, keys, tmp_path / "k8s.tar", asked, tmp_path / "cache")
    finally:
        if kind == "label":
            aside.rename(label_file)
    line = assert_one_line(result, "no such release", "give a released version", f"airlock supports Kubernetes {SUPPORTED_RANGE}")
    assert "HTTP 404" in line and (f"label {asked}" in line if kind == "label" else f"Kubernetes {asked} is not published at {upstream.release_url}" in line)
    # Nothing was downloaded: the label file, or the one checksum that says the release is missing, was all that was asked.
    asked_for = [record.path for record in upstream.server.requested()]
    expected = f"/release-server/release/{asked}.txt" if kind == "label" else f"/release-server/release/{asked}/bin/linux/amd64/kubeadm.sha256"
    assert asked_for == [expected]
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    assert not blobs.exists() or not any(blobs.iterdir())


@pytest.mark.parametrize("asked", ["stable-1.3", "latest-1.99", "v1.31.44"])
def test_a_release_outside_the_supported_range_is_refused_without_a_request(asked, upstream, keys, tmp_path):
    from builder.versions import SUPPORTED_RANGE

    upstream.server.clear()
    result = build(upstream, keys, tmp_path / "k8s.tar", asked, tmp_path / "cache")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = error_lines(result.stderr)
    assert SUPPORTED_RANGE in line, line
    assert upstream.server.requested() == [] and not (tmp_path / "cache").exists()
