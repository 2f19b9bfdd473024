"""The one trust decision: may this signed bundle.json be installed here, now, for what was asked? No I/O.

In the spirit of python-tuf's TrustedMetadataSet: everything the decision needs comes in as values (the signed
head's bytes, the trusted keys, what is installed, the time, the node's platform, what the operator asked for),
and the answer is `Accepted`, or a `Refusal` with the one reason why not. The verify phase asks it for a file,
a parts list and a registry alike; tests ask it without a bundle, a node or a network.

The rules, in the order they are checked:

1. the signature covers bundle.json under a trusted key; bundle.json parses;
2. the bundle has not expired (and was not created after it expires);
3. a registry tag binds: the signed name and serial equal the `NAME-SERIAL` tag the bundle was fetched by,
   whether the operator named the tag (`--tag`) or the node chose the newest one; a bundle with a serial
   lower than the newest tag the node was shown is refused (a registry may not hand a fresh node an older
   signed bundle under a newer tag);
4. what is installed: init/join need a fresh node; upgrade needs a node with a lower serial (or
   `--allow-downgrade`), and the same serial with the same bundle is nothing to do;
5. a delta's base is what is installed;
6. the node's platform is one the bundle carries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Union

from bundle.artifact import parse_tag
from bundle.errors import BundleError
from bundle.manifest import Manifest
from bundle.trust import TrustedKey, TrustError, check_dates, verify_signature


@dataclass(frozen=True)
class Installed:
    """What the node runs now (state.json's `installed`), validated by type."""

    serial: int
    sha256: str
    version: str = "?"
    role: str = "worker"

    @classmethod
    def from_state(cls, installed: dict | None) -> Installed | None:
        if installed is None:
            return None
        serial, sha256 = installed.get("serial"), installed.get("sha256")
        if not isinstance(serial, int) or not isinstance(sha256, str):
            raise BundleError("state.json: the installed bundle has no serial or sha256; reset the node, or restore state.json")
        return cls(serial, sha256, str(installed.get("version", "?")), str(installed.get("role", "worker")))


@dataclass(frozen=True)
class Asked:
    """What the operator asked for: the command, and for `--from` the tag the bundle was fetched by."""

    command: str  # init, join or upgrade
    tag: str | None = None  # the NAME-SERIAL tag (given with --tag, or chosen as the newest)
    newest_serial: int | None = None  # the highest serial in the registry's tag list, when the node read it
    allow_downgrade: bool = False


@dataclass(frozen=True)
class Accepted:
    manifest: Manifest
    sha256: str  # of bundle.json
    signer: TrustedKey


@dataclass(frozen=True)
class Refusal:
    """Why not, in one line. `kind`: "signature", "malformed", "expired", "tag", "installed", "base", "platform" or "nothing-to-do"."""

    reason: str
    kind: str


Verdict = Union[Accepted, Refusal]


def decide(manifest_bytes: bytes, signature: bytes, keys: list[TrustedKey], installed: Installed | None, now: datetime | None, platform: str, asked: Asked) -> Verdict:
    try:
        signer = verify_signature(manifest_bytes, signature, keys)
    except TrustError as error:
        return Refusal(str(error), "signature")
    try:
        manifest = Manifest.parse(manifest_bytes)
    except BundleError as error:
        return Refusal(str(error), "malformed")
    try:
        check_dates(manifest, now)
    except TrustError as error:
        return Refusal(str(error), "expired")
    refusal = _tag(manifest, asked, installed)
    refusal = refusal or _installed(manifest, hashlib.sha256(manifest_bytes).hexdigest(), installed, asked)
    if refusal is None and manifest.base is not None and (installed is None or installed.sha256 != manifest.base.sha256):
        have = f"serial {installed.serial}" if installed else "nothing"
        refusal = Refusal(
            f"this is a delta on serial {manifest.base.serial} (bundle.json sha256 {manifest.base.sha256[:16]}…); "
            f"this node has {have} installed; install that base first, or use a full bundle",
            "base",
        )
    if refusal is None and platform not in manifest.platforms:
        refusal = Refusal(f"this node is {platform}; the bundle carries {', '.join(manifest.platforms)}", "platform")
    return refusal or Accepted(manifest, hashlib.sha256(manifest_bytes).hexdigest(), signer)


def _tag(manifest: Manifest, asked: Asked, installed: Installed | None) -> Refusal | None:
    if asked.tag is not None:
        bound = parse_tag(asked.tag)
        if bound != (manifest.name, manifest.serial):
            return Refusal(
                f"the registry's tag {asked.tag} holds a bundle signed as {manifest.name} serial {manifest.serial}; "
                "a tag must name the bundle it holds, so this one is refused (push the bundle again, or pick its own tag)",
                "tag",
            )
    if asked.newest_serial is not None and manifest.serial < asked.newest_serial and installed is None:
        return Refusal(
            f"the registry lists serial {asked.newest_serial}, but its bundle is serial {manifest.serial}; "
            "a fresh node installs nothing older than the newest it was shown",
            "tag",
        )
    return None


def _installed(manifest: Manifest, sha256: str, installed: Installed | None, asked: Asked) -> Refusal | None:
    if asked.command == "upgrade":
        if installed is None:
            return Refusal("nothing is installed on this node yet; use airlock-node init or airlock-node join", "installed")
        if manifest.serial == installed.serial:
            if sha256 == installed.sha256:
                return Refusal(f"this node already runs {manifest.name} serial {manifest.serial} (kubernetes {manifest.version}); nothing to upgrade", "nothing-to-do")
            return Refusal(f"a different bundle with serial {manifest.serial} is already installed; rebuild with a higher serial", "installed")
        if manifest.serial < installed.serial and not asked.allow_downgrade:
            return Refusal(
                f"bundle serial {manifest.serial} is lower than the installed {installed.serial} ({installed.version}); nothing to upgrade. "
                "Pass --allow-downgrade if you really mean to go back",
                "installed",
            )
        return None
    if installed is not None:
        # kubeadm init/join on a node that runs a cluster would fail half way; say what to do instead, before anything.
        return Refusal(
            f"this node is already initialised at serial {installed.serial} (kubernetes {installed.version}, {installed.role}); "
            "use airlock-node upgrade, or airlock-node reset first",
            "installed",
        )
    return None
