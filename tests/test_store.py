"""The content store under concurrent writers: a final name only ever holds a whole, correct blob."""

from __future__ import annotations

import hashlib
import os
import threading

from builder.progress import Progress
from builder.transfer import Http
from bundle.store import BlobStore
from tests.upstream import FileServer


def hammer(work, count: int = 16) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run():
        try:
            barrier.wait()
            work()
        except BaseException as error:  # noqa: BLE001 - every failure counts
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_many_writers_of_the_same_blob(tmp_path):
    store = BlobStore(tmp_path / "store")
    for round_ in range(30):
        data = os.urandom(256 << 10) + bytes([round_])
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        readers_saw: list[bytes] = []

        def write_and_read(data=data, digest=digest, readers_saw=readers_saw):
            store.put_bytes(data)
            readers_saw.append(store.path(digest).read_bytes())

        assert hammer(write_and_read) == []
        assert all(seen == data for seen in readers_saw)
    assert not [p for p in store.partials.iterdir() if p.stat().st_size]


def test_two_downloaders_of_the_same_blob(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob").write_bytes(os.urandom(4 << 20))
    expected = "sha256:" + hashlib.sha256((root / "blob").read_bytes()).hexdigest()
    server = FileServer(root)
    try:
        store = BlobStore(tmp_path / "cache")

        def fetch():
            # One Http per "build": the dedupe inside a build does not help across builds sharing a cache.
            Http(Progress(interactive=False)).download(f"{server.url}/blob", store, expected)
            assert hashlib.sha256(store.path(expected).read_bytes()).hexdigest() == expected[7:]

        assert hammer(fetch, 8) == []
    finally:
        server.close()
