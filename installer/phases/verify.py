"""verify: the signature, dates, tag, serial and platform (bundle/admission.py decides), before anything else is read or written."""

from __future__ import annotations

from bundle.admission import Asked, Refusal, decide
from bundle.admission import Installed as Running
from bundle.source import open_source
from bundle.trust import TrustError
from bundle.verify import Verified
from installer.errors import NodeError, NothingToDo
from installer.phases import Context, Phase
from installer.state import State


def signed_head(context: Context) -> tuple[bytes, bytes]:
    """bundle.json and its signature from the bundle file, or from the registry (`--from`); not yet trusted."""
    if context.remote is not None:
        return context.remote.signed_head()
    # A parts list's signature is checked here too, and every part's presence and size, before anything is written.
    with open_source(context.bundle, context.keys) as source:
        return source.signed_head()


def run(context: Context) -> None:
    manifest_bytes, signature = signed_head(context)
    current = State.load(context.paths).installed
    remote = context.remote
    asked = Asked(context.command, remote.tag if remote is not None else None, remote.newest_serial if remote is not None else None, context.allow_downgrade)
    running = Running(current.serial, current.sha256, current.version, current.role) if current is not None else None  # what admission weighs
    verdict = decide(manifest_bytes, signature, context.keys, running, context.now, f"linux/{context.arch}", asked)
    if isinstance(verdict, Refusal):
        if verdict.kind == "nothing-to-do":
            raise NothingToDo(verdict.reason)
        if verdict.kind == "signature" and remote is not None:
            raise TrustError(f"{context.source} served a bundle.json that its signature does not cover under any trusted key ({verdict.reason})")
        if verdict.kind in ("signature", "expired"):  # "malformed" (signed but unreadable) and the node's own reasons: NodeError
            raise TrustError(verdict.reason)
        raise NodeError(verdict.reason)
    manifest, sha256, signer = verdict.manifest, verdict.sha256, verdict.signer
    if context.command == "upgrade":
        context.role = current.role if current is not None else "worker"
    else:
        context.role = "first-control-plane" if context.command == "init" else ("control-plane" if context.control_plane else "worker")
    context.manifest = manifest
    context.manifest_sha256 = sha256
    context.signature = signature
    context.head = Verified(manifest, manifest_bytes, sha256, signer, signature)
    if context.command == "upgrade":
        from installer.upgradecheck import check

        check(context, current)
    context.echo(
        ("would install " if context.host.dry_run else "")
        + f"bundle {manifest.name} serial {manifest.serial} from {context.source}: kubernetes {manifest.version}, signed by {signer.key_id} ({signer.origin})"
    )


PHASE = Phase("verify", "check the bundle's signature, expiry, serial and platform", run, always=True)
