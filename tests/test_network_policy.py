"""The network policy (bundle/netpolicy.py) and the one retry/resume routine (bundle/resume.py), and the node
held to them by hostile registries: redirects into this machine or the cloud metadata service, a token realm
that drops to plain HTTP, a registry dripping one byte at a time.
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bundle import netpolicy
from bundle.netpolicy import Clock, CredentialScope, Deadlines, Origin, PolicyError
from bundle.resume import Answer, Attempts, GiveUp, Refused, Transient, fetch_resumable, retrying
from tests.conftest import airlock_node
from tests.test_from_registry import UNPACK_ONLY, HostileRegistry, member_digest, nothing_outside_staging
from tests.test_install import IGNORE
from tests.upstream import free_port

# -- the policy, without a network -------------------------------------------------------------------------

REGISTRY = Origin.of("https://registry.example:5000")


@pytest.mark.parametrize(
    "origin, current, location, hops, refused",
    [
        ("https://registry.example:5000", "https://registry.example:5000/v2/x/blobs/sha256:1", "https://s3.example/bucket/1?sig=2", 1, None),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "/storage/1", 1, None),
        ("http://10.0.0.5:5000", "http://10.0.0.5:5000/v2/x", "https://s3.example/1", 1, None),  # stricter is fine
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "http://s3.example/1", 1, "plain HTTP"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "https://127.0.0.1:8080/admin", 1, "loopback"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "https://localhost:8080/admin", 1, "loopback"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "https://[::1]:8080/admin", 1, "loopback"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "https://[::ffff:127.0.0.1]/", 1, "loopback"),
        ("http://10.0.0.5:5000", "http://10.0.0.5:5000/v2/x", "http://169.254.169.254/latest/meta-data/", 1, "link-local"),
        ("http://10.0.0.5:5000", "http://10.0.0.5:5000/v2/x", "http://0.0.0.0:22/", 1, "unspecified"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/v2/x", "http://127.0.0.1:5001/storage", 1, None),  # a loopback origin
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/v2/x", "http://169.254.169.254/", 1, "link-local"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "file:///etc/shadow", 1, "only http and https"),
        ("https://registry.example:5000", "https://registry.example:5000/v2/x", "https://s3.example/1", netpolicy.MAX_REDIRECTS + 1, "redirects"),
    ],
)
def test_which_redirects_may_be_followed(origin, current, location, hops, refused):
    reason = netpolicy.redirect_refusal(Origin.of(origin), current, location, hops)
    assert (reason is None) if refused is None else (reason is not None and refused in reason), reason


def test_credentials_go_only_to_the_registry_and_a_realm_it_named():
    scope = CredentialScope(REGISTRY)
    assert scope.credential_refusal("https://registry.example:5000/v2/x/blobs/uploads/1") is None
    assert "not https://registry.example:5000 nor a token realm" in scope.credential_refusal("https://upload.example/1")
    assert "not https://registry.example:5000" in scope.credential_refusal("https://registry.example/v2/")  # another port is another origin
    assert "left" in scope.credential_refusal("https://registry.example:5000/v2/", left_origin=True)
    assert scope.allow_realm("https://auth.example/token") is None
    assert scope.credential_refusal("https://auth.example/token?scope=x") is None
    assert "plain-HTTP token realm" in scope.allow_realm("http://auth.example/token")
    assert "plain-HTTP token realm" in scope.allow_realm("http://registry.example:5000/token")  # no --insecure for it
    assert "loopback" in scope.allow_realm("https://127.0.0.1:9999/token")


def test_plain_http_credentials_need_insecure_for_that_very_origin():
    registry = Origin.of("http://10.0.0.5:5000")
    scope = CredentialScope(registry, frozenset({registry}))
    assert scope.credential_refusal("http://10.0.0.5:5000/v2/x/blobs/uploads/1") is None
    assert scope.allow_realm("http://10.0.0.5:5000/token") is None
    assert "plain-HTTP token realm" in scope.allow_realm("http://10.0.0.6:5000/token")
    assert "not http://10.0.0.5:5000" in scope.credential_refusal("http://10.0.0.6:5000/upload/1")
    assert "plain HTTP" in CredentialScope(registry).credential_refusal("http://10.0.0.5:5000/v2/")


def test_deadlines_are_documented_defaults_and_overridable():
    assert Deadlines() == Deadlines(read=30, member=900, run=14400)
    assert Deadlines.parse("member=2m,run=1.5h") == Deadlines(read=30, member=120, run=5400)
    assert Deadlines.parse("") == Deadlines()
    for bad in ("member=0s", "members=1m", "read=fast", "run"):
        with pytest.raises(PolicyError):
            Deadlines.parse(bad)
    now = [100.0]
    clock = Clock(10, "fetching bin/kubelet", now=lambda: now[0])
    assert clock.refusal() is None and netpolicy.read_timeout(Deadlines(read=30), clock) == 10
    now[0] = 110.0
    assert "fetching bin/kubelet took longer than its 10s deadline" in clock.refusal()


# -- the retry/resume routine, with a scripted transport ---------------------------------------------------


class ScriptedServer:
    """Answers `open_at` from a script: each entry is (status, body, cut) — `cut` breaks the body after that many bytes."""

    def __init__(self, data: bytes, script: list):
        self.data, self.script, self.offsets = data, list(script), []

    def open_at(self, offset: int) -> Answer:
        self.offsets.append(offset)
        status, cut = self.script.pop(0)
        if status >= 500:
            raise Transient(f"HTTP {status}")
        body = self.data[offset:] if status == 206 else self.data
        position = [0]

        def read(amount: int) -> bytes:
            if cut is not None and position[0] >= cut:
                raise Transient("connection reset")
            chunk = body[position[0] : position[0] + min(amount, (cut - position[0]) if cut is not None else amount)]
            position[0] += len(chunk)
            return chunk

        content_range = f"bytes {offset}-{len(self.data) - 1}/{len(self.data)}" if status == 206 else None
        return Answer(status, content_range, read, lambda: None)


class MemorySink:
    def __init__(self, held: bytes = b""):
        self.data = bytearray(held)

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data

    def reset(self) -> None:
        self.data.clear()


FAST = Attempts(attempts=4, base_delay=0.0)


def test_a_broken_answer_resumes_from_what_the_sink_holds():
    server = ScriptedServer(b"x" * 1000, [(503, None), (200, 300), (206, None)])
    sink = MemorySink()
    fetch_resumable("blob", server.open_at, sink, 1000, FAST, sleep=lambda s: None)
    assert bytes(sink.data) == b"x" * 1000 and server.offsets == [0, 0, 300]


def test_a_server_ignoring_the_range_starts_over_and_never_gives_more_than_listed():
    server = ScriptedServer(b"y" * 1000, [(200, None)])
    sink = MemorySink(b"y" * 400)
    fetch_resumable("blob", server.open_at, sink, 1000, FAST, sleep=lambda s: None)
    assert bytes(sink.data) == b"y" * 1000
    with pytest.raises(Refused, match="sent more than the 999 bytes"):
        fetch_resumable("blob", ScriptedServer(b"z" * 1000, [(200, None)]).open_at, MemorySink(), 999, FAST, sleep=lambda s: None)


def test_attempts_are_counted_once_and_a_deadline_stops_them():
    server = ScriptedServer(b"", [(503, None)] * 10)
    with pytest.raises(GiveUp, match="gave up after 4 attempts"):
        fetch_resumable("blob", server.open_at, MemorySink(), 10, FAST, sleep=lambda s: None)
    assert len(server.offsets) == 4
    now = [0.0]
    clock = Clock(5, "the --from transfer", now=lambda: now[0])

    def once():
        now[0] += 3
        raise Transient("HTTP 503")

    with pytest.raises(GiveUp, match="took longer than its 5s deadline"):
        retrying("blob", once, Attempts(attempts=100, base_delay=0.0), (clock,), sleep=lambda s: None)
    assert now[0] == 6


# -- the node against hostile registries --------------------------------------------------------------------


def global_address() -> str:
    """An address of this machine that is not loopback: a registry there is not 'this machine' to the policy."""
    found = json.loads(subprocess.run(["ip", "-4", "-j", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True).stdout)
    addresses = [info["local"] for link in found for info in link.get("addr_info", []) if info.get("family") == "inet"]
    if not addresses:
        pytest.fail("this machine has no global IPv4 address to serve the hostile registry on")
    return addresses[0]


class Recorder:
    """A plain HTTP server that logs every request it gets (the 'admin port', the 'metadata service', a token server)."""

    def __init__(self, host: str = "127.0.0.1", answer: bytes = b"{}"):
        self.requests: list[tuple[str, str]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                recorder.requests.append((self.path, self.headers.get("Authorization") or ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_POST = do_PATCH = do_GET

        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.server = http.server.ThreadingHTTPServer((host, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    started = []

    def make(kind, *args, **kwargs):
        started.append(kind(*args, **kwargs))
        return started[-1]

    yield make
    for server in started:
        server.close()


def node_join(url: str, keys, root: Path, tmp_path: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    config = tmp_path / "worker.yaml"
    config.write_text(json.dumps({"nodeName": "worker1", "controlPlaneEndpoint": "127.0.0.1:6443", "token": "abcdef.0123456789abcdef",
                                  "caCertHashes": ["sha256:" + "1" * 64]}))
    return airlock_node("join", "--from", url, "--key", keys["ed25519"] / "airlock.pub", "--root", root, "--config", config,
                        "--ignore-preflight-errors", IGNORE, "--skip-phases", UNPACK_ONLY, *extra, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("airlock: error:")]
    return line


def test_a_redirect_to_a_loopback_admin_port_is_refused(servers, node_bundle, keys, tmp_path):
    admin = servers(Recorder, "127.0.0.1")
    registry = servers(HostileRegistry, node_bundle, host=global_address())
    registry.location = f"{admin.url}/admin/shutdown"
    root = tmp_path / "root"
    line = error_line(node_join(registry.url, keys, root, tmp_path, "--insecure"))
    assert f"127.0.0.1 is a loopback address, and {registry.url} is not; refused" in line, line
    assert admin.requests == [] and nothing_outside_staging(root)


def test_a_redirect_to_the_metadata_service_is_refused_without_a_connection(servers, node_bundle, keys, tmp_path):
    registry = servers(HostileRegistry, node_bundle, host=global_address())
    registry.location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    started = time.monotonic()
    line = error_line(node_join(registry.url, keys, tmp_path / "root", tmp_path, "--insecure"))
    assert "169.254.169.254 is a link-local address" in line, line
    assert time.monotonic() - started < 60  # refused at once, not after connection timeouts and retries


def test_a_host_that_only_resolves_to_loopback_is_refused_after_the_connect(servers, node_bundle, keys, tmp_path):
    admin = servers(Recorder, "127.0.0.1")
    registry = servers(HostileRegistry, node_bundle, host=global_address())
    # 2130706433 is 127.0.0.1 to the resolver, but no IP literal to the policy's first look: the connected address tells.
    registry.location = f"http://2130706433:{admin.port}/admin"
    line = error_line(node_join(registry.url, keys, tmp_path / "root", tmp_path, "--insecure"))
    assert f"http://2130706433:{admin.port}: 127.0.0.1 is a loopback address" in line and admin.requests == [], line


@pytest.fixture
def pki(tmp_path):
    directory = tmp_path / "pki"
    airlock_node("registry", "cert", "--ca-out", directory, "--name", "127.0.0.1", "--name", global_address(), check=True)
    return directory


def test_a_token_realm_that_redirects_to_plain_http_gets_no_request_and_its_token_is_never_used(servers, pki, node_bundle, keys, tmp_path):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(pki / "registry.crt"), str(pki / "registry.key"))
    plain = servers(Recorder, "127.0.0.1", answer=json.dumps({"token": "stolen-over-http"}).encode())
    realm = servers(HostileRegistry, node_bundle, tls=tls)  # answers /token with a redirect to the plain-HTTP one
    realm.location = f"{plain.url}/token"
    registry = servers(HostileRegistry, node_bundle, tls=tls)
    registry.challenge = f'Bearer realm="{realm.url}/v2/airlock/bundle/blobs/sha256:{"0" * 64}",service="registry"'
    line = error_line(node_join(registry.url, keys, tmp_path / "root", tmp_path, "--ca", pki / "ca.crt"))
    assert "redirects to plain HTTP" in line and "token realm" in line, line
    assert plain.requests == [] and registry.authorizations == []


def test_a_plain_http_realm_of_an_https_registry_is_refused(servers, pki, node_bundle, keys, tmp_path):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(pki / "registry.crt"), str(pki / "registry.key"))
    plain = servers(Recorder, "127.0.0.1", answer=json.dumps({"token": "stolen-over-http"}).encode())
    registry = servers(HostileRegistry, node_bundle, tls=tls)
    registry.challenge = f'Bearer realm="{plain.url}/token",service="registry"'
    line = error_line(node_join(registry.url, keys, tmp_path / "root", tmp_path, "--ca", pki / "ca.crt"))
    assert "plain-HTTP token realm" in line, line
    assert plain.requests == [] and registry.authorizations == []


def test_a_registry_dripping_a_member_is_stopped_by_the_member_deadline(servers, node_bundle, keys, tmp_path):
    registry = servers(HostileRegistry, node_bundle)
    registry.drip, registry.drip_every = member_digest(node_bundle, "bin/linux-amd64/kubeadm"), 0.5
    root = tmp_path / "root"
    line = error_line(node_join(registry.url, keys, root, tmp_path, "--insecure", "--deadlines", "read=5s,member=4s", timeout=120))
    assert "bin/linux-amd64/kubeadm" in line and "took longer than its 4s deadline" in line, line
    assert nothing_outside_staging(root)


def test_a_registry_dripping_its_answers_is_stopped_by_the_run_deadline(servers, node_bundle, keys, tmp_path):
    registry = servers(HostileRegistry, node_bundle)
    registry.drip, registry.drip_every = member_digest(node_bundle, "bin/linux-amd64/kubeadm"), 0.5
    started = time.monotonic()
    line = error_line(node_join(registry.url, keys, tmp_path / "root", tmp_path, "--insecure", "--deadlines", "member=10m,run=6s", timeout=120))
    assert "the --from transfer took longer than its 6s deadline" in line, line
    assert time.monotonic() - started < 90


def test_malformed_deadlines_are_a_usage_error(tmp_path, keys):
    result = node_join("http://127.0.0.1:9", keys, tmp_path / "root", tmp_path, "--insecure", "--deadlines", "member=soon")
    assert result.returncode == 2 and "--deadlines: 'soon' is not a duration like 30s, 15m or 4h" in result.stderr


# -- the build host: push credentials and image blob sizes --------------------------------------------------


class PushRegistry:
    """Just enough of a registry's push side to reach the first upload, with token auth a test points anywhere.

    Every /v2/ request without a Bearer token gets 401 naming `realm`; the realm on this origin (`/token`)
    hands out the token "pushed-token"; blobs are unknown (404), and an upload starts with 202 and `upload`
    as its Location.
    """

    def __init__(self):
        self.realm = ""
        self.upload = ""
        self.requests: list[tuple[str, str, str]] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status: int, headers: dict | None = None, body: bytes = b""):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                registry.requests.append((self.command, self.path, self.headers.get("Authorization") or ""))
                if self.path.startswith("/token"):
                    return self.answer(200, {"Content-Type": "application/json"}, json.dumps({"token": "pushed-token"}).encode())
                if self.headers.get("Authorization") != "Bearer pushed-token":
                    return self.answer(401, {"WWW-Authenticate": f'Bearer realm="{registry.realm}",service="push"'})
                if self.command == "POST" and "/blobs/uploads/" in self.path:
                    return self.answer(202, {"Location": registry.upload})
                return self.answer(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_any

        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def push_with_password(bundle: Path, keys, registry: PushRegistry, work: Path) -> subprocess.CompletedProcess:
    from tests.conftest import AIRLOCK

    command = [AIRLOCK, "push", str(bundle), "--to", f"{registry.host}/site", "--insecure", "--key", str(keys["ed25519"] / "airlock.pub"),
               "--work-dir", str(work), "--username", "pusher", "--password-stdin"]
    return subprocess.run(command, input="s3cret\n", capture_output=True, text=True, timeout=600)


def test_a_plain_http_realm_on_another_origin_never_gets_the_push_credentials(servers, node_bundle, keys, tmp_path):
    other = servers(Recorder, "127.0.0.1", answer=json.dumps({"token": "from-elsewhere"}).encode())
    registry = servers(PushRegistry)
    registry.realm = f"{other.url}/token"
    result = push_with_password(node_bundle, keys, registry, tmp_path / "work")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"names the plain-HTTP token realm {other.url}/token; refused" in result.stderr
    assert other.requests == []  # neither the Basic credentials nor even a token request went there


def test_an_upload_location_on_another_origin_never_gets_the_token(servers, node_bundle, keys, tmp_path):
    other = servers(Recorder, "127.0.0.1")
    registry = servers(PushRegistry)
    registry.realm = f"{registry.url}/token"  # the registry's own origin, plain HTTP under --insecure: allowed
    registry.upload = f"{other.url}/upload/1"
    result = push_with_password(node_bundle, keys, registry, tmp_path / "work")
    assert result.returncode == 1 and "upload refused" in result.stderr, result.stderr
    assert other.requests and all(authorization == "" for _, authorization in other.requests), other.requests
    # The registry itself did get the token, and the Basic credentials went only to its own realm.
    assert any(authorization == "Bearer pushed-token" for _, _, authorization in registry.requests)
    assert {path.split("?")[0] for _, path, authorization in registry.requests if authorization.startswith("Basic ")} == {"/token"}


def test_an_image_blob_is_never_accepted_beyond_its_descriptor_size(tmp_path):
    from builder.errors import FetchError
    from builder.progress import Progress
    from builder.transfer import Http, RetryPolicy
    from bundle.store import BlobStore
    from tests.upstream import FileServer

    root = tmp_path / "www"
    root.mkdir()
    (root / "layer").write_bytes(b"\0" * (8 << 20))  # what a hostile registry streams for a layer its manifest lists at 4096 bytes
    server = FileServer(root)
    try:
        store = BlobStore(tmp_path / "cache")
        http = Http(Progress(interactive=False), RetryPolicy(attempts=2, base_delay=0.0))
        with pytest.raises(FetchError, match="sent more than the 4096 bytes listed for it"):
            http.download(f"{server.url}/layer", store, "sha256:" + "0" * 64, size=4096)
        left = [path.stat().st_size for path in tmp_path.joinpath("cache").rglob("*") if path.is_file()]
        assert max(left, default=0) <= 4096
    finally:
        server.close()


def test_image_blobs_are_fetched_with_their_descriptor_size_as_the_cap(tmp_path):
    """The copier hands each blob's descriptor size to the download (the cap above), for every blob it schedules."""
    from concurrent.futures import ThreadPoolExecutor

    from builder.images import ImageCopier
    from builder.progress import Progress
    from bundle.store import BlobStore

    asked = []

    class RecordingHttp:
        """Stands in for builder.transfer.Http: records what the copier asks to download, with which cap."""

        def download(self, url, store, expected=None, headers=None, send=None, count_total=False, size=None):
            asked.append((url.rsplit("/", 1)[1], size))
            return expected

    with ThreadPoolExecutor(1) as pool:
        copier = ImageCopier(RecordingHttp(), BlobStore(tmp_path / "cache"), None, ["amd64"], pool, Progress(interactive=False))
        manifest = {"config": {"digest": "sha256:" + "1" * 64, "size": 10}, "layers": [{"digest": "sha256:" + "2" * 64, "size": 4096}]}
        from builder.images import CopiedImage
        from bundle.manifest import ImageEntry

        copied = CopiedImage(ImageEntry("r.example/a:1", "sha256:" + "3" * 64, "", ()))
        copier._register_blobs(None, "https://r.example/v2/a", None, manifest, copied, "")
        copier.schedule(list(copied.blobs)).wait("sha256:" + "2" * 64)
    assert sorted(asked) == [("sha256:" + "1" * 64, 10), ("sha256:" + "2" * 64, 4096)]
