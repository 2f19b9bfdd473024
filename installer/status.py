"""`airlock-node status`: what this node runs, what it is doing, and whether its registry and images are in order.

Everything comes from the node itself: state.json and the installed
bundle.json (kept in /var/lib/airlock/bundles/), the registry's /healthz, and
containerd's image list. Reading is all it does; a part that cannot be read
is reported as such, never guessed.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bundle.errors import AirlockError
from bundle.manifest import Manifest, format_time
from installer.node import Paths
from installer.state import State

PINNED = "io.cri-containerd.pinned=pinned"


@dataclass
class Status:
    installed: dict | None = None  # name, serial, version, role, signer, expires, created, sha256
    journal: dict | None = None  # the run in progress: command, bundle_sha256, done, next
    registry: dict = field(default_factory=dict)  # url, healthy, detail
    images: dict = field(default_factory=dict)  # expected, present, pinned, missing, detail
    control_plane: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def installed_manifest(paths: Paths, serial: int) -> Manifest | None:
    kept = paths.bundles / f"{serial}.json"
    try:
        return Manifest.parse(kept.read_bytes())
    except (OSError, AirlockError):
        return None  # reported as unknown, not raised: status reads whatever it can


def registry_health(url: str, ca: str, timeout: float = 3.0) -> dict:
    """GET {url}/healthz: the node registry (or the one it pulls from) answers `ok`, or what went wrong."""
    if not url:
        return {"url": "", "healthy": False, "detail": "unknown (installed by an older airlock)"}
    context = ssl.create_default_context(cafile=ca or None) if url.startswith("https://") else None
    origin = url.split("/v2/", 1)[0].rstrip("/")
    try:
        with urllib.request.urlopen(f"{origin}/healthz", timeout=timeout, context=context) as answer:
            body = answer.read(64).decode("ascii", "replace").strip()
            healthy = answer.status == 200
            detail = f"HTTP {answer.status} {body}".strip()
    except urllib.error.HTTPError as error:
        healthy, detail = False, f"HTTP {error.code}"
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", None) or error
        healthy, detail = False, f"not answering ({reason})"
    return {"url": url, "healthy": healthy, "detail": detail}


def containerd_images(ctr: list[str]) -> tuple[dict[str, tuple[str, str]], str]:
    """reference -> (digest, labels) from `ctr images ls` in k8s.io, and an error text when containerd did not answer."""
    try:
        result = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {}, f"ctr did not answer ({error})"
    if result.returncode != 0:
        return {}, f"containerd did not answer: {result.stderr.strip()[:200]}"
    found = {}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            found[fields[0]] = (fields[2], fields[-1])
    return found, ""


def image_status(manifest: Manifest | None, ctr: list[str] | None) -> dict:
    if manifest is None:
        return {"expected": 0, "present": 0, "pinned": 0, "missing": [], "detail": "no installed bundle"}
    if ctr is None:
        return {"expected": len(manifest.images), "present": 0, "pinned": 0, "missing": [], "detail": "ctr not found"}
    held, error = containerd_images(ctr)
    if error:
        return {"expected": len(manifest.images), "present": 0, "pinned": 0, "missing": [], "detail": error}
    present = [image for image in manifest.images if held.get(image.reference, ("", ""))[0] == image.digest]
    pinned = [image for image in present if PINNED in held[image.reference][1]]
    missing = sorted(image.reference for image in manifest.images if image not in present)
    return {"expected": len(manifest.images), "present": len(present), "pinned": len(pinned), "missing": missing, "detail": ""}


def gather(paths: Paths, ctr: list[str] | None) -> Status:
    state = State.load(paths)
    status = Status()
    installed = state.installed
    manifest = None
    if installed:
        manifest = installed_manifest(paths, installed.serial)
        status.installed = {
            "name": installed.name,
            "serial": installed.serial,
            "version": installed.version,
            "role": installed.role,
            "sha256": installed.sha256,
            "signer": manifest.signer.get("key_id") if manifest else None,
            "algorithm": manifest.signer.get("algorithm") if manifest else None,
            "created": format_time(manifest.created) if manifest else None,
            "expires": format_time(manifest.expires) if manifest else None,
        }
        status.control_plane = installed.control_plane
        status.registry = registry_health(installed.registry, installed.registry_ca)
    if state.run:
        from installer.workflow import phases_for

        command = state.run.get("command", "")
        done = list(state.run.get("done") or [])
        names = [phase.name for phase in phases_for(command)] if command in ("init", "join", "upgrade") else []
        status.journal = {
            "command": command,
            "bundle_sha256": state.run.get("bundle_sha256"),
            "done": done,
            "next": next((name for name in names if name not in done), None),
        }
    status.images = image_status(manifest, ctr)
    return status


def render(status: Status, paths: Paths) -> str:
    lines = []
    installed = status.installed
    if installed is None:
        lines.append(f"installed    nothing ({paths.state_file} records no finished install)")
    else:
        lines += [
            f"installed    {installed['name']} serial {installed['serial']}, kubernetes {installed['version']}",
            f"role         {installed['role']} ({'a control plane' if status.control_plane else 'a worker, not a control plane'})",
            f"signed by    {installed['signer'] or 'unknown (its bundle.json is not in ' + str(paths.bundles) + ')'}"
            + (f" ({installed['algorithm']})" if installed["algorithm"] else ""),
            f"expires      {installed['expires'] or 'unknown'} (created {installed['created'] or 'unknown'})",
        ]
    journal = status.journal
    if journal is None:
        lines.append("journal      no run in progress")
    else:
        lines.append(
            f"journal      {journal['command']} in progress: done {', '.join(journal['done']) or 'nothing yet'}; next {journal['next'] or '?'} "
            f"(rerun `airlock-node {journal['command']}` with the same bundle to resume)"
        )
    if installed is not None:
        registry = status.registry
        lines.append(f"registry     {registry.get('url') or '?'}: {'healthy' if registry.get('healthy') else 'NOT healthy'} ({registry.get('detail', '')})")
        images = status.images
        if images.get("detail"):
            lines.append(f"images       {images['expected']} in the bundle; {images['detail']}")
        else:
            lines.append(f"images       {images['present']} of {images['expected']} in containerd with the bundle's digest, {images['pinned']} pinned")
            for reference in images["missing"]:
                lines.append(f"  missing    {reference}")
    return "\n".join(lines)


def to_json(status: Status) -> str:
    return json.dumps(status.to_dict(), indent=2, sort_keys=True)


def ctr_command(address: str) -> list[str] | None:
    import shutil

    found = shutil.which("ctr")
    if found is None and Path("/usr/local/bin/ctr").exists():
        found = "/usr/local/bin/ctr"
    if found is None:
        return None
    return [found, "--address", address, "--namespace", "k8s.io"]
