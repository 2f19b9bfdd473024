"""Copy images over the OCI distribution API into the content store.

Upstream indexes and manifests are kept byte for byte (so digests never
change); only the blobs of the selected linux platforms are fetched. Every
manifest and blob is checked against its digest before it is stored. Blobs
shared between images are fetched once.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import oras.auth
import oras.container
import oras.provider
import requests

from builder.artifacts import IMAGE_SIGNERS
from builder.contents import Contents, tap_kind
from builder.errors import BuildError, FetchError
from builder.progress import Progress
from builder.transfer import Http, PolicySession, Send
from bundle import apis
from bundle.apis import ManifestError, load_documents
from bundle.jsonobject import parse_object
from bundle.manifest import ImageEntry
from bundle.meter import human_size as human
from bundle.oci import INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST_BYTES, media_type_of
from bundle.provenance import PINNED, PUBLISHED, Provenance
from bundle.reference import ImageRef
from bundle.store import BlobStore
from bundle.version import KubernetesVersion

MAX_CONFIG_BYTES = 16 << 20  # an image config blob (the store's own cap on a small blob)

ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
DEFAULT_ENDPOINTS = {"docker.io": "https://registry-1.docker.io"}

def parse_mirrors(pairs: list[str]) -> dict[str, str]:
    """`--registry-mirror HOST=URL` values as {host: base URL}."""
    mirrors = {}
    for pair in pairs:
        host, sep, url = pair.partition("=")
        if not sep or not host or not url.startswith(("http://", "https://")):
            raise BuildError(f"--registry-mirror {pair!r}: expected HOST=URL, like registry.k8s.io=https://mirror.example:5000")
        mirrors[host.strip()] = url.strip().rstrip("/")
    return mirrors


def fallback_control_plane_images(version: KubernetesVersion) -> list[str]:
    """The list kubeadm of that minor and patch answers, from builder/versions.py (only with --image-list-from-table)."""
    from builder.versions import IMAGES, images_for

    row = images_for(version.minor, version.patch)
    if row is None:
        known = sorted({r.minor for r in IMAGES})
        raise BuildError(f"--image-list-from-table has no row for Kubernetes {version} (it knows 1.{known[0]}-1.{known[-1]}); let kubeadm list the images")
    names = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"]
    return [f"registry.k8s.io/{name}:{version}" for name in names] + [
        f"registry.k8s.io/coredns/coredns:{row.coredns}",
        f"registry.k8s.io/pause:{row.pause}",
        f"registry.k8s.io/etcd:{row.etcd}",
    ]


def kubeadm_images(kubeadm: Path, version: KubernetesVersion) -> list[str]:
    """Ask a kubeadm binary for the control-plane image list of an exact version."""
    result = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", str(version)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    if result.returncode != 0:
        raise BuildError(f"kubeadm config images list failed: {result.stderr.strip()[:300]}")
    images = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    for image in images:
        ImageRef.parse(image)
    if not images:
        raise BuildError("kubeadm config images list printed no images")
    return images


def component_versions(images: list[str]) -> dict[str, str]:
    """etcd, coredns and pause versions from the control-plane image list."""
    found = {}
    for text in images:
        ref = ImageRef.parse(text)
        short = ref.repository.rsplit("/", 1)[-1]
        if short in ("etcd", "coredns", "pause") and ref.tag:
            found[short] = ref.tag
    return found


# An addon manifest is a few KiB of YAML; bundle.apis.load_documents bounds what a hostile one may cost.
MAX_ADDON_MANIFEST_BYTES = apis.MAX_MANIFEST_BYTES


def images_in_manifest(data: bytes, where: str) -> list[str]:
    """Every container image named in a multi-document Kubernetes YAML (parsed with limits: no aliases, bounded size)."""
    try:
        documents = load_documents(data)
    except ManifestError as error:
        raise BuildError(f"{where}: {error}") from None
    return images_in_documents(documents)


def images_in_documents(documents: list) -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("containers", "initContainers", "ephemeralContainers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        found.append(container["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(documents)
    return list(dict.fromkeys(found))


class RegistryClients:
    """One oras-py client per (registry, repository), because bearer tokens are
    scoped to a repository; all share one connection pool."""

    def __init__(self, mirrors: dict[str, str], timeout=(15, 60)):
        self.mirrors = mirrors
        self._session = PolicySession(timeout)  # redirects and credentials as bundle/netpolicy.py says, oras-py's requests too
        self._clients: dict[tuple[str, str], oras.provider.Registry] = {}
        self._lock = threading.Lock()

    def base_url(self, registry: str) -> str:
        if registry in self.mirrors:
            return self.mirrors[registry]
        return DEFAULT_ENDPOINTS.get(registry, f"https://{registry}")

    def sender(self, ref: ImageRef) -> Send:
        return self.sender_for(self.base_url(ref.registry), ref.repository)

    def sender_for(self, base: str, repository: str, credentials: tuple[str, str] | None = None) -> Send:
        """A send function for one repository of the registry at `base`, authenticated by oras-py."""
        origin = _origin(base)
        key = (origin, repository)
        self._session.scope_for(origin)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                host = origin.split("://", 1)[1]
                client = oras.provider.Registry(host, insecure=origin.startswith("http://"))
                client.session = self._session
                client.auth.session = self._session
                if credentials:
                    client.auth.set_basic_auth(*credentials)
                else:
                    client.auth.load_configs(oras.container.Container(f"{host}/{repository}:x"))
                self._clients[key] = client
        # oras-py's own retry loop sleeps for minutes; our Http does retries, so call the undecorated request.
        raw = oras.provider.Registry.do_request.__wrapped__

        def send(method: str, url: str, headers: dict, stream: bool, data=None) -> requests.Response:
            try:
                return raw(client, url, method, headers=dict(headers), stream=stream, data=data)
            except RecursionError:
                # oras-py reads token answers with response.json(): a hostile one nests too deeply for the parser.
                raise FetchError(f"{url}: the registry's answer nests JSON too deeply to be a registry's; refusing it") from None
            except (ValueError, oras.auth.AuthenticationException) as error:
                # oras-py raises these when a 401/403 challenge cannot be answered.
                raise FetchError(
                    f"{url}: HTTP 401, the registry wants credentials it did not get or accept ({error}); "
                    f"add them to ~/.docker/config.json (docker login {origin.split('://', 1)[1]})"
                ) from None

        return send


def _origin(base: str) -> str:
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def repository_url(base: str, repository: str) -> str:
    """`{origin}/v2/{prefix/}{repository}`: a base URL's path is a repository prefix (Harbor projects, mirrors)."""
    scheme, _, rest = base.rstrip("/").partition("://")
    host, _, prefix = rest.partition("/")
    return f"{scheme}://{host}/v2/{prefix + '/' if prefix else ''}{repository}"


@dataclass
class CopiedImage:
    entry: ImageEntry
    blobs: dict[str, int] = field(default_factory=dict)  # every digest it needs (index, manifests, configs, layers)
    layers: list[tuple[str, list[str]]] = field(default_factory=list)  # (linux/ARCH, its layer digests bottom first)


def _platform(descriptor: dict) -> tuple[str, str, str | None]:
    platform = descriptor.get("platform") or {}
    return platform.get("os", ""), platform.get("architecture", ""), platform.get("variant")


class ImageCopier:
    def __init__(
        self,
        http: Http,
        store: BlobStore,
        clients: RegistryClients,
        arches: list[str],
        pool: ThreadPoolExecutor,
        progress: Progress,
        signatures=None,
        contents: Contents | None = None,
    ):
        self.signatures = signatures  # builder.signatures.Signatures: images of registries with a known signer are verified
        self.http = http
        self.contents = contents
        self._kinds: dict[str, str | None] = {}
        self.store = store
        self.clients = clients
        self.arches = arches
        self.pool = pool
        self.progress = progress
        self._blobs: dict[str, Future] = {}
        self._sources: dict[str, tuple[str, int, Send]] = {}
        self._lock = threading.Lock()

    def copy(self, text: str) -> CopiedImage:
        """Resolve an image's index and manifests (stored at once) and register its blobs.

        Layer downloads start only when `schedule` is called, so the caller
        can order them the way they will be packed.
        """
        ref = ImageRef.parse(text)
        send = self.clients.sender(ref)
        base = repository_url(self.clients.base_url(ref.registry), ref.repository)
        digest, data, media_type = self._manifest(ref, base, send, ref.reference, ref.digest)
        copied = CopiedImage(ImageEntry(str(ref), digest, media_type, ()))
        copied.blobs[digest] = len(data)
        document = parse_object(data, f"{ref} manifest", MAX_MANIFEST_BYTES)
        platforms: list[str] = []
        if media_type in INDEX_TYPES:
            for child in self._select(ref, document):
                child_digest, child_data, _ = self._manifest(ref, base, send, child["digest"], child["digest"])
                copied.blobs[child_digest] = len(child_data)
                platform = "linux/" + child["platform"]["architecture"]
                self._register_blobs(ref, base, send, parse_object(child_data, f"{ref} manifest {child_digest}", MAX_MANIFEST_BYTES), copied, platform)
                platforms.append(platform)
        elif media_type in MANIFEST_TYPES:
            self._register_blobs(ref, base, send, document, copied, "")
            config = document["config"]["digest"]
            self.schedule([config]).wait(config)
            info = parse_object(self.store.read(config, MAX_CONFIG_BYTES), f"{ref} config", MAX_CONFIG_BYTES)
            platform = f"{info.get('os', 'linux')}/{info.get('architecture', '')}"
            if info.get("architecture") not in self.arches:
                raise BuildError(f"{ref} is a single-platform image for {platform}, not one of linux/{','.join(self.arches)}")
            platforms.append(platform)
            copied.layers = [(platform, layers) for _, layers in copied.layers]
        else:
            raise BuildError(f"{ref}: unsupported manifest media type {media_type!r} (schema 1 images cannot be bundled)")
        size = sum(copied.blobs.values())
        provenance = image_provenance(ref)
        signer = IMAGE_SIGNERS.get(ref.registry)
        if signer is not None and self.signatures is not None:
            found = self.signatures.image(ref, digest, base, send, signer)
            provenance = self.signatures.keep(found) if found is not None else provenance
        copied.entry = ImageEntry(str(ref), digest, media_type, tuple(sorted(set(platforms))), size, tuple(sorted(copied.blobs)), provenance)
        signed = ", signed" if provenance.kind == "signed" else ""
        self.progress.log(f"image {ref} {digest[:19]} {','.join(copied.entry.platforms)} ({human(size)}{signed})")
        return copied

    def _manifest(self, ref: ImageRef, base: str, send: Send, reference: str, pinned: str | None) -> tuple[str, bytes, str]:
        url = f"{base}/manifests/{reference}"
        digest = pinned
        if digest is None:
            response = self.http.head(url, {"Accept": ACCEPT}, send)
            announced = response.headers.get("Docker-Content-Digest") if response is not None else None
            digest = announced if announced and self.store.exists(announced) else None
        if digest and self.store.exists(digest):
            data = self.store.read(digest, MAX_MANIFEST_BYTES)
        else:
            fetched = self.http.get_bytes(url, MAX_MANIFEST_BYTES, {"Accept": ACCEPT}, send)
            data = fetched.body
            expected = digest or fetched.headers.get("Docker-Content-Digest")
            # Stored under what it hashes to (harmless even when wrong), then held to what was asked for.
            digest = self.store.put_bytes(data)
            if expected and expected != digest:
                raise FetchError(f"{url}: checksum mismatch: expected {expected}, got {digest}")
        return digest, data, media_type_of(parse_object(data, f"{url}: the {ref} manifest {digest}", MAX_MANIFEST_BYTES))

    def _select(self, ref: ImageRef, index: dict) -> list[dict]:
        chosen = []
        for arch in self.arches:
            candidates = [
                d
                for d in index.get("manifests", [])
                if _platform(d)[0] == "linux" and _platform(d)[1] == arch and _platform(d)[2] in (None, "", "v8" if arch == "arm64" else None)
            ]
            if not candidates:
                offered = sorted({"/".join(filter(None, _platform(d))) for d in index.get("manifests", [])})
                raise BuildError(
                    f"{ref} has no linux/{arch} image (it offers {', '.join(offered) or 'nothing'}); drop --arch {arch} or pick another tag"
                )
            chosen.append(candidates[0])
        return chosen

    def _register_blobs(self, ref: ImageRef, base: str, send: Send, manifest: dict, copied: CopiedImage, platform: str) -> None:
        layers = []
        for number, descriptor in enumerate([manifest.get("config") or {}, *(manifest.get("layers") or [])]):
            digest, size = descriptor.get("digest"), descriptor.get("size")
            if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
                raise BuildError(f"{ref}: a manifest descriptor has no valid digest or size")
            copied.blobs[digest] = size
            if number:
                layers.append(digest)
            with self._lock:
                self._sources.setdefault(digest, (f"{base}/blobs/{digest}", size, send))
                if number:
                    self._kinds.setdefault(digest, tap_kind(str(descriptor.get("mediaType") or "")))
        copied.layers.append((platform, layers))

    def schedule(self, digests: list[str]) -> ImageCopier:
        """Start downloading these registered blobs, in this order; each digest is fetched once per build."""
        for digest in digests:
            with self._lock:
                if digest in self._blobs or digest not in self._sources:
                    continue
                url, size, send = self._sources[digest]
                kind = self._kinds.get(digest)
                if self.store.exists(digest) and (self.contents is None or kind is None or self.contents.known(digest)):
                    future: Future = Future()
                    future.set_result(digest)
                else:
                    if not self.store.exists(digest):
                        self.progress.add_total(size)
                    future = self.pool.submit(self._fetch, url, digest, send, kind, size)
                self._blobs[digest] = future
        return self

    def _fetch(self, url: str, digest: str, send: Send, kind: str | None, size: int) -> str:
        """Download a blob of at most its descriptor's `size` (nothing when it is cached); a layer is read for its contents on the way in."""
        if self.contents is None:
            self.http.download(url, self.store, digest, None, send, size=size)
            return digest
        with self.contents.scanning(digest, kind) as tap:
            self.http.download(url, self.store, digest, None, send, size=size, tap=tap)
        return digest

    def wait(self, digest: str) -> None:
        """Block until a scheduled blob is in the store; re-raise its download error."""
        with self._lock:
            future = self._blobs.get(digest)
        if future is not None:
            future.result()


def image_provenance(ref: ImageRef) -> Provenance:
    """Before signatures: an image named by digest is pinned; one named by tag has the digest its registry published for the tag."""
    if ref.digest:
        return Provenance(PINNED, detail="the digest in its reference")
    return Provenance(PUBLISHED, detail=f"the digest {ref.registry} gave for tag {ref.tag}")
