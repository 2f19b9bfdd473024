"""`airlock push`: copy every image of a bundle into an existing registry, digests unchanged.

The bundle is verified while its images stream into a local staging store;
then each blob goes to the target once (HEAD first, cross-repository mount
where the registry offers it, upload otherwise), and manifests are PUT byte
for byte, children before the index that names them. A rerun after an
interruption moves only what the target still lacks.

Everything else in the bundle (bundle.json and its signature, binaries,
archives, manifests, SBOM) goes up as one OCI artifact
(`PREFIX/airlock/bundle:NAME-SERIAL`, see bundle/artifact.py), after the images.

A registry holds an index only when it holds every manifest the index names
(distribution answers MANIFEST_BLOB_UNKNOWN otherwise), while a bundle carries
only its own platforms of an upstream index. Such an index is narrowed to the
manifests the bundle carries: a new index, so a new digest, which the push
reports. An index the bundle carries whole keeps its upstream digest, and
every platform manifest keeps its digest either way.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin

from builder.errors import BuildError
from builder.images import RegistryClients, repository_url
from builder.progress import Progress
from builder.transfer import Http, RetryPolicy, Send
from bundle.artifact import REPOSITORY, Artifact, stage_bundle
from bundle.containerd import mirrors_hosts_toml
from bundle.jsonobject import parse_object
from bundle.manifest import Manifest
from bundle.oci import MAX_MANIFEST_BYTES, OCI_MANIFEST, media_type_of
from bundle.reference import ImageRef
from bundle.store import BlobStore, sha256_digest
from bundle.trust import TrustedKey
from bundle.unpack import image_names


@dataclass
class Target:
    host: str  # host[:port]
    prefix: str  # repository prefix, may be empty
    insecure: bool

    @classmethod
    def parse(cls, text: str, insecure: bool) -> Target:
        text = text.strip().rstrip("/")
        if "://" in text:
            raise BuildError(f"--to {text!r}: give HOST[:PORT][/PREFIX] without a scheme; add --insecure for plain HTTP")
        host, _, prefix = text.partition("/")
        if not host:
            raise BuildError("--to needs a registry host, like harbor.example:443/k8s")
        return cls(host, prefix, insecure)

    @property
    def origin(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"

    def repository(self, ref: ImageRef) -> str:
        return f"{self.prefix}/{ref.repository}" if self.prefix else ref.repository


@dataclass(frozen=True)
class Narrowed:
    """An upstream index pushed as a narrower one: only the platforms the bundle carries."""

    reference: str
    upstream_digest: str
    pushed_digest: str
    kept: tuple[str, ...]  # platforms kept, like "linux/amd64"
    dropped: int  # how many of the upstream index's manifests the bundle does not carry


@dataclass
class PushPlan:
    """What each target repository needs: blobs (config and layers) and manifests in PUT order."""

    blobs: dict[str, list[str]] = field(default_factory=dict)  # digest -> repositories needing it
    manifests: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # (repository, reference, media type, bytes)
    images: list[tuple[str, str]] = field(default_factory=list)  # (source reference, target reference)
    narrowed: list[Narrowed] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)  # digest -> repository that must already hold it (a delta's base)
    artifact: str = ""  # target reference of the bundle artifact


def plan_push(store: BlobStore, references: list[str], target: Target) -> PushPlan:
    plan = PushPlan()
    chosen: dict[str, str] = {}
    wanted = set(references)
    for name, descriptor in image_names(store.root):
        if name not in wanted:
            continue
        ref = ImageRef.parse(name)
        repository = target.repository(ref)
        previous = chosen.setdefault(repository, ref.name)
        if previous != ref.name:
            raise BuildError(f"{previous} and {ref.name} would both land in {target.host}/{repository}; push them with different --to prefixes")
        plan.images.append((name, f"{target.host}/{repository}:{ref.tag}"))
        _plan_manifest(store, descriptor["digest"], repository, ref.tag or descriptor["digest"], plan, name)
    return plan


def _plan_manifest(store: BlobStore, digest: str, repository: str, reference: str, plan: PushPlan, name: str) -> tuple[str, int]:
    """Plan one manifest (children first); return the digest and size it will have in the target."""
    data = store.read(digest, MAX_MANIFEST_BYTES)
    document = parse_object(data, f"{reference}: manifest {digest}", MAX_MANIFEST_BYTES)
    media_type = media_type_of(document)
    children = document.get("manifests")
    if isinstance(children, list):
        carried = []
        for child in children:
            if not store.exists(child["digest"]):
                continue  # a platform the bundle does not carry
            pushed, size = _plan_manifest(store, child["digest"], repository, child["digest"], plan, name)
            carried.append(child if pushed == child["digest"] else {**child, "digest": pushed, "size": size})
        if not carried:
            raise BuildError(f"{name}: the bundle carries none of the manifests of index {digest}; it is damaged, rebuild it")
        if carried != children:
            data = narrowed_index(document, carried)
            kept = tuple(platform_name(child) for child in carried)
            plan.narrowed.append(Narrowed(name, digest, sha256_digest(data), kept, len(children) - len(carried)))
    for blob in [document.get("config") or {}, *(document.get("layers") or [])]:
        if blob.get("digest"):
            repositories = plan.blobs.setdefault(blob["digest"], [])
            if repository not in repositories:
                repositories.append(repository)
    plan.manifests.append((repository, reference, media_type, data))
    return sha256_digest(data), len(data)


def narrowed_index(document: dict, carried: list[dict]) -> bytes:
    """The upstream index with only the carried manifests; every other field (annotations...) as upstream has it."""
    return json.dumps({**document, "manifests": carried}, indent=2).encode() + b"\n"


def platform_name(descriptor: dict) -> str:
    platform = descriptor.get("platform") or {}
    parts = [platform.get("os", "?"), platform.get("architecture", "?")] + ([platform["variant"]] if platform.get("variant") else [])
    return "/".join(parts)


class Pusher:
    def __init__(self, store: BlobStore, target: Target, progress: Progress, concurrency: int = 8, credentials=None, policy=None):
        self.store = store
        self.target = target
        self.progress = progress
        self.http = Http(progress, policy or RetryPolicy(), plain_http_hint="for a registry that speaks plain HTTP pass --insecure")
        self.clients = RegistryClients({})
        self.credentials = credentials
        self.concurrency = concurrency
        self.uploaded = 0
        self.skipped = 0
        self.mounted = 0
        self._lock = threading.Lock()

    def _send(self, repository: str) -> Send:
        return self.clients.sender_for(self.target.origin, repository, self.credentials)

    def _url(self, repository: str) -> str:
        return repository_url(self.target.origin, repository)

    def push(self, plan: PushPlan) -> None:
        self.progress.add_total(sum(self.store.size(digest) for digest in plan.blobs))
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="push") as pool:
            for future in [pool.submit(self._push_blob, digest, repositories) for digest, repositories in sorted(plan.blobs.items())]:
                future.result()
        for digest, repository in sorted(plan.elsewhere.items()):
            head = self.http.call("HEAD", f"{self._url(repository)}/blobs/{digest}", self._send(repository))
            if head.status_code != 200:
                raise BuildError(
                    f"{self.target.host}/{repository}: lacks {digest}, which this delta bundle leaves to its base; push the base bundle first"
                )
        for repository, reference, media_type, data in plan.manifests:
            self._push_manifest(repository, reference, media_type, data)

    def _count(self, kind: str, size: int) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)
        if kind != "uploaded":
            self.progress.advance(size, network=False)

    def _push_blob(self, digest: str, repositories: list[str]) -> None:
        size = self.store.size(digest)
        source = None
        for repository in repositories:
            send = self._send(repository)
            base = self._url(repository)
            head = self.http.call("HEAD", f"{base}/blobs/{digest}", send)
            if head.status_code == 200:
                self._count("skipped", size)
            elif source is not None and self._mount(base, send, digest, source):
                self._count("mounted", size)
            else:
                self._upload(base, send, digest, size)
                self._count("uploaded", size)
            source = source or repository

    def _mount(self, base: str, send: Send, digest: str, source: str) -> bool:
        url = f"{base}/blobs/uploads/?{urlencode({'mount': digest, 'from': source})}"
        response = self.http.call("POST", url, send, {"Content-Length": "0"})
        if response.status_code == 201:
            return True
        if response.status_code == 202 and response.headers.get("Location"):
            # The registry opened an upload instead; cancel it and upload normally.
            self.http.call("DELETE", urljoin(url, response.headers["Location"]), send)
        return False

    def _upload(self, base: str, send: Send, digest: str, size: int) -> None:
        start = f"{base}/blobs/uploads/"
        response = self.http.call("POST", start, send, {"Content-Length": "0"})
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise BuildError(f"{start}: could not start an upload (HTTP {response.status_code}: {response.text[:200]})")
        upload = urljoin(start, location)
        upload += ("&" if "?" in upload else "?") + urlencode({"digest": digest})
        path = self.store.path(digest)
        progress = self.progress

        class Counting:
            """The blob file, counted into the progress display as it is read."""

            def __init__(self):
                self._handle = open(path, "rb")

            def __len__(self):
                return size

            def read(self, amount=-1):
                data = self._handle.read(amount if amount and amount > 0 else 1 << 20)
                progress.advance(len(data))
                return data

            def close(self):
                self._handle.close()

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = self.http.call("PUT", upload, send, headers, body=Counting)
        if response.status_code != 201:
            raise BuildError(f"{base}/blobs/{digest}: upload refused (HTTP {response.status_code}: {response.text[:200]})")

    def _push_manifest(self, repository: str, reference: str, media_type: str, data: bytes) -> None:
        send = self._send(repository)
        url = f"{self._url(repository)}/manifests/{reference}"
        digest = sha256_digest(data)
        head = self.http.call("HEAD", url, send, {"Accept": media_type})
        if head.status_code == 200 and head.headers.get("Docker-Content-Digest") == digest:
            return
        response = self.http.call("PUT", url, send, {"Content-Type": media_type}, body=data)
        if response.status_code not in (200, 201):
            raise BuildError(f"{url}: manifest refused (HTTP {response.status_code}: {response.text[:200]})")
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise BuildError(f"{url}: the registry stored digest {stored}, not {digest}; it rewrote the manifest")


def plan_artifact(store: BlobStore, manifest: Manifest, artifact: Artifact, target: Target, plan: PushPlan) -> None:
    """Add the bundle artifact to a push: its blobs (HEAD first, like every blob), then its manifest under NAME-SERIAL.

    Its manifest goes last, after every image, so a node that finds the tag finds everything it names.
    """
    repository = f"{target.prefix}/{REPOSITORY}" if target.prefix else REPOSITORY
    document = parse_object(artifact.data, "the bundle artifact's manifest", MAX_MANIFEST_BYTES)
    for layer in [document["config"], *document["layers"]]:
        digest = layer["digest"]
        if store.exists(digest):
            repositories = plan.blobs.setdefault(digest, [])
            if repository not in repositories:
                repositories.append(repository)
        else:
            plan.elsewhere[digest] = repository
    plan.manifests.append((repository, artifact.tag, OCI_MANIFEST, artifact.data))
    plan.artifact = f"{target.host}/{repository}:{artifact.tag}"


def hosts_toml(upstream: str, target: Target, ca_file: str | None = None) -> str:
    """The containerd `certs.d/{upstream}/hosts.toml` that sends pulls of `upstream` to the target.

    The target is the mirror and the fallback `server` alike, so a node never reaches for the internet.
    """
    url = f"{target.origin}/v2/{target.prefix}" if target.prefix else target.origin  # with a prefix the URL holds the API root
    return mirrors_hosts_toml(f"pulls of {upstream} images go to the site registry only", [url], ca_file or "")


def run_push(
    bundle: Path, keys: list[TrustedKey], target: Target, work: Path, progress: Progress, concurrency: int = 8, credentials=None, policy=None
) -> tuple[Pusher, PushPlan, list[str]]:
    store = BlobStore(work)
    progress.log(f"verifying {bundle} and staging it in {work}")
    verified, artifact = stage_bundle(bundle, keys, work)
    references = [image.reference for image in verified.manifest.images]
    plan = plan_push(store, references, target)
    plan_artifact(store, verified.manifest, artifact, target, plan)
    pusher = Pusher(store, target, progress, concurrency, credentials, policy)
    pusher.push(plan)
    upstreams = sorted({ImageRef.parse(reference).registry for reference in references})
    return pusher, plan, upstreams
