"""`airlock build`: resolve, fetch, copy images, pack and sign one bundle."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from builder import addons, artifacts, images, osv, sign
from builder import versions as versions_table
from builder.contents import Contents, Inventory, inventory_of_file, inventory_of_image, tap_kind
from builder.errors import BuildError, FetchError, HttpStatusError, ResolveError
from builder.options import BuildOptions
from builder.pack import DeferredPack, Packed, pack
from builder.progress import Progress
from builder.resolve import resolve
from builder.sbom import spdx_document
from builder.sidecars import NODE_INSTALLER, review_sidecars, write_sidecars
from builder.signatures import Signatures
from builder.split import write_parts_list
from builder.transfer import Http, RetryPolicy
from bundle.apis import load_documents
from bundle.atomic import AtomicFile, write_atomic
from bundle.errors import NO_SPACE, TrustError, no_space
from bundle.keyless import TrustRoot
from bundle.manifest import (
    API_FINDINGS,
    NODE_PYZ,
    REVIEW_MEMBERS,
    SBOM,
    VULNERABILITIES,
    BaseRef,
    FileEntry,
    ImageEntry,
    Manifest,
    format_time,
    member_order,
)
from bundle.meter import human_size as human
from bundle.provenance import PINNED, PUBLISHED, TRUSTED_ROOT_MEMBER, UNPINNED, BundleProvenance, Provenance, shortfall
from bundle.reference import ImageRef
from bundle.smallfile import SmallFileError, read_small_file
from bundle.store import CONTAINERD_NAME, OCI_LAYOUT, REF_NAME, BlobStore, copy_verified, layout_index
from bundle.version import KubernetesVersion

RELEASES_HINT = (
    f"give a released version (v1.MINOR.PATCH) or a label the release server publishes (stable, stable-1.MINOR, latest-1.MINOR); "
    f"airlock supports Kubernetes {versions_table.SUPPORTED_RANGE}"
)
# The Sigstore trust root shipped with airlock (data, not code: builder/data/README.md says where it comes from).
DEFAULT_TRUSTED_ROOT = Path(__file__).resolve().parent / "data" / "trusted_root.json"
MAX_TRUSTED_ROOT_BYTES = 1 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "airlock"


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def read_images_file(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise BuildError(f"--images-file {path}: {error.strerror}") from None
    found = [line.split("#", 1)[0].strip() for line in lines]
    return [line for line in found if line]


@dataclass(frozen=True)
class Base:
    """The bundle a delta builds on: what it holds, by digest."""

    manifest: Manifest
    sha256: str

    @property
    def digests(self) -> dict[str, int]:
        return {entry.sha256: entry.size for entry in self.manifest.files}


def read_base(path: Path) -> Base:
    """`--base`: an earlier bundle, or its bundle.json."""
    from bundle.verify import read_manifest_unverified

    try:
        if path.suffix == ".json" and not path.name.endswith(".parts.json"):
            data = path.read_bytes()
            manifest = Manifest.parse(data)
        else:
            manifest, data, _ = read_manifest_unverified(path)
    except OSError as error:
        raise BuildError(f"--base {path}: {error.strerror}") from None
    return Base(manifest, hashlib.sha256(data).hexdigest())


def version_line(requested: str, version: object, base: Manifest | None) -> str:
    """The build's first progress line: a delta goes from its base's version; otherwise a label shows what it resolved to."""
    asked = f"asked {requested}" if requested != str(version) else ""
    if base is not None:
        return f"kubernetes {base.version} -> {version} (delta on serial {base.serial}{', ' + asked if asked else ''})"
    return f"kubernetes {requested} -> {version}" if asked else f"kubernetes {version}"


@dataclass
class BuildResult:
    output: Path
    manifest: Manifest
    manifest_sha256: str
    network_bytes: int
    seconds: float
    files: tuple[Path, ...] = ()  # the bundle, or its parts and parts list (+ .sig)
    sidecars: tuple[Path, ...] = ()


class Builder:
    def __init__(self, options: BuildOptions, progress: Progress):
        self.options = options
        self.progress = progress
        self.cache_dir = Path(options.cache_dir or default_cache_dir())
        self.store = BlobStore(self.cache_dir)
        self.http = Http(progress, RetryPolicy(), plain_http_hint="give that server as http:// in --release-url, --github-url or --registry-mirror")
        self.pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="fetch")
        self.base = read_base(options.base) if options.base else None
        self.unsupported = False  # set once the version is resolved: outside the supported range but allowed
        self.image_pool = ThreadPoolExecutor(options.concurrency, thread_name_prefix="image")
        self.contents = Contents(self.store, self.cache_dir, enabled=not options.no_scan)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.image_pool.shutdown(wait=True, cancel_futures=True)

    # Pinned URLs (release assets under an exact version) never change, so the
    # URL -> digest mapping is remembered and a warm build requests nothing.
    def _memo_path(self, url: str) -> Path:
        return self.cache_dir / "urls" / hashlib.sha256(url.encode()).hexdigest()

    def fetch_pinned(self, url: str, count_total: bool = True) -> str:
        memo = self._memo_path(url)
        if memo.is_file():
            digest = memo.read_text().strip()
            if self.store.exists(digest):
                return digest
        digest = self.http.download(url, self.store, count_total=count_total)
        write_atomic(memo, digest.encode())
        return digest

    def fetch_optional(self, url: str, limit: int) -> bytes | None:
        """A small file under a pinned URL that may not exist (a signature): remembered when present, asked again when absent."""
        memo = self._memo_path(url)
        if memo.is_file():
            digest = memo.read_text().strip()
            if self.store.exists(digest):
                return self.store.read(digest, limit)
        fetched = self.http.get_bytes(url, limit, missing_ok=True)
        if fetched is None:
            return None
        write_atomic(memo, self.store.put_bytes(fetched.body).encode())
        return fetched.body

    def checksum_for(self, artifact: artifacts.Artifact) -> str | None:
        if artifact.checksum.pinned is not None:
            return artifact.checksum.pinned
        if artifact.checksum.url is None:
            return None
        digest = self.fetch_pinned(artifact.checksum.url, count_total=False)
        text = self.store.read(digest, 1 << 20).decode("utf-8", "replace")
        found = artifacts.parse_checksum_file(text, artifact.checksum.name)
        if found is None:
            raise FetchError(f"{artifact.checksum.url}: holds no sha256 for {artifact.checksum.name or artifact.url}")
        return found

    def fetch_artifact(self, artifact: artifacts.Artifact) -> FileEntry:
        upstream = self.checksum_for(artifact)
        provenance = file_provenance(artifact)
        if self.base is not None and upstream in self.base.digests:
            provenance = self.signed(artifact, upstream) or provenance
            # A delta does not carry what its base has: no download either.
            self.progress.log(f"file {artifact.member} (unchanged since the base)")
            return FileEntry(
                artifact.member, upstream, self.base.digests[upstream], artifact.mode, artifact.url, upstream, carried=False, provenance=provenance
            )
        cached = upstream is not None and self.store.exists("sha256:" + upstream)
        if upstream is None:
            digest = self.fetch_pinned(artifact.url)
        else:
            # Binaries and archives are read for Go build info while they download (nothing when already known).
            with self.contents.scanning("sha256:" + upstream, tap_kind(path=artifact.member), artifact.member) as tap:
                digest = self.http.download(artifact.url, self.store, "sha256:" + upstream, count_total=True, tap=tap)
        hexdigest = digest.split(":", 1)[1]
        provenance = self.signed(artifact, hexdigest) or provenance
        self.progress.log(f"file {artifact.member} ({human(self.store.size(digest))}{', cached' if cached else ''}{', signed' if provenance.kind == 'signed' else ''})")
        if provenance.kind == UNPINNED:
            self.progress.log(
                f"warning: {artifact.member} is UNPINNED: {artifact.url} is published without a checksum and nothing pinned it, so only TLS "
                f"vouches for it (sha256 {hexdigest}); review the file, then pin it"
                + (" with --flannel-sha256 " + hexdigest if artifact.component == "flannel" else "")
                + ", or refuse such builds with --require pinned"
            )
        return FileEntry(artifact.member, hexdigest, self.store.size(digest), artifact.mode, artifact.url, upstream, provenance=provenance)

    def signed(self, artifact: artifacts.Artifact, sha256: str, carry: bool = True) -> Provenance | None:
        """The artifact's verified upstream signature, if its publisher signs and published one; its evidence is carried."""
        if artifact.signer is None:
            return None
        found = self.signatures.file(artifact.member, artifact.url, sha256, artifact.signer)
        if found is None:
            return None
        return self.signatures.keep(found) if carry else found.provenance

    def host_kubeadm(self, version: KubernetesVersion, in_bundle: Future | None) -> str:
        """The digest, in the cache, of the build host's own kubeadm of exactly `version`.

        It is the bundle's when the bundle carries the host's architecture; otherwise it is
        fetched (checked against its .sha256) into the cache only, never into the bundle.
        """
        arch = host_arch()
        if platform.system() != "Linux" or arch not in artifacts.ARCHES:
            raise BuildError(
                f"this build host ({platform.system()}/{platform.machine()}) cannot run a linux kubeadm to list the control-plane images; "
                "build on linux amd64/arm64, or pass --image-list-from-table (etcd and coredns can differ within a minor)"
            )
        if in_bundle is not None:
            in_bundle.result()  # fetched (or found unchanged in the base) by the bundle's own download
        artifact = artifacts.kubeadm_for(self.options.release_url, str(version), arch)
        upstream = self.checksum_for(artifact)
        digest = "sha256:" + upstream
        if not self.store.exists(digest):
            self.http.download(artifact.url, self.store, digest, count_total=False)
            if in_bundle is None:
                self.progress.log(f"kubeadm {version} linux/{arch} fetched into the cache (not the bundle) to list the control-plane images")
        if in_bundle is None:
            # It runs on this host: its signature, when published, must verify too (it is not carried).
            self.signed(artifact, upstream, carry=False)
        return digest

    def control_plane_images(self, version: KubernetesVersion, in_bundle: Future | None) -> list[str]:
        """Ask a kubeadm of the exact version; the built-in table only when --image-list-from-table says so."""
        if self.options.image_list_from_table:
            self.progress.log(
                f"warning: --image-list-from-table: control-plane images from the built-in 1.{version.minor} table, not from kubeadm {version}; "
                "etcd, coredns and pause can change within a minor, and a node then lacks an image kubelet needs"
            )
            return images.fallback_control_plane_images(version)
        digest = self.host_kubeadm(version, in_bundle)
        with tempfile.TemporaryDirectory(prefix="airlock-kubeadm-") as scratch:
            runnable = Path(scratch) / "kubeadm"
            with self.store.open(digest) as source, open(runnable, "wb") as target:
                shutil.copyfileobj(source, target)
            runnable.chmod(0o700)
            try:
                return images.kubeadm_images(runnable, version)
            except OSError as error:
                raise BuildError(
                    f"kubeadm {version} (linux/{host_arch()}) could not run to list the control-plane images: {error.strerror or error}; "
                    "pass --image-list-from-table to use the built-in table instead"
                ) from None

    def read_label(self, label: str) -> bytes:
        url = f"{self.options.release_url.rstrip('/')}/release/{label}.txt"
        try:
            return self.http.get_bytes(url, 4096).body
        except HttpStatusError as error:
            if error.status not in (403, 404):
                raise
            raise ResolveError(f"no such release: {url} does not exist (HTTP {error.status}), so the label {label} names no version there; {RELEASES_HINT}") from None

    def check_release(self, version: KubernetesVersion) -> None:
        """Before any download: the release server has `version` (its kubeadm checksum for the first architecture).

        That file is read by the build anyway (and kept in the cache), so the check costs one small request.
        """
        artifact = artifacts.kubeadm_for(self.options.release_url, str(version), self.options.arches[0])
        try:
            self.checksum_for(artifact)
        except HttpStatusError as error:
            if error.status not in (403, 404):
                raise
            raise ResolveError(
                f"no such release: Kubernetes {version} is not published at {self.options.release_url} "
                f"({artifact.checksum.url}: HTTP {error.status}); {RELEASES_HINT}"
            ) from None

    def run(self) -> BuildResult:
        started = time.monotonic()
        options = self.options = self.options.checked()
        extra_images = list(options.images) + (read_images_file(options.images_file) if options.images_file else [])
        for text in extra_images:
            ImageRef.parse(text)
        extra_manifests = addons.read_extra(options.manifests)
        key = sign.load(options.sign_key)
        self.root_bytes, root = self.trusted_root()
        self.signatures = Signatures(self.http, self.store, root, self.cache_dir, self.progress, self.fetch_optional)

        resolution = resolve(options.kubernetes_version, self.read_label)
        self.progress.log(version_line(resolution.requested, resolution.version, self.base.manifest if self.base else None))
        self.unsupported = versions_table.check_supported(resolution.version, options.allow_unsupported_version)
        if self.unsupported:
            self.progress.log(f"warning: Kubernetes {resolution.version} is outside the supported {versions_table.SUPPORTED_RANGE} (--allow-unsupported-version); bundle.json records it")
        self.check_release(resolution.version)
        versions = artifacts.Versions(
            kubernetes=str(resolution.version),
            cni=options.cni_version,
            crictl=options.crictl_version or artifacts.default_crictl_version(resolution.version.minor),
            containerd=options.containerd_version,
            runc=options.runc_version or artifacts.default_runc_version(options.containerd_version),
            flannel=options.flannel_version if options.cni == "flannel" else None,
            flannel_sha256=options.flannel_sha256,
        )
        plan = artifacts.plan_artifacts(options.release_url, options.github_url, versions, options.arches)
        file_futures: dict[str, Future] = {a.member: self.pool.submit(self.fetch_artifact, a) for a in plan}

        carried = list(extra_manifests)
        addon_images: list[str] = []
        if versions.flannel:
            flannel = file_futures["manifests/cni/kube-flannel.yml"].result()
            data = self.store.read("sha256:" + flannel.sha256, images.MAX_ADDON_MANIFEST_BYTES)
            addon_images += images.images_in_manifest(data, flannel.source)
            carried.insert(0, addons.Carried(flannel.path, flannel.source or flannel.path, data, load_documents(data)))
        for item in extra_manifests:
            addon_images += images.images_in_documents(item.documents)
        # Before any image is copied: a manifest the target Kubernetes would refuse stops the build here.
        checked = addons.check(carried, resolution.version.minor)
        for finding in checked.findings:
            self.progress.log(f"warning: {finding.describe()}")
        extra_entries = [self._put_bytes(item.member, item.data) for item in extra_manifests]
        self.api_document = addons.findings_document(carried, checked, str(resolution.version))
        extra_entries.append(self._put_bytes(API_FINDINGS, self.api_document))

        copier = images.ImageCopier(
            self.http,
            self.store,
            images.RegistryClients(options.registry_mirrors),
            options.arches,
            self.pool,
            self.progress,
            self.signatures,
            self.contents,
        )
        image_futures: dict[str, Future] = {}

        def start_copies(texts: list[str]) -> None:
            for text in texts:
                reference = str(ImageRef.parse(text))
                if reference not in image_futures:
                    image_futures[reference] = self.image_pool.submit(copier.copy, reference)

        # The addons' and --image's images resolve while kubeadm (tens of MB) downloads and lists the control plane's.
        start_copies(addon_images + extra_images)
        wanted = self.control_plane_images(resolution.version, file_futures.get(f"bin/linux-{host_arch()}/kubeadm"))
        components = images.component_versions(wanted)
        start_copies(wanted)
        references = list(dict.fromkeys(str(ImageRef.parse(text)) for text in wanted + addon_images + extra_images))
        copied = [image_futures[reference].result() for reference in references]
        # Blobs download in the order they are packed, so packing follows the downloads.
        base_digests = self.base.digests if self.base else {}
        blob_order = sorted({digest for image in copied for digest in image.blobs if digest.split(":", 1)[1] not in base_digests})
        copier.schedule(blob_order)
        files = [future.result() for future in file_futures.values()] + extra_entries

        components.update(
            {
                "kubernetes": str(resolution.version),
                "cni": versions.cni,
                "crictl": versions.crictl,
                "containerd": versions.containerd.lstrip("v"),
                "runc": versions.runc,
            }
        )
        if versions.flannel:
            components["flannel"] = versions.flannel
        return self._finish(resolution, components, files, copied, key, started, copier.wait)

    def _inventories(self, entries: list[FileEntry], copied, wait_for_blob) -> list[Inventory]:
        """What every file and image holds. The SBOM is signed in bundle.json, so it waits for every blob to
        be downloaded (and read on the way in). Each image is taken as soon as its layers are in, while the
        others still arrive, so only the last one's inventory is left for after the downloads."""
        if not self.contents.enabled:
            return []
        found = []
        for entry in entries:
            if tap_kind(path=entry.path) is not None:
                inventory = inventory_of_file(entry.path, self.contents.result("sha256:" + entry.sha256))
                if inventory.binaries or inventory.unscanned:
                    found.append(inventory)
        for image in sorted(copied, key=lambda c: c.entry.reference):
            for where, layers in image.layers:
                for digest in layers:
                    wait_for_blob(digest)
                found.append(inventory_of_image(image.entry.reference, where, [(d, self.contents.result(d)) for d in layers]))
        for entry in entries:
            if entry.path.startswith("images/blobs/"):
                wait_for_blob("sha256:" + entry.sha256)
        packages = {p.purl for inventory in found for p in inventory.packages} | {
            m.purl for inventory in found for binary in inventory.binaries for m in binary.modules
        }
        binaries = sum(len(inventory.binaries) for inventory in found)
        self.progress.log(
            f"contents: {len(packages)} packages, {binaries} Go programs; {human(self.contents.scanned_bytes)} read for them as they arrived"
            + (f" ({human(self.contents.reread_bytes)} of it re-read from the cache: no earlier scan result)" if self.contents.reread_bytes else "")
        )
        return found

    def _stage_installer(self, beside: Path, pyz: FileEntry) -> AtomicFile:
        """The node installer from the cache, written and synced under a temporary name beside `beside`; the caller
        commits it (renames it into place) or discards it."""
        staged = AtomicFile(beside, 0o755)
        try:
            with self.store.open("sha256:" + pyz.sha256) as source:
                copy_verified(source, staged.handle, "sha256:" + pyz.sha256, f"the node installer in the cache ({NODE_PYZ})")
            staged.handle.flush()
            os.fsync(staged.handle.fileno())
        except BaseException as error:
            staged.discard()
            if isinstance(error, OSError) and error.errno in NO_SPACE:
                raise no_space(beside.parent, pyz.size) from None
            raise
        return staged

    def _put_bytes(self, member: str, data: bytes) -> FileEntry:
        digest = self.store.put_bytes(data)
        return FileEntry(member, digest.split(":", 1)[1], len(data), 0o644)

    def _put_file(self, member: str, source: Path, mode: int) -> FileEntry:
        """A local file as a bundle member, streamed into the store and hashed on the way."""
        with open(source, "rb") as reader, self.store.partial(f"file:{source.resolve()}") as part:
            part.reset()
            while chunk := reader.read(1 << 20):
                part.write(chunk)
            size = part.size
            digest = part.commit()
        return FileEntry(member, digest.split(":", 1)[1], size, mode)

    def check_required(self, files: list[FileEntry], images: list[ImageEntry]) -> None:
        """`--require`: refuse, naming each one, files and images whose provenance falls short, before anything is written."""
        named = [(entry.path, entry.provenance) for entry in files if entry.provenance is not None]
        named += [(image.reference, image.provenance) for image in images if image.provenance is not None]
        short = shortfall(named, self.options.require)
        if not short:
            return
        listed = "; ".join(f"{name} ({record.label})" for name, record in short[:12])
        more = f"; and {len(short) - 12} more" if len(short) > 12 else ""
        wanted = "a verified upstream signature" if self.options.require == "signed" else "a pin, a published checksum or a signature"
        raise BuildError(
            f"--require {self.options.require}: {len(short)} of {len(named)} files and images lack {wanted}: {listed}{more}; "
            "nothing was written (see `airlock inspect` of an earlier bundle, or lower --require)"
        )

    def trusted_root(self) -> tuple[bytes, TrustRoot]:
        """The Sigstore trust root (--trusted-root, else airlock's shipped copy): its bytes, parsed."""
        path = self.options.trusted_root or DEFAULT_TRUSTED_ROOT
        try:
            data = read_small_file(path, MAX_TRUSTED_ROOT_BYTES, "Sigstore trusted_root.json (a few KiB)")
        except SmallFileError as error:
            raise BuildError(f"--trusted-root {path}: {error}") from None
        try:
            return data, TrustRoot.parse(data, f"--trusted-root {path}")
        except TrustError as error:
            raise BuildError(str(error)) from None

    def _finish(self, resolution, components, files, copied, key, started, wait_for_blob) -> BuildResult:
        options = self.options
        self.check_required(files, [image.entry for image in copied])
        trusted_root, trusted_root_sha256 = self.root_bytes, hashlib.sha256(self.root_bytes).hexdigest()
        if self.signatures.verified:
            each = self.signatures.seconds / self.signatures.verified
            self.progress.log(
                f"verified {self.signatures.verified} upstream signatures in {self.signatures.seconds:.3f}s ({each * 1000:.1f} ms each); "
                f"finding them took {self.signatures.looking:.3f}s of transfers"
            )
        created = _build_time()
        serial = options.serial if options.serial is not None else int(created.timestamp())
        if options.serial is None and self.base is not None:
            serial = max(serial, self.base.manifest.serial + 1)  # a delta built within its base's second still comes after it
        blob_sizes: dict[str, int] = {}
        for image in copied:
            blob_sizes.update(image.blobs)
        index_entries = []
        for image in sorted(copied, key=lambda c: c.entry.reference):
            annotations = {REF_NAME: image.entry.reference, CONTAINERD_NAME: image.entry.reference}
            index_entries.append(
                {
                    "mediaType": image.entry.media_type,
                    "digest": image.entry.digest,
                    "size": blob_sizes[image.entry.digest],
                    "annotations": annotations,
                }
            )
        generated = {
            "images/oci-layout": OCI_LAYOUT,
            "images/index.json": layout_index(index_entries),
        }
        entries = list(files)
        for digest in sorted(blob_sizes):
            hexdigest = digest.split(":", 1)[1]
            entries.append(FileEntry(f"images/blobs/sha256/{hexdigest}", hexdigest, blob_sizes[digest], 0o644))
        for path, data in generated.items():
            digest = self.store.put_bytes(data)
            entries.append(FileEntry(path, digest.split(":", 1)[1], len(data), 0o644))
        entries.append(self._put_file(NODE_PYZ, options.node_pyz, 0o755))
        self.store.put_bytes(trusted_root)
        entries.append(FileEntry(TRUSTED_ROOT_MEMBER, trusted_root_sha256, len(trusted_root), 0o644))
        entries += self.signatures.members()
        image_entries: list[ImageEntry] = sorted((c.entry for c in copied), key=lambda e: e.reference)
        base_ref = None
        if self.base is not None:
            if serial <= self.base.manifest.serial:
                raise BuildError(f"--serial {serial} must be higher than the base's {self.base.manifest.serial}")
            base_ref = BaseRef(self.base.manifest.serial, self.base.sha256)

        provenance = BundleProvenance(trusted_root_sha256, options.require)

        def manifest_of(listed: list[FileEntry]) -> Manifest:
            listed = sorted(listed, key=lambda e: member_order(e.path))
            if self.base is not None:
                # What the base holds is not carried again; what a reviewer reads always is.
                listed = [
                    replace(e, carried=False) if e.carried and e.sha256 in self.base.digests and e.path not in REVIEW_MEMBERS else e for e in listed
                ]
            return Manifest(
                name=options.name,
                serial=serial,
                created=created,
                expires=created + timedelta(days=options.expires_days),
                requested=resolution.requested,
                version=str(resolution.version),
                platforms=tuple(f"linux/{arch}" for arch in options.arches),
                components=dict(sorted(components.items())),
                files=tuple(listed),
                images=tuple(image_entries),
                signer={"algorithm": key.algorithm, "key_id": key.key_id},
                base=base_ref,
                provenance=provenance,
                unsupported=self.unsupported,
            )

        output = Path(options.output)
        self.progress.add_total(manifest_of(entries).carried_size)
        deferred = None
        if options.split is None and not options.sidecars and self.contents.enabled:
            # The SBOM and the vulnerabilities depend on every blob: pack the rest while they are read.
            placeholders = [FileEntry(path, "0" * 64, 10**13 - 1, 0o644) for path in (SBOM, VULNERABILITIES)]
            deferred = DeferredPack(output, manifest_of(entries + placeholders), key, self.store, self.progress, wait_for_blob)
        # The node needs this file before it has airlock: a copy beside the bundle, the same bytes as the signed member.
        # It is written while the blobs still arrive, and takes its name only once the bundle has its own.
        pyz = next(entry for entry in entries if entry.path == NODE_PYZ)
        beside = output.with_name(NODE_INSTALLER)
        installer: AtomicFile | None = None
        try:
            installer = self._stage_installer(beside, pyz)
            inventories = self._inventories(entries, copied, wait_for_blob)
            sbom = spdx_document(options.name, serial, format_time(created), str(resolution.version), entries, image_entries, components, inventories)
            vulnerabilities, checked = osv.check(
                self.http, options.osv_url, inventories, format_time(created), self.progress.log, "--no-scan: contents not read" if options.no_scan else ""
            )
            osv.refuse_above(checked, options.fail_on)
        except BaseException:
            if installer is not None:
                installer.discard()
            if deferred is not None:
                deferred.abort()
            raise
        try:
            entries += [self._put_bytes(SBOM, sbom), self._put_bytes(VULNERABILITIES, vulnerabilities)]
            manifest = manifest_of(entries)
            self.progress.add_total(len(sbom) + len(vulnerabilities))
            if deferred is not None:
                packed = Packed(deferred.finish(manifest, {API_FINDINGS: self.api_document, SBOM: sbom, VULNERABILITIES: vulnerabilities}), None)
            else:
                packed = pack(output, manifest, key, self.store, self.progress, wait_for_blob, split=options.split, hashed=options.sidecars)
            manifest_sha256 = hashlib.sha256(packed.manifest_bytes).hexdigest()
            files: tuple[Path, ...] = (output,)
            small: list[Path] = []
            if options.split is not None:
                listing = write_parts_list(output, packed.written, options.split, key)
                small = [listing, listing.with_name(listing.name + ".sig")]
                files = packed.written.paths + tuple(small)
        except BaseException:
            installer.discard()
            raise
        try:
            installer.commit()
        except OSError as error:
            if error.errno in NO_SPACE:
                raise no_space(beside.parent, pyz.size) from None
            raise
        written_sidecars: list[Path] = []
        if options.sidecars:
            hashed = [(part.name, part.sha256) for part in packed.written.files] + [(beside.name, pyz.sha256)]
            members = {API_FINDINGS: self.api_document, SBOM: sbom, VULNERABILITIES: vulnerabilities}
            more = review_sidecars(manifest, manifest_sha256, key, members, read_reviewed(options.base) if options.base else None)
            written_sidecars = write_sidecars(output.parent, hashed, small, manifest, manifest_sha256, sbom, key, more)
        return BuildResult(
            output,
            manifest,
            manifest_sha256,
            self.progress.network_bytes,
            time.monotonic() - started,
            files,
            tuple(written_sidecars),
        )


def read_reviewed(path: Path, keys=None):
    """A bundle (or a bundle.json alone) as the report reads it; the signature is checked when `keys` are given."""
    from builder.report import Reviewed
    from bundle.verify import read_review

    try:
        if path.suffix == ".json" and not path.name.endswith(".parts.json"):
            data = path.read_bytes()
            return Reviewed.from_members(Manifest.parse(data), hashlib.sha256(data).hexdigest(), "not checked (a bundle.json alone)", {})
        manifest, data, _, members = read_review(path, keys)
    except OSError as error:
        raise BuildError(f"{path}: {error.strerror}") from None
    state = "valid (checked against the given key)" if keys else "not checked (pass --key to check it)"
    return Reviewed.from_members(manifest, hashlib.sha256(data).hexdigest(), state, members)


def file_provenance(artifact: artifacts.Artifact) -> Provenance:
    """What vouches for a downloaded file before any signature is looked at: a pin, a published checksum, or nothing."""
    if artifact.checksum.pinned is not None:
        return Provenance(PINNED, detail=artifact.checksum.pinned_by)
    if artifact.checksum.url is not None:
        return Provenance(PUBLISHED, detail=artifact.checksum.url)
    return Provenance(UNPINNED, detail=f"TLS only: {artifact.url}")


def _build_time() -> datetime:
    """Now, or SOURCE_DATE_EPOCH for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds") from None
    return datetime.now(UTC).replace(microsecond=0)


def build(options: BuildOptions, progress: Progress) -> BuildResult:
    builder = Builder(options, progress)
    try:
        return builder.run()
    finally:
        builder.close()
