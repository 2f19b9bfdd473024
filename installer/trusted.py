"""The node's trusted keys: /etc/airlock/trusted-keys, one PEM public key per file, writable by root only.

A finished install keeps the keys it was given with `--key`, so later
commands on the node need none; `airlock-node trust list|add|remove` manage
them (docs/keys.md: rotating a key). A key file or directory that anyone
but its owner could have written is refused, not skipped: a key planted
there would be trusted for every later install.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from bundle.atomic import make_dirs, write_atomic
from bundle.errors import TrustError
from bundle.trust import TrustedKey, parse_public_key

if TYPE_CHECKING:
    from installer.node import Host

TRUSTED_KEYS = "/etc/airlock/trusted-keys"
MAX_KEY_BYTES = 16 << 10


def key_directory(root: Path) -> Path:
    return Path(root) / TRUSTED_KEYS.lstrip("/")


def file_name(key: TrustedKey) -> str:
    return key.key_id.split(":", 1)[1] + ".pub"


def _check_owned(path: Path, directory: bool) -> os.stat_result:
    info = os.lstat(path)
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        raise TrustError(f"{path}: not a {'directory' if directory else 'regular file'}; the node's trusted keys are kept as plain files in {TRUSTED_KEYS}")
    if info.st_uid not in (0, os.geteuid()):
        raise TrustError(f"{path}: owned by uid {info.st_uid}; trusted keys must belong to root. Remove it, or chown root it if you put it there")
    if info.st_mode & 0o022:
        raise TrustError(f"{path}: writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); anyone could plant a key. chmod go-w it")
    return info


def kept_keys(root: Path) -> list[TrustedKey]:
    """The keys this node trusts (empty when none are kept); refuses a directory or file others could write."""
    directory = key_directory(root)
    if not directory.exists():
        return []
    _check_owned(directory, directory=True)
    keys = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        _check_owned(path, directory=False)
        if path.suffix != ".pub":
            raise TrustError(f"{path}: not a key file (*.pub); {TRUSTED_KEYS} holds only keys that `airlock-node trust add` put there")
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
        if len(data) > MAX_KEY_BYTES:
            raise TrustError(f"{path}: larger than a public key; remove it")
        keys.append(parse_public_key(data, str(path)))
    return keys


def keep(root: Path, keys: list[TrustedKey]) -> list[TrustedKey]:
    """Keep `keys` as trusted (root-only writable); return those that were not kept yet."""
    directory = key_directory(root)
    make_dirs(directory, 0o755)
    _check_owned(directory, directory=True)
    added = []
    known = {key.key_id for key in kept_keys(root)}
    for key in keys:
        if key.key_id in known:
            continue
        pem = key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        write_atomic(directory / file_name(key), pem, 0o644)
        known.add(key.key_id)
        added.append(key)
    return added


def keep_trusted_keys(host: Host, root: Path, keys: list[TrustedKey]) -> None:
    """Later commands on this node need no --key: the keys this install verified the bundle with are kept (root-only
    writable). The binaries phase keeps them with the node command it installs, so that a first install that stops
    later is rerun, or started over after a reset, without --key; done keeps them for an upgrade."""
    if host.dry_run:
        return
    for key in keep(root, keys):
        host.echo(f"now trusting {key.key_id} ({key.origin}) in {TRUSTED_KEYS}: later commands here need no --key")


def remove(root: Path, fingerprint: str) -> TrustedKey:
    """Stop trusting the key with this fingerprint (sha256:HEX, or HEX); refuses an unknown or ambiguous one."""
    wanted = fingerprint.strip().lower()
    wanted = wanted if wanted.startswith("sha256:") else "sha256:" + wanted
    matches = [key for key in kept_keys(root) if key.key_id.startswith(wanted) and len(wanted) >= len("sha256:") + 8]
    if not matches:
        raise TrustError(f"no trusted key has fingerprint {fingerprint} (`airlock-node trust list` shows them)")
    if len(matches) > 1:
        raise TrustError(f"{fingerprint} matches {len(matches)} trusted keys; give more of the fingerprint")
    key = matches[0]
    os.unlink(key_directory(root) / Path(key.origin).name)
    return key
