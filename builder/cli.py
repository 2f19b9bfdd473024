"""The build-side commands of `airlock`: keygen, update-trusted-root, build, push, diff.

They live on their own Typer app; `airlock.cli` composes them with the node
commands. Nothing here imports the installer.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from builder.errors import BuildError, UsageError
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


def load_build_config(path: Path) -> dict:
    """`--config build.yaml`: a mapping of build flag names (without the dashes) to values, by BuildOptions field."""
    import yaml

    from builder.options import CONFIG_KEYS

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise BuildError(f"--config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise BuildError(f"--config {path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise BuildError(f"--config {path}: expected a mapping of flag names to values")
    unknown = sorted(str(key) for key in set(document) - set(CONFIG_KEYS))
    if unknown:
        raise BuildError(f"--config {path}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    return {CONFIG_KEYS[key]: value for key, value in document.items()}


def build(config: Path | None = None, **flags) -> None:
    """Build one signed bundle with everything a kubeadm cluster needs.

    Example: airlock build -o k8s.tar --kubernetes-version stable-1.36 --sign-key keys/airlock.key --arch amd64,arm64
    """
    from builder.build import build as run_build
    from builder.options import BuildOptions
    from builder.progress import Progress

    try:
        values = load_build_config(config) if config else {}
        values.update({name: value for name, value in flags.items() if value not in (None, [], ())})
        options = BuildOptions.parse(values)
        progress = Progress("build")
        try:
            result = run_build(options, progress)
        finally:
            progress.close()
    except UsageError as error:
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



def _build_parameters() -> list[inspect.Parameter]:
    """`airlock build`'s parameters, one per BuildOptions field (builder/options.py), with --config after the required three."""
    from builder.options import FLAGS

    config = typer.Option("--config", help="build.yaml holding any of these flags (flags win).")
    params = []
    for name, flag in FLAGS.items():
        cli = flag.cli
        option = typer.Option(*([flag.name, flag.short] if flag.short else [flag.name]), help=flag.help, show_default=flag.show_default)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[cli | None, option]))
        if name == "sign_key":
            params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Path | None, config]))
    return params


build.__signature__ = inspect.Signature(_build_parameters())
app.command("build")(build)


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
