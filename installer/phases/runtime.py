"""runtime: kernel modules and sysctls (persisted, applied), containerd's config merged, and a hosts.toml per registry."""

from __future__ import annotations

import glob
import hashlib
import posixpath
import shutil
import socket
from pathlib import Path

from bundle.containerd import SUPPORTED, ContainerdVersionError, hosts_toml, is_supported, minor_of, mirrors_hosts_toml
from bundle.reference import ImageRef
from installer.containerd_release import ask
from installer.errors import NodeError
from installer.kernel import MODULES_FILE, SYSCTL_FILE, apply_kernel_settings, modules_file, sysctl_file
from installer.nodeschema import FieldError, endpoint
from installer.phases import Context, Phase
from installer.render.containerd_config import CERTS_DIR, check_dropin, imports_of, merge


def upstream_server(registry: str) -> str:
    return "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"


def mirror_url(context: Context) -> str:
    if context.config.registry_mirror:
        return context.config.registry_mirror.rstrip("/")
    scheme = "https" if context.config.registry_tls_cert else "http"
    return f"{scheme}://{context.config.registry_listen}"


def spread(mirrors: tuple[str, ...], node_name: str) -> list[str]:
    """Every control plane's registry, rotated by a hash of the node's name: each node tries them in its own order, so
    the pulls of many nodes are shared out, and a node asks the same one first on every run."""
    start = int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:8], "big") % len(mirrors)
    return [*mirrors[start:], *mirrors[:start]]


def mirror_urls(context: Context) -> list[str]:
    """The registries containerd pulls the bundle's images from, in the order it tries them."""
    if context.config.registry_mirrors:
        return spread(context.config.registry_mirrors, context.config.node_name or socket.gethostname().lower())
    return [mirror_url(context)]


def registries(context: Context) -> list[str]:
    return sorted({ImageRef.parse(image.reference).registry for image in context.manifest.images})


def hosts_file(registry: str) -> str:
    """certs.d/REGISTRY/hosts.toml; a name that is not host[:port] (or _default) could point anywhere, so it is refused."""
    if registry != "_default":
        try:
            if endpoint(registry) != registry.lower():
                raise FieldError(registry)
        except FieldError:
            raise NodeError(f"registry {registry!r} is not a host[:port]; refusing to write its hosts.toml") from None
    return f"{CERTS_DIR}/{registry}/hosts.toml"


def kernel(context: Context) -> None:
    """Persist the modules and sysctls, and on a real node (not --root) apply them now."""
    paths, host = context.paths, context.host
    host.write(paths(MODULES_FILE), modules_file())
    host.write(paths(SYSCTL_FILE), sysctl_file())
    if paths.root == Path("/"):
        apply_kernel_settings(host)


def pull_hosts_toml(registry: str, mirrors: list[str], ca: str) -> str:
    """certs.d/REGISTRY/hosts.toml for a registry the bundle carries images of: its pulls go to `mirrors` only (the
    node registry, another node's, or the site registry of `--from`): the document `airlock push` prints for it."""
    return mirrors_hosts_toml(f"Written by airlock: pulls of {registry} go to the node registry only.", mirrors, ca)


def runtime_release(context: Context) -> tuple[str, str]:
    """The containerd release that will read config.toml, and where that was learnt.

    On a node (no --root) the containerd on PATH is asked: the one the node had, or the
    bundle's that the binaries phase just installed. Under --root nothing in the root is
    run: a containerd package the root's dpkg database lists as installed (a golden
    image's own, which the binaries phase keeps) is read from there, else the bundle's
    release is assumed.
    """
    if context.paths.root == Path("/"):
        program = shutil.which("containerd")
        if program:
            # Asked in --dry-run as well: the plan must name the layout it would write.
            return ask(program), program
    else:
        status = context.paths("/var/lib/dpkg/status")
        packaged = dpkg_containerd(status.read_text(errors="replace")) if status.is_file() else None
        if packaged:
            return packaged, str(status)
    bundled = context.manifest.components.get("containerd")
    if not bundled:
        raise NodeError("bundle.json names no containerd release and the node has none to ask; rebuild the bundle with this airlock")
    if context.paths.root != Path("/") and context.paths("/usr/bin/containerd").exists():
        context.echo(
            f"  WARNING {context.paths('/usr/bin/containerd')} is the root's own containerd, which is not run under --root and no dpkg "
            f"database names; config.toml is written for the bundle's containerd {bundled}"
        )
    return bundled, "bundle.json"


# Debian's and Ubuntu's package, and Docker's for those distributions.
CONTAINERD_PACKAGES = ("containerd", "containerd.io")


def dpkg_containerd(status: str) -> str | None:
    """The version of an installed containerd package in a dpkg status file (epoch dropped: `1.7.24~ds1-3`), or None."""
    for stanza in status.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if fields.get("package") in CONTAINERD_PACKAGES and fields.get("status", "").split()[-1:] == ["installed"]:
            version = fields.get("version", "").split(":", 1)[-1]
            try:
                minor_of(version)
            except ContainerdVersionError:
                continue  # not a version airlock can read: the bundle's is assumed
            return version
    return None


def dropins(context: Context, config_file: str, text: str) -> list[tuple[str, str]]:
    """(node path, text) of every file `text` imports, and theirs in turn, as containerd resolves them: a relative path
    against the importing file's directory, a glob expanded in lexical order, each file once."""
    found: list[tuple[str, str]] = []
    seen = {config_file}
    pending = [(config_file, text)]
    while pending:
        parent, content = pending.pop(0)
        for pattern in imports_of(content):
            absolute = posixpath.normpath(pattern if posixpath.isabs(pattern) else posixpath.join(posixpath.dirname(parent), pattern))
            if "*" in absolute:
                prefix = str(context.paths("/")).rstrip("/")
                names = sorted("/" + str(Path(match).relative_to(context.paths("/"))) for match in glob.glob(prefix + absolute))
            else:
                names = [absolute]
            for name in names:
                if name in seen:
                    continue
                seen.add(name)
                path = context.paths(name)
                if not path.is_file():
                    raise NodeError(f"{parent} imports {name}, which is not a file; containerd would not start: fix imports or create it")
                content_of = path.read_text()
                found.append((name, content_of))
                pending.append((name, content_of))
    return found


def run(context: Context) -> None:
    paths, host = context.paths, context.host
    kernel(context)
    config_path = paths("/etc/containerd/config.toml")
    existing = config_path.read_text() if config_path.exists() else None
    pause = f"registry.k8s.io/pause:{context.manifest.components.get('pause', '3.10')}"
    release, source = runtime_release(context)
    if not is_supported(release):
        context.echo(f"  WARNING containerd {release} ({source}) is not a release airlock supports ({', '.join(SUPPORTED)}); config.toml is written in the layout it reads")
    merged = merge(existing, CERTS_DIR, pause, context.config.kubelet.cgroup_driver == "systemd", release)
    context.echo(f"  {'would write' if host.dry_run else 'writing'} containerd config.toml version {merged.version} for containerd {release} ({source})")
    for name, text in dropins(context, "/etc/containerd/config.toml", merged.config):
        # A drop-in containerd merges over config.toml must not undo airlock's settings (checked before anything is written).
        merged.notes.extend(check_dropin(name, text, CERTS_DIR, pause, merged.version))
    for note in merged.notes:
        context.echo(f"  {'would note: ' if host.dry_run else ''}containerd config: {note}")
    mode = (config_path.stat().st_mode & 0o777) if existing is not None else 0o644
    if existing is not None and existing != merged.config:
        backup = paths("/etc/containerd/config.toml.airlock-backup")
        if not backup.exists():
            # The original may hold registry credentials: the backup is no more readable than it was.
            host.write(backup, existing, mode)
    changed = host.write(config_path, merged.config, mode)
    ours = set(registries(context))
    lockdown = context.config.registry_lockdown
    for registry, moved in sorted(merged.hosts.items()):
        if registry in ours or (lockdown and registry == "_default"):
            context.echo(f"  containerd config: the settings for {registry} moved out of config.toml are superseded: its pulls go to the node registry")
            continue
        target = paths(hosts_file(registry))
        current = target.read_text() if target.exists() else None
        text = hosts_toml(f"Written by airlock from {config_path.name}'s registry settings for {registry}.", moved.server, moved.hosts, moved.tls, current)
        host.write(target, text)
    mirrors = mirror_urls(context)
    for registry in ours:
        # server is the first mirror too: if every mirror fails, containerd must not fall back to the internet.
        text = pull_hosts_toml(registry, mirrors, context.config.registry_ca)
        host.write(paths(hosts_file(registry)), text)  # read by containerd on every pull: no restart
    where = " then ".join(mirrors)
    context.echo(f"{'would make ' if host.dry_run else ''}containerd pull{'' if host.dry_run else 's'} {', '.join(sorted(ours))} from {where} only")
    if lockdown:
        # containerd reads _default for every registry without a directory of its own: with the node registry as its
        # server and only host, an image from any other registry can be pulled from nowhere else (and is not there).
        text = mirrors_hosts_toml("Written by airlock (registry.lockdown): every other registry's pulls go to the node registry only.", mirrors, context.config.registry_ca)
        target = paths(hosts_file("_default"))
        if target.exists() and target.read_text() != text and "registry.lockdown" not in target.read_text():
            context.echo(f"  containerd config: {'would replace' if host.dry_run else 'replaced'} the operator's certs.d/_default/hosts.toml (registry.lockdown)")
        host.write(target, text)
        context.echo(f"{'would lock' if host.dry_run else 'locked'} containerd to {mirrors[0]}: images of registries the bundle does not carry cannot be pulled")
    if context.start_services and changed:
        host.run(["systemctl", "restart", "containerd"])


PHASE = Phase(
    "runtime",
    "load and persist kernel modules and sysctls; merge containerd's config (config_path, sandbox image, systemd cgroups); write hosts.toml",
    run,
)
