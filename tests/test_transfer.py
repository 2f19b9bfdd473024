"""Downloads survive flaky servers, resume cut transfers, and never keep wrong bytes."""

from __future__ import annotations

import hashlib
import os

import pytest

from builder.errors import FetchError
from builder.progress import Progress
from builder.transfer import Http, RetryPolicy
from bundle.store import BlobStore
from tests.upstream import Fault, FileServer


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob").write_bytes(os.urandom(3 << 20))
    files = FileServer(root)
    yield files
    files.close()


@pytest.fixture
def http():
    return Http(Progress(interactive=False), RetryPolicy(attempts=4, base_delay=0.05))


def digest_of(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_503s_then_success(server, http, tmp_path):
    server.faults["/blob"] = Fault(status=503, times=2)
    store = BlobStore(tmp_path / "cache")
    expected = digest_of(server.root / "blob")
    assert http.download(f"{server.url}/blob", store, expected) == expected
    assert len(server.requested("/blob")) == 3
    assert store.path(expected).read_bytes() == (server.root / "blob").read_bytes()


def test_429_honours_retry_after(server, tmp_path):
    http = Http(Progress(interactive=False), RetryPolicy(attempts=3, base_delay=0.0))
    server.faults["/blob"] = Fault(status=429, times=1, retry_after="1")
    import time

    started = time.monotonic()
    http.download(f"{server.url}/blob", BlobStore(tmp_path / "cache"), digest_of(server.root / "blob"))
    assert time.monotonic() - started >= 1.0


def test_cut_body_resumes_from_the_offset(server, http, tmp_path):
    server.faults["/blob"] = Fault(cut_at=0.5, times=1)
    store = BlobStore(tmp_path / "cache")
    expected = digest_of(server.root / "blob")
    assert http.download(f"{server.url}/blob", store, expected) == expected
    ranges = [r.range for r in server.requested("/blob")]
    assert ranges[0] is None
    # The second request asks only for what is missing.
    assert ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    assert store.path(expected).read_bytes() == (server.root / "blob").read_bytes()


def test_partial_download_from_an_earlier_run_is_resumed(server, http, tmp_path):
    store = BlobStore(tmp_path / "cache")
    expected = digest_of(server.root / "blob")
    with store.partial(expected) as part:
        part.write((server.root / "blob").read_bytes()[:1000000])
    http.download(f"{server.url}/blob", store, expected)
    assert [r.range for r in server.requested("/blob")] == ["bytes=1000000-"]


def test_wrong_digest_is_a_hard_failure_and_nothing_is_kept(server, http, tmp_path):
    store = BlobStore(tmp_path / "cache")
    wrong = "sha256:" + "1" * 64
    with pytest.raises(FetchError, match=f"/blob: checksum mismatch: expected {wrong}, got {digest_of(server.root / 'blob')}"):
        http.download(f"{server.url}/blob", store, wrong)
    assert not list(store.blobs.iterdir())


def test_404_is_not_retried(server, http, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        http.download(f"{server.url}/missing", BlobStore(tmp_path / "cache"), "sha256:" + "2" * 64)
    assert len(server.requested("/missing")) == 1


def test_persistent_503_gives_up_with_the_url(server, http, tmp_path):
    server.faults["/blob"] = Fault(status=503, times=100)
    with pytest.raises(FetchError, match=r"/blob: HTTP 503; gave up after 4 attempts"):
        http.download(f"{server.url}/blob", BlobStore(tmp_path / "cache"), digest_of(server.root / "blob"))


def test_a_stalled_server_times_out_and_the_retry_resumes(server, tmp_path):
    http = Http(Progress(interactive=False), RetryPolicy(attempts=3, base_delay=0.05), timeout=(2, 0.5))
    server.faults["/blob"] = Fault(stall=3.0, times=1)
    expected = digest_of(server.root / "blob")
    assert http.download(f"{server.url}/blob", BlobStore(tmp_path / "cache"), expected) == expected
    ranges = [r.range for r in server.requested("/blob")]
    assert len(ranges) == 2 and ranges[1] is not None


def test_a_content_length_longer_than_the_body_is_retried(server, http, tmp_path):
    server.faults["/blob"] = Fault(length_delta=1000, times=1)
    expected = digest_of(server.root / "blob")
    assert http.download(f"{server.url}/blob", BlobStore(tmp_path / "cache"), expected) == expected


def test_a_content_length_shorter_than_the_body_never_yields_wrong_bytes(server, tmp_path):
    http = Http(Progress(interactive=False), RetryPolicy(attempts=2, base_delay=0.01))
    server.faults["/blob"] = Fault(length_delta=-1000, times=5)
    store = BlobStore(tmp_path / "cache")
    expected = digest_of(server.root / "blob")
    with pytest.raises(FetchError, match="checksum mismatch|gave up"):
        http.download(f"{server.url}/blob", store, expected)
    assert not list(store.blobs.iterdir())


def test_a_redirect_loop_is_a_clear_error(server, http, tmp_path):
    server.faults["/loop"] = Fault(status=302, times=1000, location="/loop")
    with pytest.raises(FetchError, match="/loop: TooManyRedirects"):
        http.download(f"{server.url}/loop", BlobStore(tmp_path / "cache"), "sha256:" + "3" * 64)


def test_without_a_terminal_progress_is_a_line_every_few_seconds_while_bytes_flow():
    import io

    clock = [100.0]
    stream = io.StringIO()
    progress = Progress("build", interactive=False, stream=stream, interval=5.0, clock=lambda: clock[0])
    progress.add_total(10_000_000)
    progress.advance(1_000_000)
    assert stream.getvalue() == ""  # the first seconds: nothing yet
    clock[0] += 5.0
    progress.advance(1_000_000)
    clock[0] += 1.0
    progress.advance(1_000_000)  # within the interval: no second line
    assert stream.getvalue() == "build: 2.0 MB of 10.0 MB (20 %), 400.0 KB/s\n"
    clock[0] += 5.0
    progress.log("file bin/linux-amd64/kubeadm (3.0 MB)")
    progress.advance(2_000_000)
    assert stream.getvalue().splitlines()[1:] == ["file bin/linux-amd64/kubeadm (3.0 MB)", "build: 5.0 MB of 10.0 MB (50 %), 454.5 KB/s"]


def test_a_long_download_prints_progress_lines_into_a_log(upstream, keys, tmp_path):
    """`airlock build 2> build.log` (no terminal): a download that takes a while shows how far it got."""
    from tests.conftest import build

    kubeadm = "/release-server/release/v1.36.4/bin/linux/amd64/kubeadm"
    upstream.server.faults[kubeadm] = Fault(stall=6.0, times=1)
    try:
        result = build(upstream, keys, tmp_path / "k8s.tar", "v1.36.4", tmp_path / "cache", check=True)
    finally:
        upstream.server.faults.pop(kubeadm, None)
    lines = [line for line in result.stderr.splitlines() if line.startswith("build: ")]
    assert lines, result.stderr
    assert all(" of " in line and "%)" in line and line.endswith("/s") for line in lines), lines
