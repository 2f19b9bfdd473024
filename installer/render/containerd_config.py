"""Merge airlock's settings into containerd's config.toml, keeping the operator's settings, comments and layout.

The containerd that will read the file decides its layout (bundle/containerd.py):
1.7 reads `version = 2` (CRI under `plugins."io.containerd.grpc.v1.cri"`, the pause
image in `sandbox_image`); 2.0-2.2 read `version = 3` (CRI split into
`io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`, the pause image in
`pinned_images.sandbox`); 2.3 reads `version = 4` (the CRI plugins as in 3; the
top-level `[grpc]`, `[ttrpc]`, `[debug]` and `[metrics]` addresses moved to
`io.containerd.server.v1.*` plugins). A file of an older version stays in its own
layout: containerd migrates it at every start (cmd/containerd/server/config, v2.3.4).
A file newer than the runtime reads is refused. A new file takes the newest version
the runtime reads. The document is edited in place through tomlkit, so what
airlock does not touch is written back byte for byte.

airlock points the CRI plugin at `config_path` (certs.d/HOST/hosts.toml).
containerd refuses `registry.mirrors` beside it (1.7 and 2.x: "`mirrors` cannot be
set when `config_path` is provided"); 1.7 refuses `registry.configs.HOST.tls` beside
it too and 2.x no longer reads `tls` at all. An operator's file that already sets
both is refused with the way out; one without `config_path` has them moved into
hosts.toml: a mirror's endpoints become `[host."URL"]` entries, a TLS setting becomes
`ca`, `client` and `skip_verify`. `registry.configs.HOST.auth` stays: containerd
still reads it with `config_path` (hosts.toml has no place for credentials), and
every change is reported, never made silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from bundle.containerd import ContainerdVersionError, config_version, minor_of
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
CERTS_DIR = "/etc/containerd/certs.d"  # config_path: one HOST/hosts.toml per registry
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
    version: int  # the config version written (the layout airlock's settings went into)


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


def merge(text: str | None, certs_dir: str, sandbox_image: str, systemd_cgroup: bool, containerd: str) -> Merged:
    """The merged config.toml for the containerd release `containerd`, the hosts.toml content moved out of it, and a
    note for every change the operator should know."""
    try:
        document = tomlkit.parse(text) if text and text.strip() else tomlkit.document()
    except (TOMLKitError, ValueError) as error:
        raise NodeError(f"/etc/containerd/config.toml is not valid TOML ({error}); fix or remove it") from None
    try:
        reads = config_version(containerd)
    except ContainerdVersionError as error:
        raise NodeError(f"{error}; cannot tell which config.toml layout it reads") from None
    notes: list[str] = []
    if "version" not in document and "plugins" not in document:
        document["version"] = reads  # a new file (or one holding only top-level settings): the runtime's own layout
    version = _plain(document.get("version", 1))
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 4:
        raise NodeError(f"/etc/containerd/config.toml: version {version!r} is not one airlock knows (1, 2, 3 or 4)")
    if version > reads:
        raise NodeError(
            f"/etc/containerd/config.toml has version = {version}, which containerd {containerd} does not read (it reads up to {reads}); "
            f"write it as version {reads} (`containerd config default` of the node's containerd shows the layout) or remove it"
        )
    if version == 1:
        _upgrade_v1(document, notes)
        version = 2
    if version < reads:
        notes.append(f"config.toml stays version {version}: containerd {containerd} migrates it to version {reads} at every start (`containerd config migrate` rewrites it once)")
    if version >= 4:
        _warn_legacy_server_tables(document, notes)
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
    previous = str(_plain(registry.get("config_path", "")) or "")
    if previous:
        _refuse_beside_config_path(registry, registry_path, containerd, certs_dir)
    before = len(notes)
    hosts = _move_registry_settings(registry, registry_path, notes)
    moved = any("moved to certs.d" in note for note in notes[before:])
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
    return Merged(tomlkit.dumps(document), hosts, notes, version)


def _refuse_beside_config_path(registry, registry_path: str, containerd: str, certs_dir: str) -> None:
    """The operator's file already sets config_path and the settings it replaces: containerd itself refuses (or
    ignores) that, and airlock cannot tell which of the two the operator meant."""
    mirrors = registry.get("mirrors")
    configs = registry.get("configs")
    tls = sorted(str(host) for host in (configs or {}) if hasattr(configs[host], "get") and "tls" in configs[host])
    if mirrors is not None and len(mirrors):
        what, why = "mirrors", "containerd refuses it (`mirrors` cannot be set when `config_path` is provided)"
        how = f'each mirror as [host."URL"] with capabilities = ["pull", "resolve"] in {certs_dir}/HOST/hosts.toml'
    elif tls:
        what = f'configs."{tls[0]}".tls'
        if minor_of(containerd) >= (2, 0):
            why = f"containerd {containerd} ignores configs.*.tls (2.x reads only auth there)"
        else:
            why = "containerd refuses it (`configs.tls` cannot be set when `config_path` is provided)"
        how = f"ca_file, cert_file/key_file and insecure_skip_verify as ca, client and skip_verify in {certs_dir}/{tls[0]}/hosts.toml"
    else:
        return
    raise NodeError(f"/etc/containerd/config.toml: {registry_path} sets {what} beside config_path, and {why}; move {how}, then delete {what}")


# containerd 2.3 (config version 4) moved these top-level settings into server plugins; cmd/containerd/server/config
# serviceMigrate (v2.3.4) carries them over only from a file of version 3 or older. table -> {key: plugin}
MOVED_IN_VERSION_4 = {
    "grpc": dict.fromkeys(("address", "uid", "gid", "max_recv_message_size", "max_send_message_size"), "grpc")
    | dict.fromkeys(("tcp_address", "tcp_tls_ca", "tcp_tls_cert", "tcp_tls_key", "tcp_tls_common_name"), "grpc-tcp"),
    "ttrpc": dict.fromkeys(("address", "uid", "gid"), "ttrpc"),
    "debug": dict.fromkeys(("address", "uid", "gid"), "debug"),
    "metrics": {"address": "metrics", "grpc_histogram": "grpc-prometheus"},
}


def _warn_legacy_server_tables(document, notes: list[str]) -> None:
    """A version-4 file's listeners come from its server plugins only: the old top-level settings are ignored there."""
    for table, keys in MOVED_IN_VERSION_4.items():
        section = document.get(table)
        if not hasattr(section, "get"):
            continue
        for key, plugin in keys.items():
            if _plain(section.get(key)):
                kind = "metrics" if plugin == "grpc-prometheus" else "server"
                notes.append(
                    f"WARNING [{table}] {key} is ignored in a version 4 config.toml (containerd 2.3 moves it only from version 3 and older); "
                    f"set it in [plugins.'io.containerd.{kind}.v1.{plugin}'] instead"
                )


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


def imports_of(text: str) -> list[str]:
    """The `imports` of a config file, as written (paths or globs); [] when it has none."""
    try:
        imports = _plain(tomlkit.parse(text).get("imports", []))
    except (TOMLKitError, ValueError):
        return []
    return [str(item) for item in imports] if isinstance(imports, list) else []


def check_dropin(name: str, text: str, certs_dir: str, sandbox_image: str, root_version: int) -> list[str]:
    """Refuse a file config.toml imports when it would undo what airlock set there; notes for what it may keep.

    containerd merges every imported file over config.toml, plugin tables key by key
    (cmd/containerd/server/config mergeConfig, v1.7.34 to v2.3.4): a drop-in's
    `mirrors` meet airlock's `config_path` (refused: the CRI image plugin does not
    load), its `configs."HOST".tls` is refused (1.7) or ignored (2.x) there, and its
    own `config_path` or sandbox image replace airlock's. airlock does not edit the
    operator's drop-ins: it names the file and the way out.
    """
    try:
        document = tomlkit.parse(text)
    except (TOMLKitError, ValueError) as error:
        raise NodeError(f"{name} (imported by /etc/containerd/config.toml) is not valid TOML ({error}); fix or remove it") from None
    version = _plain(document.get("version", 1)) or 1
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 4:
        raise NodeError(f"{name} (imported by /etc/containerd/config.toml): version {version!r} is not one airlock knows (1, 2, 3 or 4)")
    if version > root_version:
        raise NodeError(f"{name} has version = {version}, higher than /etc/containerd/config.toml's {root_version}: containerd refuses that; write it as version {root_version}")
    plugins = document.get("plugins")
    if not hasattr(plugins, "get"):
        return []
    # Where this file's layout keeps the CRI registry and the sandbox image (version 1 by the short id too).
    if version >= 3:
        places = [(f"plugins.'{V3_IMAGES}'", plugins.get(V3_IMAGES), ("pinned_images", "sandbox"))]
    else:
        places = [(f'plugins."{V2_CRI}"', plugins.get(V2_CRI), ("sandbox_image",))]
        if version == 1:
            places.append(("plugins.cri", plugins.get("cri"), ("sandbox_image",)))
    notes: list[str] = []
    for where, cri, sandbox_keys in places:
        if not hasattr(cri, "get"):
            continue
        sandbox = cri
        for key in sandbox_keys:
            sandbox = sandbox.get(key) if hasattr(sandbox, "get") else None
        if sandbox is not None and str(sandbox) != sandbox_image:
            key = ".".join(sandbox_keys)
            raise NodeError(
                f"{name} sets {where}.{key} = {str(sandbox)!r}, which containerd merges over config.toml's bundle pause image "
                f"{sandbox_image}; delete {key} there (airlock sets it in config.toml)"
            )
        registry = cri.get("registry")
        if not hasattr(registry, "get"):
            continue
        path = str(_plain(registry.get("config_path", "")) or "")
        if path and path.split(":")[0] != certs_dir:
            raise NodeError(
                f"{name} sets {where}.registry.config_path = {path!r}, which containerd merges over config.toml's {certs_dir}; "
                f"move its hosts.toml files to {certs_dir} and delete config_path there"
            )
        mirrors = registry.get("mirrors")
        configs = registry.get("configs")
        tls = sorted(str(host) for host in (configs or {}) if hasattr(configs[host], "get") and "tls" in configs[host])
        if mirrors is not None and len(mirrors):
            raise NodeError(
                f"{name} sets {where}.registry.mirrors, which containerd merges beside config.toml's config_path and refuses "
                f"(`mirrors` cannot be set when `config_path` is provided); move each mirror as [host.\"URL\"] with "
                f"capabilities = [\"pull\", \"resolve\"] into {certs_dir}/HOST/hosts.toml, then delete mirrors there"
            )
        if tls:
            raise NodeError(
                f"{name} sets {where}.registry.configs.\"{tls[0]}\".tls, which containerd refuses (1.7) or ignores (2.x) beside "
                f"config.toml's config_path; move ca_file, cert_file/key_file and insecure_skip_verify as ca, client and "
                f"skip_verify into {certs_dir}/{tls[0]}/hosts.toml, then delete tls there"
            )
        for host in sorted(str(host) for host in (configs or {}) if hasattr(configs[host], "get") and "auth" in configs[host]):
            notes.append(f"WARNING {name}: {where}.registry.configs.\"{host}\".auth is kept (containerd still uses it); plan an imagePullSecret or a credential provider instead")
    return notes
