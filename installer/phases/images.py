"""images: every bundle image pulled into containerd's k8s.io namespace from the node registry, and pinned.

The pull goes through the hosts.toml the runtime phase wrote, so it proves
the mirror path kubelet will use. When no service manager runs the node
registry (`--root`, or a first boot), this phase serves the store itself
for the duration of the pulls.
"""

from __future__ import annotations

import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from installer.node import NodeError
from installer.phases import Context, Phase
from installer.phases.runtime import CERTS_DIR

PINNED = "io.cri-containerd.pinned=pinned"
PARALLEL_PULLS = 4


def _registry_answers(listen: str) -> bool:
    """Whether something already listens where the node registry should (the running service)."""
    host, _, port = listen.rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def node_registry(context: Context):
    """The node registry for the pulls: the running service, or one served here until the pulls end."""
    config = context.config
    if context.host.dry_run or config.registry_mirror or _registry_answers(config.registry_listen):
        yield
        return
    from installer.registry import make_server

    try:
        tls = (Path(config.registry_tls_cert), Path(config.registry_tls_key)) if config.registry_tls_cert else (None, None)
        server = make_server(context.paths.store, config.registry_listen, *tls)
    except OSError as error:
        raise NodeError(f"cannot serve the store on {config.registry_listen} for the image pulls: {error}") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    context.echo(f"{'would serve' if context.host.dry_run else 'serving'} {context.paths.store} on {config.registry_listen} for the pulls")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def ctr_program(context: Context) -> str:
    found = shutil.which("ctr")
    if found:
        return found
    installed = context.paths("/usr/local/bin/ctr")
    if installed.exists():
        return str(installed)
    raise NodeError("ctr (containerd's client) was not found; install containerd or let airlock install the bundled one")


def run(context: Context) -> None:
    address = context.containerd_address
    if not context.host.dry_run:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(address)
            except OSError:
                raise NodeError(
                    f"containerd is not answering on {address}; start it (systemctl start containerd) "
                    "or pass --containerd-address, or skip this phase"
                ) from None
    ctr = [ctr_program(context) if not context.host.dry_run else "ctr", "--address", address, "--namespace", "k8s.io"]
    hosts_dir = str(context.paths(CERTS_DIR))
    platform = f"linux/{context.arch}"
    def pull(reference: str) -> None:
        context.host.run([*ctr, "images", "pull", "--hosts-dir", hosts_dir, "--platform", platform, reference], show=False, timeout=1800)
        # Pinned images are never removed by kubelet's image garbage collection.
        context.host.run([*ctr, "images", "label", reference, PINNED], show=False)
        if not context.host.dry_run:
            context.echo(f"  pulled and pinned {reference}")

    with node_registry(context):
        # Pulls overlap: one image's layers decompress while another's download.
        workers = 1 if context.host.dry_run else PARALLEL_PULLS
        with ThreadPoolExecutor(workers, thread_name_prefix="pull") as pool:
            for future in [pool.submit(pull, image.reference) for image in context.manifest.images]:
                future.result()


PHASE = Phase("images", "pull every bundle image into containerd (k8s.io) through the node registry and pin it", run)
