"""`airlock registry serve` under 64 concurrent clients for a bounded time: no errors, flat memory, every byte verified."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
from pathlib import Path

from tests.test_registry import Served

CLIENTS = 64
SECONDS = float(os.environ.get("AIRLOCK_LOAD_SECONDS", "8"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def every_blob(store: Path) -> list[tuple[str, str]]:
    """(path, digest) of every manifest and blob of every image, addressed the way containerd does."""
    requests = []
    index = json.loads((store / "index.json").read_bytes())
    for entry in index["manifests"]:
        name = entry["annotations"]["io.containerd.image.name"].rsplit(":", 1)[0]
        host, repository = name.split("/", 1)
        stack = [entry["digest"]]
        while stack:
            digest = stack.pop()
            requests.append((f"/v2/{repository}/manifests/{digest}?ns={host}", digest))
            document = json.loads((store / "blobs/sha256" / digest[7:]).read_bytes())
            stack += [m["digest"] for m in document.get("manifests", []) if (store / "blobs/sha256" / m["digest"][7:]).exists()]
            for blob in [document.get("config"), *document.get("layers", [])]:
                if blob:
                    requests.append((f"/v2/{repository}/blobs/{blob['digest']}?ns={host}", blob["digest"]))
    return requests


def test_64_clients_no_errors_flat_memory_verified_bytes(store):
    server = Served(store)
    targets = every_blob(store)
    deadline = time.monotonic() + SECONDS
    served, errors, moved = [0], [], [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        chooser = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            while time.monotonic() < deadline:
                path, digest = chooser.choice(targets)
                connection.request("GET", path, headers={"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"})
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == digest
                with lock:
                    served[0] += 1
                    moved[0] += len(body)
                    if not ok:
                        errors.append((path, response.status))
        except Exception as error:  # noqa: BLE001 - any client failure is an error to count
            with lock:
                errors.append(("connection", repr(error)))
        finally:
            connection.close()

    try:
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
        warm = rss_kib(server.process.pid)
        for thread in threads:
            thread.start()
        samples = []
        while any(thread.is_alive() for thread in threads):
            samples.append(rss_kib(server.process.pid))
            time.sleep(0.25)
        for thread in threads:
            thread.join()
        peak = max(samples)
        print(f"load: {served[0]} requests, {moved[0] >> 20} MiB, {len(errors)} errors, RSS {warm >> 10} -> peak {peak >> 10} MiB")
        assert errors == []
        assert served[0] > CLIENTS * 10
        # Flat: the server's memory does not grow with the load (threads' stacks aside).
        assert peak < warm + 64 * 1024 and peak < 100 * 1024
    finally:
        assert server.close() == 0
