"""The build-side commands of `airlock`: keygen, update-trusted-root, build, push, diff.

They live on their own Typer app; `airlock.cli` composes them with the node
commands. Nothing here imports the installer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from builder import artifacts
from builder.errors import BuildError, ResolveError
from builder.versions import UnsupportedVersion
from bundle.containerd import ContainerdVersionError
from bundle.errors import AirlockError
from bundle.meter import human_size

# Plain help: square brackets in help text (HOST[:PORT][/PREFIX]) are text, not markup, and rich stays unimported.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def fail(error: Exception) -> None:
    typer.echo(f"airlock: error: {error}", err=True)
    raise typer.Exit(1)


def usage_error(message: str) -> None:
    """A usage error: one line on stderr, exit 2 (failures exit 1)."""
    typer.echo(f"airlock: error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for airlock.key (private, 0600) and airlock.pub.")],
    algorithm: Annotated[str, typer.Option("--algorithm", help="ed25519 or ecdsa-p256.")] = "ed25519",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make a signing key pair. Keep airlock.key on the build host; copy airlock.pub to every node.

    Prints the key's fingerprint: compare it with the one `airlock inspect` shows, by a second channel.

    Example: airlock keygen --out keys
    """
    from builder import sign

    try:
        key_path, pub_path = sign.generate(out, algorithm, force)
    except AirlockError as error:
        fail(error)
    from bundle.trust import parse_public_key

    fingerprint = parse_public_key(pub_path.read_bytes(), str(pub_path)).key_id
    typer.echo(f"wrote {key_path} (private, mode 0600) and {pub_path} (give this one to the nodes)")
    typer.echo(f"fingerprint {fingerprint} (what `airlock inspect` shows as the signer; compare it by a second channel)")


@app.command("update-trusted-root")
def update_trusted_root_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the trusted_root.json (then: airlock build --trusted-root FILE).")],
    tuf_url: Annotated[
        str,
        typer.Option(
            "--tuf-url",
            help="The TUF repository that publishes trusted_root.json (Sigstore's public one is https://tuf-repo-cdn.sigstore.dev).",
            show_default="Sigstore's public repository",
        ),
    ] = "https://tuf-repo-cdn.sigstore.dev",
    tuf_root: Annotated[
        Path | None,
        typer.Option("--tuf-root", help="The repository's TUF root.json to start from (its operators hand it out); needed on the first update of a private one."),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where the TUF metadata trusted so far is kept.", show_default="$XDG_CACHE_HOME/airlock")] = None,
) -> None:
    """Fetch a newer Sigstore trust root through its TUF repository (connected host), verified, for `build --trusted-root`.

    Sigstore's public repository is the default, starting from the TUF root airlock ships; a private
    Sigstore's needs --tuf-url and, the first time, --tuf-root.

    Example: airlock update-trusted-root --output trusted_root.json
    """
    from builder.build import default_cache_dir
    from builder.trustroot import update_trusted_root

    try:
        updated = update_trusted_root(tuf_url, output, cache_dir or default_cache_dir(), tuf_root)
    except AirlockError as error:
        fail(error)
    typer.echo(f"wrote {updated.output}: Sigstore trust root from {updated.url} (verified through TUF), sha256 {updated.sha256}")
    typer.echo(f"build with: airlock build --trusted-root {updated.output} ...")


# Flags that --config build.yaml may also set, with the BuildOptions field each fills.
CONFIG_KEYS = {
    "kubernetes-version": "kubernetes_version",
    "sign-key": "sign_key",
    "output": "output",
    "arch": "arches",
    "cni": "cni",
    "image": "images",
    "images-file": "images_file",
    "release-url": "release_url",
    "github-url": "github_url",
    "registry-mirror": "registry_mirrors",
    "cache-dir": "cache_dir",
    "concurrency": "concurrency",
    "cni-version": "cni_version",
    "crictl-version": "crictl_version",
    "containerd-version": "containerd_version",
    "runc-version": "runc_version",
    "flannel-version": "flannel_version",
    "flannel-sha256": "flannel_sha256",
    "name": "name",
    "serial": "serial",
    "expires-days": "expires_days",
    "base": "base",
    "node-pyz": "node_pyz",
    "split": "split",
    "sidecars": "sidecars",
    "image-list-from-table": "image_list_from_table",
    "no-scan": "no_scan",
    "manifest": "manifests",
    "osv-url": "osv_url",
    "fail-on": "fail_on",
    "require": "require",
    "trusted-root": "trusted_root",
    "allow-unsupported-version": "allow_unsupported_version",
}


def load_build_config(path: Path) -> dict:
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise BuildError(f"--config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise BuildError(f"--config {path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise BuildError(f"--config {path}: expected a mapping of flag names to values")
    unknown = sorted(set(document) - set(CONFIG_KEYS))
    if unknown:
        raise BuildError(f"--config {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    return {CONFIG_KEYS[key]: value for key, value in document.items()}


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def check_usage(values: dict) -> None:
    """Refuse values no build could use (exit 2, listing the valid ones) before anything is read or fetched."""
    from builder.build import CNI_CHOICES
    from builder.resolve import ACCEPTED, parse_request
    from builder.versions import SUPPORTED_MINORS, SUPPORTED_RANGE, minor_of_request

    try:
        kind, value = parse_request(str(values["kubernetes_version"]))
    except ResolveError:
        usage_error(f"--kubernetes-version {values['kubernetes_version']!r} is not a version or label; use {ACCEPTED}")
    minor = minor_of_request(kind, value)
    if minor is not None and minor not in SUPPORTED_MINORS and not values.get("allow_unsupported_version"):
        usage_error(
            f"--kubernetes-version {values['kubernetes_version']}: Kubernetes 1.{minor} is not supported (airlock builds {SUPPORTED_RANGE}, "
            "the minors supported upstream); pick a supported version, or pass --allow-unsupported-version for a lab"
        )
    arches = values.get("arches", ["amd64"])
    unknown = [arch for arch in arches if arch not in artifacts.ARCHES]
    if unknown or not arches:
        usage_error(f"--arch {','.join(unknown) or repr('')}: choose from {', '.join(artifacts.ARCHES)} (linux only; comma-separated for several)")
    if values.get("cni", "flannel") not in CNI_CHOICES:
        usage_error(f"--cni {values['cni']!r}: choose from {', '.join(CNI_CHOICES)}")
    if "containerd_version" in values:
        try:
            artifacts.containerd_release(str(values["containerd_version"]))
        except ContainerdVersionError as error:
            usage_error(str(error))
    from bundle.provenance import REQUIRE_LEVELS

    if values.get("require", "any") not in REQUIRE_LEVELS:
        usage_error(f"--require {values['require']!r}: choose from {', '.join(REQUIRE_LEVELS)}")


@app.command()
def build(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Bundle file to write (.tar).")] = None,
    kubernetes_version: Annotated[
        str | None, typer.Option("--kubernetes-version", help="stable, stable-1, stable-1.36, latest, latest-1.36, v1.36.4 or 1.36.4.")
    ] = None,
    sign_key: Annotated[Path | None, typer.Option("--sign-key", help="Private key from `airlock keygen`.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="build.yaml holding any of these flags (flags win).")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Comma-separated: amd64,arm64 (linux only).", show_default="amd64")] = None,
    cni: Annotated[str | None, typer.Option("--cni", help="flannel or none.", show_default="flannel")] = None,
    image: Annotated[list[str] | None, typer.Option("--image", help="Extra image to carry (repeatable).")] = None,
    images_file: Annotated[Path | None, typer.Option("--images-file", help="File with one extra image per line (# comments).")] = None,
    release_url: Annotated[str | None, typer.Option("--release-url", help="Kubernetes release server (or its internal mirror).", show_default="https://dl.k8s.io")] = None,
    github_url: Annotated[str | None, typer.Option("--github-url", help="GitHub release downloads (or their internal mirror).", show_default="https://github.com")] = None,
    registry_mirror: Annotated[
        list[str] | None, typer.Option("--registry-mirror", help="HOST=URL: fetch HOST's images from URL (repeatable).")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Download cache.", show_default="$XDG_CACHE_HOME/airlock")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Parallel transfers.", show_default="8")] = None,
    cni_version: Annotated[str | None, typer.Option("--cni-version", help="CNI plugins version.", show_default=artifacts.DEFAULT_CNI_VERSION)] = None,
    crictl_version: Annotated[str | None, typer.Option("--crictl-version", help="crictl version.", show_default="the one for the Kubernetes minor")] = None,
    containerd_version: Annotated[
        str | None, typer.Option("--containerd-version", help="containerd release: 2.3, 2.2, 2.1, 2.0 or 1.7 (newest patch), or an exact one.", show_default=artifacts.DEFAULT_CONTAINERD_VERSION)
    ] = None,
    runc_version: Annotated[str | None, typer.Option("--runc-version", help="runc version.", show_default="the one that containerd release pairs with")] = None,
    flannel_version: Annotated[str | None, typer.Option("--flannel-version", help="flannel version.", show_default=artifacts.DEFAULT_FLANNEL_VERSION)] = None,
    flannel_sha256: Annotated[
        str | None,
        typer.Option("--flannel-sha256", help="sha256 of kube-flannel.yml (flannel publishes none); without it (and no pin in airlock) the file is recorded unpinned."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Bundle name recorded in bundle.json.", show_default="airlock")] = None,
    serial: Annotated[int | None, typer.Option("--serial", help="Bundle serial (increasing).", show_default="build time in seconds")] = None,
    expires_days: Annotated[int | None, typer.Option("--expires-days", help="Nodes refuse the bundle after this many days.", show_default="365")] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Build a delta on this earlier bundle (or its bundle.json): carry only what it lacks.")
    ] = None,
    node_pyz: Annotated[
        Path | None,
        typer.Option("--node-pyz", help="The node installer to carry (make dist builds it).", show_default="$AIRLOCK_NODE_PYZ, else dist/airlock-node-VERSION.pyz"),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split", help="Write numbered parts of at most SIZE (3900M, 4G, fat32, dvd, bd25) and a signed parts list.", show_default="one file"
        ),
    ] = None,
    sidecars: Annotated[
        bool | None, typer.Option("--sidecars", help="Also write SHA256SUMS(.sig), sbom.spdx.json, vulnerabilities.json, report.html and MANIFEST.txt beside the bundle.", show_default="False")
    ] = None,
    image_list_from_table: Annotated[
        bool | None,
        typer.Option(
            "--image-list-from-table",
            help="Take the control-plane images from a built-in per-minor table instead of asking kubeadm (not exact: etcd changes within a minor).",
            show_default="False",
        ),
    ] = None,
    manifest: Annotated[
        list[Path] | None,
        typer.Option("--manifest", help="Extra Kubernetes YAML the node applies after init, after the CNI (repeatable; checked against the API versions of the target minor)."),
    ] = None,
    osv_url: Annotated[
        str | None,
        typer.Option("--osv-url", help="OSV API to check the packages found against (an internal mirror), or none.", show_default="https://api.osv.dev"),
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option("--fail-on", help="Refuse the bundle when a known vulnerability is at or above low, medium, high or critical.", show_default="report only"),
    ] = None,
    no_scan: Annotated[
        bool | None,
        typer.Option(
            "--no-scan",
            help="Do not read what is inside binaries and image layers: the SBOM then lists files and images only.",
            show_default="False",
        ),
    ] = None,
    require: Annotated[
        str | None,
        typer.Option(
            "--require",
            help="Refuse to build when any file or image has less than this: signed (a verified upstream signature), "
            "pinned (a pin, a published checksum or a signature: nothing unpinned) or any.",
            show_default="any",
        ),
    ] = None,
    trusted_root: Annotated[
        Path | None,
        typer.Option(
            "--trusted-root",
            help="Sigstore trusted_root.json to verify upstream signatures against (a newer public one, or a private Sigstore's).",
            show_default="the one shipped with airlock",
        ),
    ] = None,
    allow_unsupported_version: Annotated[
        bool | None,
        typer.Option(
            "--allow-unsupported-version",
            help="Build a Kubernetes minor outside the supported range (labs only; recorded in bundle.json and shown by inspect).",
            show_default="False",
        ),
    ] = None,
) -> None:
    """Build one signed bundle with everything a kubeadm cluster needs.

    Example: airlock build -o k8s.tar --kubernetes-version stable-1.36 --sign-key keys/airlock.key --arch amd64,arm64
    """
    from builder.build import BuildOptions
    from builder.build import build as run_build
    from builder.images import parse_mirrors
    from builder.progress import Progress

    try:
        values = load_build_config(config) if config else {}
        flags = {
            "output": output,
            "kubernetes_version": kubernetes_version,
            "sign_key": sign_key,
            "arches": arch,
            "cni": cni,
            "images": image or None,
            "images_file": images_file,
            "release_url": release_url,
            "github_url": github_url,
            "registry_mirrors": registry_mirror or None,
            "cache_dir": cache_dir,
            "concurrency": concurrency,
            "cni_version": cni_version,
            "crictl_version": crictl_version,
            "containerd_version": containerd_version,
            "runc_version": runc_version,
            "flannel_version": flannel_version,
            "flannel_sha256": flannel_sha256,
            "name": name,
            "serial": serial,
            "expires_days": expires_days,
            "base": base,
            "node_pyz": node_pyz,
            "split": split,
            "sidecars": sidecars,
            "image_list_from_table": image_list_from_table,
            "no_scan": no_scan,
            "manifests": manifest or None,
            "osv_url": osv_url,
            "fail_on": fail_on,
            "require": require,
            "trusted_root": trusted_root,
            "allow_unsupported_version": allow_unsupported_version,
        }
        values.update({key: value for key, value in flags.items() if value is not None})
        missing = [
            flag
            for flag, field in (("--output", "output"), ("--kubernetes-version", "kubernetes_version"), ("--sign-key", "sign_key"))
            if not values.get(field)
        ]
        if missing:
            usage_error(f"build needs {', '.join(missing)} (as flags or in --config)")
        if "arches" in values:
            values["arches"] = _as_list(values["arches"])
        check_usage(values)
        if "images" in values:
            values["images"] = _as_list(values["images"]) if isinstance(values["images"], str) else list(values["images"])
        if "registry_mirrors" in values:
            raw = values["registry_mirrors"]
            values["registry_mirrors"] = parse_mirrors([f"{k}={v}" for k, v in raw.items()] if isinstance(raw, dict) else _as_list(raw))
        for path_field in ("output", "sign_key", "images_file", "cache_dir", "base", "node_pyz", "trusted_root"):
            if values.get(path_field) is not None:
                values[path_field] = Path(values[path_field])
        if values.get("osv_url") == "none":
            values["osv_url"] = None
        if values.get("fail_on") is not None:
            values["fail_on"] = str(values["fail_on"]).lower()
            if values["fail_on"] not in ("low", "medium", "high", "critical"):
                usage_error(f"--fail-on {values['fail_on']!r}: choose low, medium, high or critical")
        if "manifests" in values:
            raw = values["manifests"]
            values["manifests"] = [Path(item) for item in ([raw] if isinstance(raw, str) else raw)]
        if values.get("split") is not None:
            from builder.split import parse_size

            values["split"] = parse_size(values["split"])
        options = BuildOptions(**values)
        progress = Progress("build")
        try:
            result = run_build(options, progress)
        finally:
            progress.close()
    except UnsupportedVersion as error:
        usage_error(str(error))
    except AirlockError as error:
        fail(error)
    manifest = result.manifest
    if manifest.base is not None:
        typer.echo(
            f"delta on serial {manifest.base.serial}: carries {human_size(manifest.carried_size)} of {human_size(manifest.total_size)} "
            f"({sum(1 for f in manifest.files if f.carried)} of {len(manifest.files)} members)"
        )
    _echo_files(result.files, result.sidecars)
    from bundle.provenance import records, summary

    typer.echo(f"provenance: {summary(records(manifest))}")
    written = f"{len(result.files) - 2} parts of {result.output}" if options.split is not None else str(result.output)
    typer.echo(
        f"wrote {written} ({human_size(sum(p.stat().st_size for p in result.files))}): kubernetes {manifest.version} "
        f"(asked {manifest.requested}), {', '.join(manifest.platforms)}, {len(manifest.images)} images, "
        f"{len(manifest.files)} members, serial {manifest.serial}; downloaded {human_size(result.network_bytes)} in {result.seconds:.1f}s"
    )


@app.command()
def push(
    bundle: Annotated[Path, typer.Argument(help="The bundle whose images to push.")],
    to: Annotated[str, typer.Option("--to", help="HOST[:PORT][/PREFIX] of the target registry (Harbor project, Artifactory repo...).")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key or directory; the bundle is verified before anything is pushed.")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain HTTP to the target.")] = False,
    username: Annotated[str | None, typer.Option("--username", help="Registry user (else ~/.docker/config.json).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Staging store for the bundle's images.", show_default="$XDG_CACHE_HOME/airlock/push")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Parallel uploads.")] = 8,
) -> None:
    """Copy every image of a verified bundle into an existing registry, digests unchanged, and the rest as one OCI artifact.

    Blobs the target already has are skipped, so a rerun moves only what is missing.
    An upstream index that names platforms the bundle does not carry goes in narrowed
    to the carried ones, under a new digest that is printed. Prints the containerd
    hosts.toml that points nodes at the target.

    Example: airlock push k8s.tar --key keys/airlock.pub --to harbor.corp.example/k8s
    """
    import sys

    from builder.build import default_cache_dir
    from builder.progress import Progress
    from builder.push import Target, hosts_toml, run_push
    from bundle.trust import load_trusted_keys

    if password_stdin and not username:
        typer.echo("airlock: error: --password-stdin needs --username", err=True)
        raise typer.Exit(2)
    credentials = (username, sys.stdin.readline().rstrip("\n")) if username and password_stdin else None
    if username and not password_stdin:
        typer.echo("airlock: error: give the password with --password-stdin (never on the command line)", err=True)
        raise typer.Exit(2)
    try:
        target = Target.parse(to, insecure)
        keys = load_trusted_keys(key)
        progress = Progress("push")
        try:
            pusher, plan, upstreams = run_push(bundle, keys, target, work_dir or default_cache_dir() / "push", progress, concurrency, credentials)
        finally:
            progress.close()
    except AirlockError as error:
        fail(error)
    typer.echo(
        f"pushed {len(plan.images)} images to {target.host}{'/' + target.prefix if target.prefix else ''}: "
        f"{pusher.uploaded} blobs uploaded, {pusher.mounted} mounted, {pusher.skipped} already there"
    )
    for source, destination in plan.images:
        typer.echo(f"  {source} -> {destination}")
    source = f"{target.origin}{'/' + target.prefix if target.prefix else ''}"
    typer.echo(f"  bundle artifact -> {plan.artifact}")
    typer.echo(f"nodes install from it: airlock-node join --from {source}{' --insecure' if target.insecure else ''} --key airlock.pub --config node.yaml"
               + ("" if target.insecure else "  (add --ca CA.crt for a site CA)"))
    if plan.narrowed:
        typer.echo(
            f"\n{len(plan.narrowed)} upstream indexes name platforms this bundle does not carry; a registry refuses such an index, "
            "so each went in narrowed to the carried platforms, under a new digest (platform manifests keep theirs):"
        )
        for change in plan.narrowed:
            typer.echo(f"  {change.reference} ({', '.join(change.kept)}; {change.dropped} left out): {change.upstream_digest} -> {change.pushed_digest}")
        typer.echo("Pull these by tag or by platform manifest digest; their upstream index digest (bundle.json's) is not in the target.")
    typer.echo("\nPoint containerd on each node at it (config_path = \"/etc/containerd/certs.d\"):")
    for upstream in upstreams:
        typer.echo(f"\n# /etc/containerd/certs.d/{upstream}/hosts.toml\n{hosts_toml(upstream, target)}", nl=False)
    mirrors = " ".join(f"--registry-mirror {u}={target.origin}{'/' + target.prefix if target.prefix else ''}" for u in upstreams)
    typer.echo(f"\nor, for a later airlock build from it: {mirrors}")


@app.command("diff")
def diff_command(
    old: Annotated[Path, typer.Argument(help="The older bundle (or its bundle.json).")],
    new: Annotated[Path, typer.Argument(help="The newer bundle (or its bundle.json).")],
    output: Annotated[str, typer.Option("--output", help="text or json.")] = "text",
) -> None:
    """What changed between two bundles: versions, images added, removed and changed, and the bytes each kind of update moves.

    Example: airlock diff k8s-old.tar k8s.tar --output json
    """
    import json

    from builder.diff import diff, read_manifest, render

    if output not in ("text", "json"):
        usage_error(f"--output {output!r}: choose text or json")
    try:
        result = diff(read_manifest(old), read_manifest(new))
    except AirlockError as error:
        fail(error)
    typer.echo(json.dumps(result.to_dict(), indent=2) if output == "json" else render(result, human_size))



@app.command("report")
def report_command(
    bundle: Annotated[Path, typer.Argument(help="The bundle (or its parts list) to describe.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    base: Annotated[Path | None, typer.Option("--base", help="An earlier bundle (or its bundle.json) to show the changes against.")] = None,
    key: Annotated[list[Path] | None, typer.Option("--key", help="Check the signature against this key first.")] = None,
) -> None:
    """Write one self-contained HTML page for a reviewer: versions, components, images with digests and platforms,
    provenance, packages, vulnerabilities by severity, API-version findings, and changes against --base.

    No network, scripts or fonts: the page opens the same inside the closed network. Reads only the start
    of the bundle (bundle.json, its signature and the review members), each checked against bundle.json.

    Example: airlock report k8s.tar -o report.html --base k8s-old.tar --key airlock.pub
    """
    from builder.build import read_reviewed
    from builder.report import render
    from bundle.atomic import write_atomic
    from bundle.trust import load_trusted_keys

    try:
        keys = load_trusted_keys(key) if key else None
        page = render(read_reviewed(bundle, keys), read_reviewed(base) if base else None)
        write_atomic(output, page, 0o644)
    except AirlockError as error:
        fail(error)
    typer.echo(f"wrote {output} ({human_size(len(page))})")


def _echo_files(files, sidecars) -> None:
    """One line per written file when there is more than the bundle itself (parts, parts list, sidecars)."""
    if len(files) > 1 or sidecars:
        for path in (*files, *sidecars):
            typer.echo(f"  {path}  {human_size(path.stat().st_size)}")


@app.command("split")
def split_command(
    bundle: Annotated[Path, typer.Argument(help="The bundle (.tar) to split.")],
    size: Annotated[str, typer.Option("--size", help="Largest part: bytes, K/M/G/T (3900M, 4G) or fat32, dvd, bd25.")],
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="The key that signed the bundle; signs the parts list (nodes need it signed).")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where the parts go (default: beside the bundle).")] = None,
    sidecars: Annotated[bool, typer.Option("--sidecars", help="Also write SHA256SUMS(.sig), sbom.spdx.json and MANIFEST.txt (needs --sign-key).")] = False,
) -> None:
    """Split an existing bundle into numbered parts for removable media, in one streamed pass.

    With --sign-key, the same pass verifies the bundle under that key and the parts list is signed
    with it; nodes accept the parts list (or the first part) wherever they accept a bundle.
    Example: airlock split k8s.tar --size fat32 --sign-key keys/airlock.key --sidecars
    """
    import hashlib

    from builder import sign
    from builder.sidecars import review_sidecars, write_sidecars
    from builder.split import parse_size, split_bundle
    from bundle.manifest import SBOM

    if sidecars and sign_key is None:
        typer.echo("airlock: error: --sidecars needs --sign-key (SHA256SUMS.sig is signed with it)", err=True)
        raise typer.Exit(2)
    try:
        part_size = parse_size(size)
        key = sign.load(sign_key) if sign_key else None
        target = out_dir or bundle.parent
        result = split_bundle(bundle, target, part_size, key, origin=f"--sign-key {sign_key}")
        files = [*result.written.paths, result.listing]
        written_sidecars = []
        if key is not None:
            files.append(result.listing.with_name(result.listing.name + ".sig"))
        small = files[len(result.written.paths) :]
        if result.node_pyz is not None:
            files.append(target / result.node_pyz.name)
        if sidecars:
            verified = result.verified
            beside = [result.node_pyz] if result.node_pyz is not None else []
            hashed = [(part.name, part.sha256) for part in (*result.written.files, *beside)]
            manifest_sha256 = hashlib.sha256(verified.manifest_bytes).hexdigest()
            more = review_sidecars(verified.manifest, manifest_sha256, key, result.members)
            written_sidecars = write_sidecars(target, hashed, small, verified.manifest, manifest_sha256, result.members[SBOM], key, more)
    except AirlockError as error:
        fail(error)
    _echo_files(files, written_sidecars)
    typer.echo(f"split {bundle} into {len(result.written.files)} parts of at most {part_size} bytes; parts list {result.listing}")
    if key is None:
        typer.echo("note: the parts list is not signed; nodes refuse it until you split again with --sign-key", err=True)


@app.command("join-parts")
def join_parts_command(
    listing: Annotated[Path, typer.Argument(help="The parts list (NAME.parts.json) or the first part.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle file to write.")],
    key: Annotated[list[Path] | None, typer.Option("--key", help="Also check the parts list's signature against this key.")] = None,
) -> None:
    """Join a split bundle back into one file, checking every part and the whole against the parts list.

    Only for tools that need one file: airlock itself reads the parts directly.

    Example: airlock join-parts k8s.parts.json -o k8s.tar --key keys/airlock.pub
    """
    from builder.split import join_parts
    from bundle.parts import locate
    from bundle.trust import load_trusted_keys

    try:
        found = locate(listing)
        if found is None:
            typer.echo(f"airlock: error: {listing}: not a parts list (NAME.parts.json) or a first part (NAME.tar.part001)", err=True)
            raise typer.Exit(2)
        written = join_parts(found, output, load_trusted_keys(key) if key else None)
    except AirlockError as error:
        fail(error)
    typer.echo(f"wrote {output} ({human_size(written.size)}), sha256 {written.sha256}{'' if key else ' (parts list signature not checked: no --key)'}")
