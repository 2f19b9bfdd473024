"""Merge airlock's settings into containerd's config.toml, keeping the operator's settings, comments and layout.

containerd 1.x reads `version = 2` (and 1, the pre-1.5 layout), 2.x reads
`version = 3`; the CRI plugin moved between them, so each layout has its own
paths. The document is edited in place through tomlkit, so what airlock does
not touch is written back byte for byte.

airlock points the CRI plugin at `config_path` (certs.d/HOST/hosts.toml), and
containerd refuses `registry.mirrors` and `registry.configs.HOST.tls` beside
it (the CRI plugin then does not load and kubelet has no runtime). Both move
into hosts.toml: a mirror's endpoints become `[host."URL"]` entries, a TLS
setting becomes `ca`, `client` and `skip_verify`. `registry.configs.HOST.auth`
stays: containerd still reads it with `config_path` (hosts.toml has no place
for credentials), and every change is reported, never made silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from installer.errors import NodeError

V2_CRI = "io.containerd.grpc.v1.cri"
V3_IMAGES = "io.containerd.cri.v1.images"
V3_RUNTIME = "io.containerd.cri.v1.runtime"
# containerd < 1.5 (config version 1) named plugins by their short id; version 2 by type and id.
V1_PLUGIN_NAMES = {
    "cri": V2_CRI,
    "linux": "io.containerd.runtime.v1.linux",
    "cgroups": "io.containerd.monitor.v1.cgroups",
    "opt": "io.containerd.internal.v1.opt",
    "restart": "io.containerd.internal.v1.restart",
    "scheduler": "io.containerd.gc.v1.scheduler",
    "bolt": "io.containerd.metadata.v1.bolt",
    "diff-service": "io.containerd.service.v1.diff-service",
    "tasks-service": "io.containerd.service.v1.tasks-service",
    **{name: f"io.containerd.snapshotter.v1.{name}" for name in ("aufs", "btrfs", "devmapper", "native", "overlayfs", "zfs")},
}
TLS_KEYS = {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}


@dataclass
class HostsFile:
    """certs.d/HOST/hosts.toml carried over from config.toml: the upstream's server and its mirror hosts."""

    server: str
    hosts: dict[str, dict] = field(default_factory=dict)  # endpoint URL -> settings (capabilities, ca, client, skip_verify)
    tls: dict = field(default_factory=dict)  # settings for `server` itself


@dataclass
class Merged:
    config: str
    hosts: dict[str, HostsFile]  # registry host (or _default) -> what moved out of config.toml
    notes: list[str]


def default_server(registry: str) -> str:
    return "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"


def _table(parent, *keys: str, where: str = "") -> Table:
    for key in keys:
        if key not in parent:
            parent[key] = tomlkit.table(is_super_table=True)
        parent = parent[key]
        if not hasattr(parent, "items") or isinstance(parent, (str, list)):
            raise NodeError(f"/etc/containerd/config.toml: {where or '.'.join(keys)} is not a table; fix or remove it")
    return parent


def _plain(value):
    """A tomlkit item as plain Python data."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def merge(text: str | None, certs_dir: str, sandbox_image: str, systemd_cgroup: bool) -> Merged:
    """The merged config.toml, the hosts.toml content moved out of it, and a note for every change the operator should know."""
    try:
        document = tomlkit.parse(text) if text and text.strip() else tomlkit.document()
    except (TOMLKitError, ValueError) as error:
        raise NodeError(f"/etc/containerd/config.toml is not valid TOML ({error}); fix or remove it") from None
    notes: list[str] = []
    version = _plain(document.get("version", 1))
    if version not in (1, 2, 3):
        raise NodeError(f"/etc/containerd/config.toml: version {version!r} is not one airlock knows (1, 2 or 3)")
    if version == 1:
        _upgrade_v1(document, notes)
        version = 2
    disabled = document.get("disabled_plugins")
    if disabled is not None and any(str(name) in ("cri", V2_CRI, V3_IMAGES, V3_RUNTIME) for name in disabled):
        kept = [str(name) for name in disabled if str(name) not in ("cri", V2_CRI, V3_IMAGES, V3_RUNTIME)]
        document["disabled_plugins"] = kept
        notes.append("re-enabled the CRI plugin (it was in disabled_plugins)")
    if version == 2:
        cri = _table(document, "plugins", V2_CRI)
        registry = _table(cri, "registry")
        registry_path = f'plugins."{V2_CRI}".registry'
        cri["sandbox_image"] = sandbox_image
        runc = _table(cri, "containerd", "runtimes", "runc")
    else:
        images = _table(document, "plugins", V3_IMAGES)
        registry = _table(images, "registry")
        registry_path = f"plugins.'{V3_IMAGES}'.registry"
        _table(images, "pinned_images")["sandbox"] = sandbox_image
        runc = _table(document, "plugins", V3_RUNTIME, "containerd", "runtimes", "runc")
    before = len(notes)
    hosts = _move_registry_settings(registry, registry_path, notes)
    moved = any("moved to certs.d" in note for note in notes[before:])
    previous = str(_plain(registry.get("config_path", "")) or "")
    if previous and previous.split(":")[0] != certs_dir:
        notes.append(f"{registry_path}.config_path was {previous!r}; now {certs_dir!r} (move any hosts.toml of yours there)")
    if previous.split(":")[0] != certs_dir or moved:
        value = tomlkit.item(previous if previous.split(":")[0] == certs_dir else certs_dir)
        if moved:
            # The record stays where the operator will look: on the setting that displaced them.
            value.comment("airlock moved registry.mirrors and configs.*.tls to HOST/hosts.toml here; see config.toml.airlock-backup")
        registry["config_path"] = value
    if "runtime_type" not in runc:
        runc["runtime_type"] = "io.containerd.runc.v2"
    _table(runc, "options")["SystemdCgroup"] = systemd_cgroup
    return Merged(tomlkit.dumps(document), hosts, notes)


def _upgrade_v1(document, notes: list[str]) -> None:
    """A version-1 file (containerd < 1.5 layout, or no version at all) becomes version 2: plugin ids take their full names."""
    plugins = document.get("plugins")
    if plugins is not None:
        for short in [key for key in plugins if "." not in key]:
            if short not in V1_PLUGIN_NAMES:
                raise NodeError(f"/etc/containerd/config.toml: version-1 plugin {short!r} has no known version-2 name; write the file as version = 2")
            body = _plain(plugins[short])
            del plugins[short]
            plugins[V1_PLUGIN_NAMES[short]] = body
            notes.append(f"plugins.{short} renamed plugins.\"{V1_PLUGIN_NAMES[short]}\" (config version 1 to 2)")
    document["version"] = 2
    if plugins is not None:
        notes.append("config had version 1 (containerd < 1.5 layout); rewritten as version 2")


def _move_registry_settings(registry, registry_path: str, notes: list[str]) -> dict[str, HostsFile]:
    hosts: dict[str, HostsFile] = {}
    mirrors = registry.get("mirrors")
    if mirrors is not None:
        for upstream, mirror in _plain(mirrors).items():
            name = "_default" if upstream == "*" else upstream
            entry = hosts.setdefault(name, HostsFile(default_server(upstream) if upstream != "*" else ""))
            for endpoint in (mirror or {}).get("endpoint", []):
                endpoint = str(endpoint).rstrip("/")
                if endpoint == entry.server:
                    continue  # the upstream itself: hosts.toml falls back to `server` anyway
                entry.hosts[endpoint] = {"capabilities": ["pull", "resolve"]}
            notes.append(f"{registry_path}.mirrors.\"{upstream}\" moved to certs.d/{name}/hosts.toml (containerd refuses mirrors beside config_path)")
        del registry["mirrors"]
    configs = registry.get("configs")
    if configs is None:
        return hosts
    for registry_host in list(configs.keys()):
        settings = configs[registry_host]
        if "tls" in settings:
            tls = {key: value for key, value in _plain(settings["tls"]).items() if value not in ("", False, None)}
            unknown = sorted(set(tls) - TLS_KEYS)
            if unknown:
                raise NodeError(f"/etc/containerd/config.toml: {registry_path}.configs.\"{registry_host}\".tls has {', '.join(unknown)}, which airlock cannot carry into hosts.toml")
            _apply_tls(hosts, str(registry_host), _hosts_tls(tls))
            del settings["tls"]
            moved = ", ".join(sorted(tls)) or "an empty table"
            notes.append(f"{registry_path}.configs.\"{registry_host}\".tls ({moved}) moved to certs.d hosts.toml (containerd refuses configs.tls beside config_path)")
        if "auth" in settings:
            notes.append(
                f"WARNING {registry_path}.configs.\"{registry_host}\".auth stays in config.toml: containerd still uses it with config_path, "
                "but it is deprecated and hosts.toml has no place for credentials; plan to give kubelet an imagePullSecret or a credential provider instead"
            )
        if not len(settings):
            del configs[registry_host]
    return hosts


def _hosts_tls(tls: dict) -> dict:
    """config.toml's tls table in hosts.toml's words."""
    out: dict = {}
    if tls.get("ca_file"):
        out["ca"] = str(tls["ca_file"])
    if tls.get("cert_file"):
        out["client"] = [[str(tls["cert_file"]), str(tls["key_file"])]] if tls.get("key_file") else str(tls["cert_file"])
    if tls.get("insecure_skip_verify"):
        out["skip_verify"] = True
    return out


def _apply_tls(hosts: dict[str, HostsFile], registry_host: str, tls: dict) -> None:
    """configs."HOST".tls applies wherever containerd talks to HOST: as an upstream, and as any mirror's endpoint."""
    for entry in hosts.values():
        for endpoint, settings in entry.hosts.items():
            if urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}").netloc == registry_host:
                settings.update(tls)
    entry = hosts.setdefault(registry_host, HostsFile(default_server(registry_host)))
    entry.tls.update(tls)


def hosts_toml(comment: str, server: str, hosts: dict[str, dict], top: dict | None = None, existing: str | None = None) -> str:
    """A hosts.toml document; `existing` (the operator's own file) keeps its settings and comments, missing ones are added."""
    try:
        document = tomlkit.parse(existing) if existing else tomlkit.document()
    except (TOMLKitError, ValueError) as error:
        raise NodeError(f"hosts.toml is not valid TOML ({error}); fix or remove it") from None
    if not existing:
        for line in comment.splitlines():
            document.add(tomlkit.comment(line))
    if server and "server" not in document:
        document["server"] = server
    for key, value in (top or {}).items():
        if key not in document:
            document[key] = value
    if hosts:
        table = _table(document, "host")
        for url, settings in hosts.items():
            if url not in table:
                entry = tomlkit.table()
                for key, value in settings.items():
                    entry[key] = value
                table[url] = entry
    return tomlkit.dumps(document)
