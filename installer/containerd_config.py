"""Merge airlock's settings into containerd's config.toml without dropping anyone else's.

containerd 1.x reads `version = 2`, 2.x reads `version = 3`; the CRI plugin
moved between them, so each layout has its own paths. Settings are changed
in the parsed document and written back with a small TOML writer (comments
are not kept; the original is saved beside it first).
"""

from __future__ import annotations

import datetime
import json

import tomlkit
from tomlkit.exceptions import TOMLKitError

from installer.node import NodeError

V2_CRI = "io.containerd.grpc.v1.cri"
V3_IMAGES = "io.containerd.cri.v1.images"
V3_RUNTIME = "io.containerd.cri.v1.runtime"


def _table(document: dict, *keys: str) -> dict:
    for key in keys:
        document = document.setdefault(key, {})
        if not isinstance(document, dict):
            raise NodeError(f"containerd config: {'.'.join(keys)} is not a table")
    return document


def merge(text: str | None, certs_dir: str, sandbox_image: str, systemd_cgroup: bool) -> tuple[str, list[str]]:
    """Return the merged config.toml and a list of notes about what had to change."""
    try:
        document = tomlkit.parse(text).unwrap() if text else {"version": 2}
    except TOMLKitError as error:
        raise NodeError(f"/etc/containerd/config.toml is not valid TOML ({error}); fix or remove it") from None
    notes = []
    version = document.get("version", 1)
    if version not in (1, 2, 3):
        raise NodeError(f"containerd config version {version} is not one airlock knows (2 or 3)")
    if version == 1:
        notes.append("config had version 1 (containerd < 1.5 layout); rewritten as version 2")
        document["version"] = 2
        version = 2
    disabled = document.get("disabled_plugins")
    if isinstance(disabled, list) and any(name in ("cri", V2_CRI) for name in disabled):
        document["disabled_plugins"] = [name for name in disabled if name not in ("cri", V2_CRI)]
        notes.append("re-enabled the CRI plugin (it was in disabled_plugins)")
    if version == 2:
        cri = _table(document, "plugins", V2_CRI)
        registry = _table(cri, "registry")
        if "mirrors" in registry:
            del registry["mirrors"]
            notes.append("removed registry.mirrors: containerd refuses it together with config_path")
        registry["config_path"] = certs_dir
        cri["sandbox_image"] = sandbox_image
        runc = _table(cri, "containerd", "runtimes", "runc")
        runc.setdefault("runtime_type", "io.containerd.runc.v2")
        _table(runc, "options")["SystemdCgroup"] = systemd_cgroup
    else:
        images = _table(document, "plugins", V3_IMAGES)
        registry = _table(images, "registry")
        registry.pop("mirrors", None)
        registry["config_path"] = certs_dir
        _table(images, "pinned_images")["sandbox"] = sandbox_image
        runc = _table(document, "plugins", V3_RUNTIME, "containerd", "runtimes", "runc")
        runc.setdefault("runtime_type", "io.containerd.runc.v2")
        _table(runc, "options")["SystemdCgroup"] = systemd_cgroup
    return dumps(document), notes


def dumps(document: dict) -> str:
    lines: list[str] = []
    _emit(document, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise NodeError(f"cannot write {type(value).__name__} into containerd config")


def _emit(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if path and (scalars or not any(isinstance(v, dict) for v in table.values())):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{'  ' * min(len(path), 1)}{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            _emit(value, [*path, key], lines)
        elif _is_table_array(value):
            for item in value:
                lines.append("")
                lines.append("[[" + ".".join(_key(p) for p in [*path, key]) + "]]")
                for inner_key, inner in item.items():
                    lines.append(f"  {_key(inner_key)} = {_value(inner)}")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)
