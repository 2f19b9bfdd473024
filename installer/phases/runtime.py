"""runtime: containerd's config merged (never clobbered) and a hosts.toml per upstream registry."""

from __future__ import annotations

from urllib.parse import urlsplit

from bundle.reference import ImageRef
from installer.containerd_config import merge
from installer.phases import Context, Phase
from installer.phases.unpack import ensure_staged
from installer.templates import render

CERTS_DIR = "/etc/containerd/certs.d"


def upstream_server(registry: str) -> str:
    return "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"


def mirror_url(context: Context) -> str:
    if context.config.registry_mirror:
        return context.config.registry_mirror.rstrip("/")
    scheme = "https" if context.config.registry_tls_cert else "http"
    return f"{scheme}://{context.config.registry_listen}"


def registries(context: Context) -> list[str]:
    return sorted({ImageRef.parse(image.reference).registry for image in context.manifest.images})


def run(context: Context) -> None:
    staging = ensure_staged(context)
    paths, host = context.paths, context.host
    config_path = paths("/etc/containerd/config.toml")
    existing = config_path.read_text() if config_path.exists() else None
    pause = f"registry.k8s.io/pause:{context.manifest.components.get('pause', '3.10')}"
    merged, notes = merge(existing, CERTS_DIR, pause, context.config.kubelet.cgroup_driver == "systemd")
    for note in notes:
        context.echo(f"  {'would note: ' if host.dry_run else ''}containerd config: {note}")
    if existing is not None and existing != merged:
        backup = paths("/etc/containerd/config.toml.airlock-backup")
        if not backup.exists():
            host.write(backup, existing)
    changed = host.write(config_path, merged)
    mirror = mirror_url(context)
    lines = []
    if urlsplit(mirror).path.strip("/"):
        # A registry prefix (`--from https://harbor/site`): containerd must use the path as given, not add /v2.
        lines.append("  override_path = true")
    if context.config.registry_ca:
        lines.append(f'  ca = "{context.config.registry_ca}"')
    ca_line = "\n".join(lines)
    for registry in registries(context):
        # server is the node registry too: if the mirror fails, containerd must not fall back to the internet.
        text = render("containerd/hosts.toml", staging, upstream=registry, server=mirror, mirror=mirror, ca_line=ca_line)
        host.write(paths(f"{CERTS_DIR}/{registry}/hosts.toml"), text)  # read by containerd on every pull: no restart
    context.echo(f"{'would make ' if host.dry_run else ''}containerd pull{'' if host.dry_run else 's'} {', '.join(registries(context))} from {mirror} only")
    if context.start_services and changed:
        host.run(["systemctl", "restart", "containerd"])


PHASE = Phase("runtime", "merge containerd's config (config_path, sandbox image, systemd cgroups) and write hosts.toml", run)
