"""images: every bundle image pulled into containerd's k8s.io namespace from the node registry, and pinned.

The pull goes through the hosts.toml the runtime phase wrote, so it proves
the mirror path kubelet will use. When no service manager runs the node
registry (`--root`, or a first boot), this phase serves the store itself
for the duration of the pulls.

Whoever answers on the registry's address is not trusted by being there: a
listener that is neither this process nor airlock-registry.service is
refused before any pull, and every image containerd holds afterwards must
have the digest bundle.json names (that check alone guards a node pulling
from another node's registry, `registry.mirror`). The one exception is an
index that `airlock push` narrowed to the platforms the bundle carries: it is
accepted only when every manifest it names is one bundle.json lists for that
image and the node's own platform is among them.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from bundle.containerd import minor_of
from bundle.oci import INDEX_TYPES, MAX_MANIFEST_BYTES
from installer.containerd_release import ask
from installer.errors import NodeError
from installer.phases import Context, Phase
from installer.registry.listeners import Listener, listeners_on, parent_pids
from installer.render.containerd_config import CERTS_DIR

PINNED = "io.cri-containerd.pinned=pinned"
PARALLEL_PULLS = 4
SERVICE = "airlock-registry.service"
# After the registry phase (re)started the service, how long it may take to bind its port.
SERVICE_START_SECONDS = 10.0


def service_pid(context: Context) -> int | None:
    """The main process of airlock-registry.service, when a service manager runs it."""
    if not context.start_services:
        return None
    result = context.host.run(["systemctl", "show", "--property", "MainPID", "--value", SERVICE], check=False, show=False, timeout=30)
    text = result.stdout.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def check_listeners(listen: str, found: list[Listener], ours: int | None) -> None:
    """Refuse unless every listener on `listen` is the registry service's process (or a child of it)."""
    for listener in found:
        if ours is None or listener.pid is None or ours not in parent_pids(listener.pid):
            owner = f"{SERVICE} (pid {ours})" if ours else f"no {SERVICE} is running"
            raise NodeError(
                f"registry.listen {listen} is held by {listener.describe()}, not by airlock ({owner}); "
                "images from it could be anyone's. Stop that process (or set registry.listen to a free address) and rerun"
            )


def wait_for_listeners(context: Context) -> list[Listener]:
    listen = context.config.registry_listen
    deadline = time.monotonic() + (SERVICE_START_SECONDS if context.start_services else 0)
    while True:
        found = listeners_on(listen)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


@contextmanager
def node_registry(context: Context):
    """The node registry for the pulls: the running service (checked to be airlock's), or one served here until the pulls end."""
    config = context.config
    if context.host.dry_run or not context.serves_registry:
        yield
        return
    found = wait_for_listeners(context)
    if found:
        check_listeners(config.registry_listen, found, service_pid(context))
        context.echo(f"pulling from {SERVICE} on {config.registry_listen}")
        yield
        return
    from installer.registry.serving import make_server

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


def pull_flags(ctr: str) -> list[str]:
    """containerd 2.x's ctr pulls through the daemon's transfer service and, unless told `--skip-metadata`, fetches
    the manifest of every platform in an index (cmd/ctr/commands/images/pull.go, v2.0.0 to v2.3.4); a bundle carries
    only its platforms' blobs, so 2.x is told. 1.x's ctr fetches the node's platform only and has no such flag."""
    return ["--skip-metadata"] if minor_of(ask(ctr)) >= (2, 0) else []


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
    program = ctr_program(context) if not context.host.dry_run else shutil.which("ctr")
    ctr = [program or "ctr", "--address", address, "--namespace", "k8s.io"]
    flags = pull_flags(program) if program else []
    hosts_dir = str(context.paths(CERTS_DIR))
    platform = f"linux/{context.arch}"
    def pull(image) -> None:
        reference = image.reference
        context.host.run([*ctr, "images", "pull", *flags, "--hosts-dir", hosts_dir, "--platform", platform, reference], show=False, timeout=1800)
        if not context.host.dry_run:
            check_digest(context, ctr, image, platform)
        # Pinned images are never removed by kubelet's image garbage collection.
        context.host.run([*ctr, "images", "label", reference, PINNED], show=False)
        if not context.host.dry_run:
            context.echo(f"  pulled and pinned {reference}")

    with node_registry(context):
        # Pulls overlap: one image's layers decompress while another's download.
        workers = 1 if context.host.dry_run else PARALLEL_PULLS
        with ThreadPoolExecutor(workers, thread_name_prefix="pull") as pool:
            for future in [pool.submit(pull, image) for image in context.manifest.images]:
                future.result()


def image_digests(listing: str) -> dict[str, str]:
    """name -> target digest from `ctr images ls` (REF TYPE DIGEST SIZE PLATFORMS LABELS)."""
    found = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            found[fields[0]] = fields[2]
    return found


def narrowed_index_of(data: bytes, image, platform: str) -> bool:
    """Whether `data` is an index that names only manifests bundle.json lists for `image`, one of them for `platform`.

    `airlock push` narrows an upstream index to the platforms a bundle carries; its
    manifests keep their upstream digests, which bundle.json signs, so such an index
    can lead containerd to nothing the bundle does not hold.
    """
    if image.media_type not in INDEX_TYPES or len(data) > MAX_MANIFEST_BYTES:
        return False
    try:
        index = json.loads(data)
    except ValueError:
        return False
    if not isinstance(index, dict) or index.get("mediaType", image.media_type) not in INDEX_TYPES:
        return False
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        return False
    signed = set(image.blobs)
    os_name, _, arch = platform.partition("/")
    has_platform = False
    for descriptor in manifests:
        if not isinstance(descriptor, dict) or descriptor.get("digest") not in signed:
            return False
        target = descriptor.get("platform")
        if isinstance(target, dict) and target.get("os") == os_name and target.get("architecture") == arch:
            has_platform = True
    return has_platform


def check_digest(context: Context, ctr: list[str], image, platform: str) -> None:
    """The image containerd now holds under its reference must be the one bundle.json names (or that index narrowed
    by `airlock push`); otherwise it is removed."""
    reference, expected = image.reference, image.digest
    got = image_digests(context.host.run([*ctr, "images", "ls"], show=False).stdout).get(reference)
    if got == expected:
        return
    if got is not None:
        held = context.host.run([*ctr, "content", "get", got], check=False, show=False, binary=True)
        if held.returncode == 0 and narrowed_index_of(held.stdout, image, platform):
            context.echo(f"  {reference}: {got} is bundle.json's index {expected} narrowed to the platforms the bundle carries")
            return
        context.host.run([*ctr, "images", "rm", reference], check=False, show=False)
    source = context.config.registry_mirror or ", ".join(context.config.registry_mirrors) or context.config.registry_listen
    raise NodeError(
        f"image {reference}: bundle.json names {expected} but containerd got {got or 'nothing'} from {source}; "
        "something other than this bundle's registry answered there (the image was removed). Find and stop it, then rerun"
    )


PHASE = Phase("images", "pull every bundle image into containerd (k8s.io) through the node registry and pin it", run)
