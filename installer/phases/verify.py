"""verify: the signature, dates, serial and platform, before anything else is read or written."""

from __future__ import annotations

import hashlib

from bundle.manifest import Manifest
from bundle.tarstream import TarReader
from bundle.trust import TrustError, check_dates, verify_signature
from bundle.verify import open_bundle, read_signed_head
from installer.node import NodeError, NothingToDo
from installer.phases import Context, Phase
from installer.state import State


def signed_head(context: Context) -> tuple[bytes, bytes]:
    """bundle.json and its signature from the bundle file, or from the registry (`--from`); not yet trusted."""
    if context.remote is not None:
        return context.remote.signed_head()
    # A parts list's signature is checked here too, and every part's presence and size, before anything is written.
    with open_bundle(context.bundle, context.keys) as stream:
        return read_signed_head(TarReader(stream))


def run(context: Context) -> None:
    manifest_bytes, signature = signed_head(context)
    try:
        signer = verify_signature(manifest_bytes, signature, context.keys)
    except TrustError as error:
        if context.remote is None:
            raise
        raise TrustError(f"{context.source} served a bundle.json that its signature does not cover under any trusted key ({error})") from None
    manifest = Manifest.parse(manifest_bytes)
    check_dates(manifest, context.now)
    sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    current = State.load(context.paths).installed
    if context.command == "upgrade":
        if current is None:
            raise NodeError("nothing is installed on this node yet; use airlock-node init or airlock-node join")
        context.role = current.get("role", "worker")
        if manifest.serial == current["serial"]:
            if sha256 == current["sha256"]:
                raise NothingToDo(f"this node already runs {manifest.name} serial {manifest.serial} (kubernetes {manifest.version}); nothing to upgrade")
            raise NodeError(f"a different bundle with serial {manifest.serial} is already installed; rebuild with a higher serial")
        if manifest.serial < current["serial"] and not context.allow_downgrade:
            raise NodeError(
                f"bundle serial {manifest.serial} is lower than the installed {current['serial']} ({current['version']}); nothing to upgrade. "
                "Pass --allow-downgrade if you really mean to go back"
            )
    else:
        if current is not None:
            # kubeadm init/join on a node that runs a cluster would fail half way; say what to do instead, before anything.
            raise NodeError(
                f"this node is already initialised at serial {current['serial']} (kubernetes {current.get('version', '?')}, {current.get('role', '?')}); "
                "use airlock-node upgrade, or airlock-node reset first"
            )
        context.role = "first-control-plane" if context.command == "init" else ("control-plane" if context.control_plane else "worker")
    if manifest.base is not None and (current is None or current["sha256"] != manifest.base.sha256):
        have = f"serial {current['serial']}" if current else "nothing"
        raise NodeError(
            f"this is a delta on serial {manifest.base.serial} (bundle.json sha256 {manifest.base.sha256[:16]}…); "
            f"this node has {have} installed; install that base first, or use a full bundle"
        )
    platform = f"linux/{context.arch}"
    if platform not in manifest.platforms:
        raise NodeError(f"this node is {platform}; the bundle carries {', '.join(manifest.platforms)}")
    context.manifest = manifest
    context.manifest_sha256 = sha256
    context.signature = signature
    if context.command == "upgrade":
        from installer.phases.upgrade import check

        check(context, current)
    context.echo(
        ("would install " if context.host.dry_run else "")
        + f"bundle {manifest.name} serial {manifest.serial} from {context.source}: kubernetes {manifest.version}, signed by {signer.key_id} ({signer.origin})"
    )


PHASE = Phase("verify", "check the bundle's signature, expiry, serial and platform", run, always=True)
