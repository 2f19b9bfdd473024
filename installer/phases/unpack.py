"""unpack: one pass of bundle/verify.py `verify_stream` over the bundle's source, every member hashed once as it is written once.

From a bundle file (or parts) every member, image blob or file, goes by digest into a content store inside the
staging directory, each renamed into place there only after its own digest matched (members the node store
already has are only hashed). Only when the whole bundle has verified, provenance included, are the staged
blobs renamed into the node store, where nothing refers to them until the registry phase merges the index: a
bad or interrupted bundle writes nothing outside staging.

`--from` a registry, each member this node needs is written once: into a partial file in staging (a rerun
resumes it), hashed by the verifier as it arrives; when every member and the provenance checked out, the
files are renamed into the node store. Either way later phases read members from the node store by digest.

Hashed once per trust decision: a member is hashed while it is written, and its blob is trusted afterwards by
how the store is written, not hashed again at each use. That holds because nothing but root can change a
blob: staging is root's alone (0700), blobs are written under O_EXCL|O_NOFOLLOW partial names and renamed
into place only after their digest matched, and installer/staging.py `trusted_blob` refuses to read a member unless the blob and
every directory from the store root down to it are root's (this user's) and writable by no one else, opening
the blob with O_NOFOLLOW (a planted link is never followed). A byte rot or a root-made change is what
`airlock-node store check` is for: it re-hashes every blob on demand.

The signed head is checked once, by the verify phase (bundle/admission.py); unpack holds the source to that
very head (`Context.head`).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from bundle.artifact import store_artifact
from bundle.atomic import make_dirs, write_atomic
from bundle.errors import NO_SPACE, BundleError, NoSpaceError, no_space
from bundle.manifest import FileEntry, canonical_json
from bundle.provenance import EvidenceCollector, recheck
from bundle.source import open_source
from bundle.store import CHUNK, BlobStore, open_regular
from bundle.unpack import BLOB_PREFIX, StoreSink
from bundle.verify import verify_stream
from installer.phases import Context, Phase
from installer.progress import ProgressLines
from installer.remote import needed_members
from installer.staging import ARTIFACT, COMPLETE, FETCHES, STAGED_STORE, STAGING_MODE, member_file, space_needed, staging_dir

EVIDENCE_LIMIT = EvidenceCollector.LIMIT


def run(context: Context) -> None:
    staging = staging_dir(context)
    if context.host.dry_run:
        context.echo(f"would verify every member and unpack into {staging} and {context.paths.store}")
        return
    make_dirs(context.paths.state_dir)
    os.chmod(context.paths.state_dir, 0o755)
    make_dirs(context.paths.staging, STAGING_MODE)
    os.chmod(context.paths.staging, STAGING_MODE)  # also when an older run left it wider
    make_dirs(staging)
    (staging / COMPLETE).unlink(missing_ok=True)
    store = BlobStore(context.paths.store)
    try:
        manifest_bytes = fetch_from_registry(context, staging, store) if context.remote is not None else unpack_file(context, staging, store)
        write_atomic(staging / "bundle.json", manifest_bytes, 0o644)
        write_atomic(staging / "bundle.json.sig", context.signature, 0o644)
        write_atomic(staging / COMPLETE, context.manifest_sha256.encode(), 0o644)
    except (NoSpaceError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in NO_SPACE:
            raise
        # A full disk: nothing installed has changed yet (the store gains only unreferenced blobs); drop what this
        # run staged, so the node is not left with a full disk, and say how much the bundle needs.
        shutil.rmtree(staging, ignore_errors=True)
        for partial in store.partials.iterdir() if store.partials.is_dir() else ():
            partial.unlink(missing_ok=True)
        raise no_space(context.paths.state_dir, space_needed(context)) from None


def unpack_file(context: Context, staging: Path, store: BlobStore) -> bytes:
    """The bundle file in one streaming pass: every member hashed as it is written, once, into staging's content store."""
    staged = BlobStore(staging / STAGED_STORE)

    # A node that pulls from another node's registry keeps no copy of the images: they are only verified.
    keep_images = context.serves_registry
    claimed: set[str] = set()  # digests a member of this stream already writes: a second copy is only hashed

    def sink(entry: FileEntry):
        digest = "sha256:" + entry.sha256
        is_blob = entry.path.startswith(BLOB_PREFIX)
        if is_blob and entry.path[len(BLOB_PREFIX) :] != entry.sha256:
            raise BundleError("an image blob's name is not its digest", entry.path)
        if (is_blob and not keep_images) or digest in claimed or store.exists(digest) or staged.exists(digest):
            return None
        claimed.add(digest)
        return StoreSink(staged, entry)

    with ProgressLines(context.manifest.carried_size, "unpack") as advance, open_source(context.bundle, context.keys) as source:
        verified = verify_stream(source, context.keys, now=context.now, sink=sink, on_bytes=advance, admitted=context.head)
    recheck_provenance(context, verified.manifest, staging, store)
    make_dirs(store.blobs)
    moved = 0
    for blob in staged.blobs.iterdir() if staged.blobs.exists() else ():
        target = store.blobs / blob.name
        if target.exists():
            blob.unlink()
        else:
            os.replace(blob, target)
            moved += 1
    context.echo(f"{moved} new blobs (image blobs and files) moved into {store.root}")
    check_complete(verified.manifest, store, keep_images)
    if keep_images:
        # This node's registry can then serve the bundle artifact too: the first node is a source for the others.
        artifact = store_artifact(store, verified.manifest_bytes, verified.signature, verified.manifest)
        write_atomic(staging / ARTIFACT, canonical_json(artifact.index_entry()), 0o644)
    context.echo(f"verified and unpacked {len(verified.manifest.files)} members ({verified.manifest.total_size >> 20} MiB)")
    return verified.manifest_bytes


class _FetchFile:
    """A member fetched `--from`: its one write, into a partial file in staging that a rerun resumes (`held`).

    Kept when the transfer broke off short (to resume); removed when it held the whole listed size and the
    verifier still refused it (wrong bytes are not resumed from).
    """

    def __init__(self, path: Path, size: int):
        self.path = path
        self._size = size
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._handle = os.fdopen(descriptor, "a+b", buffering=0)  # unbuffered: what a kill interrupts is on disk, to resume from
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            self._handle.close()
            raise BundleError(f"{path} is not a regular file; remove it and rerun")

    def held(self):
        self._handle.seek(0)
        while chunk := self._handle.read(CHUNK):
            yield chunk

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._handle.write(view) :]

    def reset(self) -> None:
        self._handle.truncate(0)
        self._handle.seek(0)

    def done(self) -> None:
        os.fsync(self._handle.fileno())
        self._handle.close()

    def abort(self) -> None:
        whole = os.fstat(self._handle.fileno()).st_size >= self._size
        self._handle.close()
        if whole:
            self.path.unlink(missing_ok=True)


def fetch_from_registry(context: Context, staging: Path, store: BlobStore) -> bytes:
    """This node's members from the registry, each verified while it is written (once) into staging; the store gets them by rename at the end.

    Members the store already holds (an installed base) are not fetched: later phases read them from the store,
    re-hashed. Image blobs are never fetched: containerd pulls the images from the same registry through hosts.toml.
    """
    remote = context.remote
    wanted = needed_members(context.manifest, context.arch)
    by_digest: dict[str, FileEntry] = {}
    for entry in wanted:
        by_digest.setdefault(entry.sha256, entry)
    missing = [entry for sha256, entry in by_digest.items() if not store.exists("sha256:" + sha256)]
    fetches = staging / FETCHES
    make_dirs(fetches)

    def sink(entry: FileEntry) -> _FetchFile:
        return _FetchFile(fetches / entry.sha256, entry.size)

    with ProgressLines(sum(entry.size for entry in missing), "fetch") as advance:
        verified = verify_stream(remote, context.keys, now=context.now, sink=sink, on_bytes=advance, admitted=context.head, wanted=missing)
    recheck_provenance(context, verified.manifest, staging, store)
    # Everything checked out: only now does anything leave staging, each fetched file renamed into the store.
    for entry in missing:
        store.adopt(fetches / entry.sha256, "sha256:" + entry.sha256)
    shutil.rmtree(fetches, ignore_errors=True)
    moved = sum(entry.size for entry in missing)
    context.echo(f"fetched {len(missing)} of {len(wanted)} members ({moved >> 20} MiB) from {context.source}, each verified; the rest were in the store")
    return verified.manifest_bytes


def recheck_provenance(context: Context, manifest, staging: Path, store: BlobStore) -> None:
    """Re-verify, offline, every upstream signature the bundle records, before anything leaves staging.

    The evidence is read from staging (a delta's unchanged members from the store); `recheck` holds each
    member to bundle.json's sha256 again. A bundle that records no provenance (an older airlock's) has nothing to check.
    """
    if manifest.provenance is None:
        return

    def read(path: str) -> bytes | None:
        if manifest.file(path) is None:
            return None
        found = member_file(context, path, staging)
        if not found.exists():
            return None
        with open_regular(found) as handle:
            return handle.read(EVIDENCE_LIMIT + 1)

    rechecked = recheck(manifest, read)
    context.echo(
        f"re-verified {rechecked.signatures} upstream signatures offline against the carried Sigstore trust root (sha256 {rechecked.trusted_root_sha256[:16]}…)"
    )


def check_complete(manifest, store: BlobStore, keep_images: bool = True) -> None:
    """Every member is in the node store by digest: this bundle's, and what a delta leaves to its base.

    The store then holds each installed bundle's files as well as its image
    blobs, so the next delta only needs to carry what changed.
    """
    missing = [
        entry.path
        for entry in manifest.files
        if (keep_images or not entry.path.startswith(BLOB_PREFIX)) and not store.exists("sha256:" + entry.sha256)
    ]
    if missing:
        raise BundleError(f"this delta needs {len(missing)} member(s) of its base that the node store lacks, like {missing[0]}; install the base bundle first")
    # A delta's files that stayed in the base were trusted when the base was installed; this install is a new
    # trust decision over them, so they are hashed again (image blobs are hashed again by containerd as it pulls).
    for entry in manifest.files:
        if not entry.carried and not entry.path.startswith(BLOB_PREFIX):
            store.recheck("sha256:" + entry.sha256)


PHASE = Phase("unpack", "verify every member while streaming it into staging and the image store", run)
