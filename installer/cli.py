"""The node-side commands of `airlock`: verify, inspect, init, join, upgrade, reset, store, registry.

`installer.cli:main` is the node's own entry point (no builder needed);
`airlock.cli` adds the build-side commands for the full program.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from bundle.errors import AirlockError
from bundle.memory import keep_freed_memory
from bundle.meter import human_size

HELP = "Air-gapped Kubernetes bundles: build one signed file on a connected host, verify and install it on nodes with no route out."
# Plain help: square brackets in help text ([/PREFIX], [default: ...]) are text, not markup, and rich stays unimported.
PLAIN = {"add_completion": False, "pretty_exceptions_enable": False, "rich_markup_mode": None}

app = typer.Typer(name="airlock", help=HELP, no_args_is_help=True, **PLAIN)


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("airlock")
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a package)"


def show_version(context: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"{context.find_root().info_name or 'airlock'} {version()}")
        raise typer.Exit()


@app.callback()
def root_options(
    _version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=show_version, is_eager=True, expose_value=False)
    ] = False,
) -> None:
    pass


def usage_error(message: str) -> None:
    """A usage error: one line on stderr, exit 2 (failures exit 1)."""
    typer.echo(f"airlock: error: {message}", err=True)
    raise typer.Exit(2)

KeyOption = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--key",
        help="Trusted public key (PEM), or a directory of *.pub/*.pem keys. Repeatable.",
        show_default="the node's kept keys in /etc/airlock/trusted-keys",
    ),
]


def trusted_keys(key: Optional[list[Path]], root: Path):
    """The keys a command trusts: those given with --key, else the ones this node kept after its first install."""
    from bundle.trust import load_trusted_keys
    from installer.trusted import TRUSTED_KEYS, kept_keys

    if key:
        return load_trusted_keys(key)
    kept = kept_keys(root)
    if not kept:
        usage_error(f"no trusted key: pass --key PUB (after the first install the node keeps it in {TRUSTED_KEYS}, and later commands need none)")
    return kept


# Node commands write system files and directories: none may come out group- or world-writable because of the
# caller's umask (under umask 000 an install would leave staging, the store and certs.d open to every local user).
NODE_UMASK = 0o022


def fail(error: Exception) -> None:
    typer.echo(f"airlock: error: {error}", err=True)
    raise typer.Exit(1)


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle (.tar or .tar.zst), or a split bundle's parts list or first part.")],
    key: KeyOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
    root: Annotated[Path, typer.Option("--root", help="Read the kept trusted keys of the node installed under this directory instead of /.")] = Path("/"),
    provenance: Annotated[
        bool,
        typer.Option("--provenance", help="Also re-verify every upstream signature the bundle carries, offline, against the trust root it carries."),
    ] = False,
) -> None:
    """Check the signature first, then every member's size and sha256, in one streaming pass.

    Exit 0 when everything checks out; exit 1 naming the first bad member otherwise.
    With --provenance, every upstream signature recorded in bundle.json is re-verified offline
    (certificate chain, identity, signature, transparency-log entry) from the evidence the bundle carries.

    Example: airlock-node verify k8s.tar --key airlock.pub
    """
    from bundle.provenance import EvidenceCollector, recheck
    from bundle.verify import verify_bundle
    from installer.progress import ProgressLines

    collector = EvidenceCollector()
    try:
        keys = trusted_keys(key, root)
        from bundle.parts import total_size

        with ProgressLines(total_size(bundle), "verify", quiet=quiet) as advance:
            verified = verify_bundle(bundle, keys, on_bytes=advance, sink=collector.sink if provenance else None)
        rechecked = recheck(verified.manifest, collector.members.get) if provenance else None
    except AirlockError as error:
        fail(error)
    if not quiet:
        manifest = verified.manifest
        members = f"{len(manifest.files)} members"
        if manifest.base is not None:
            carried = sum(1 for entry in manifest.files if entry.carried)
            members = f"delta on serial {manifest.base.serial}: {carried} of {len(manifest.files)} members carried and checked, the rest are the base's"
        typer.echo(
            f"OK {bundle}: {manifest.name} serial {manifest.serial}, kubernetes {manifest.version}, "
            f"{members}, {len(manifest.images)} images, signed by {verified.signer.key_id} ({verified.signer.origin})"
        )
        if rechecked is not None:
            from bundle.provenance import records, summary

            base = f"; {rechecked.in_base} more need the base bundle's members (re-verified when a node installs this delta on it)" if rechecked.in_base else ""
            typer.echo(
                f"provenance: {rechecked.signatures} upstream signatures re-verified offline against the carried Sigstore trust root "
                f"(sha256 {rechecked.trusted_root_sha256[:16]}…){base}; {summary(records(manifest))}"
            )


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The bundle to describe.")],
    output: Annotated[str, typer.Option("--output", help="text or json.")] = "text",
    key: Annotated[Optional[list[Path]], typer.Option("--key", help="Also check the signature against this key.")] = None,
    vulnerabilities: Annotated[bool, typer.Option("--vulnerabilities", help="List every known vulnerability recorded at build (vulnerabilities.json).")] = False,
) -> None:
    """Show what a bundle holds: versions, platforms, files, images, sizes, signer, each file's and image's provenance,
    API-version findings and vulnerabilities.

    Reads only the start of the bundle: bundle.json, its signature and the review members
    (api-versions.json, sbom.spdx.json, vulnerabilities.json), each checked against bundle.json;
    run `verify` to check every member.

    Example: airlock-node inspect k8s.tar --key airlock.pub
    """
    from bundle.manifest import API_FINDINGS, VULNERABILITIES
    from bundle.parts import total_size
    from bundle.trust import load_trusted_keys, verify_signature
    from bundle.verify import read_review

    if output not in ("text", "json"):
        usage_error(f"--output {output!r}: choose text or json")
    try:
        manifest, manifest_bytes, signature, review = read_review(bundle)
        signature_state = "not checked (pass --key to check it)"
        if key:
            signer = verify_signature(manifest_bytes, signature, load_trusted_keys(key))
            signature_state = f"valid, {signer.key_id} ({signer.origin})"
    except AirlockError as error:
        fail(error)
    from bundle.provenance import counts, named_records, summary

    found = json.loads(review[VULNERABILITIES]) if VULNERABILITIES in review else None
    apis = json.loads(review[API_FINDINGS]) if API_FINDINGS in review else None
    named = named_records(manifest)
    if output == "json":
        document = json.loads(manifest_bytes)
        document["signature"] = signature_state
        if vulnerabilities:
            document = {"signature": signature_state, "vulnerabilities": found}
        else:
            document["provenance_summary"] = counts([record for _, record in named]) if manifest.provenance is not None else None
            document["review"] = {"api_versions": apis, "vulnerabilities": found}
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    if vulnerabilities:
        typer.echo("\n".join(vulnerability_lines(found, full=True)))
        return
    if manifest.provenance is None:
        provenance = "not recorded (built before airlock recorded provenance)"
    else:
        provenance = (
            f"{summary([record for _, record in named])}; required: {manifest.provenance.require}; "
            f"Sigstore trust root sha256 {manifest.provenance.trusted_root_sha256[:16]}… ({manifest.provenance.trusted_root})"
        )
    lines = [
        f"bundle      {bundle} ({human_size(total_size(bundle))})",
        f"name        {manifest.name}  serial {manifest.serial}",
        f"created     {manifest.created:%Y-%m-%d %H:%M:%SZ}  expires {manifest.expires:%Y-%m-%d %H:%M:%SZ}",
        f"kubernetes  {manifest.version} (asked for {manifest.requested})"
        + ("  UNSUPPORTED: built with --allow-unsupported-version" if manifest.unsupported else ""),
        f"platforms   {', '.join(manifest.platforms)}",
        f"signer      {manifest.signer.get('algorithm', '?')} {manifest.signer.get('key_id', '?')}; signature {signature_state}",
        f"base        {'none (full bundle)' if manifest.base is None else f'serial {manifest.base.serial} bundle.json sha256 {manifest.base.sha256}'}",
        "components  " + ", ".join(f"{name} {version}" for name, version in sorted(manifest.components.items())),
        f"provenance  {provenance}",
        "",
        f"images ({len(manifest.images)}):",
    ]
    for image in manifest.images:
        label = image.provenance.label if image.provenance else "-"
        lines.append(f"  {image.reference:<64} {image.digest[:19]}  {','.join(image.platforms):<24} {human_size(image.size):>9}  {label}")
    files = [entry for entry in manifest.files if not entry.path.startswith("images/blobs/")]
    blobs = [entry for entry in manifest.files if entry.path.startswith("images/blobs/")]
    lines += ["", f"files ({len(files)}, plus {len(blobs)} image blobs, {human_size(sum(b.size for b in blobs))}):"]
    for entry in files:
        label = entry.provenance.label if entry.provenance else "written by the build"
        lines.append(f"  {entry.path:<64} {human_size(entry.size):>9}  sha256:{entry.sha256[:12]}  {label}")
    signers: dict[tuple[str, str, str], int] = {}
    for _, record in named:
        if record.kind == "signed":
            who = (record.signer, record.identity, record.issuer)
            signers[who] = signers.get(who, 0) + 1
    if signers:
        lines += ["", "signed by:"]
        for (who, identity, issuer), count in sorted(signers.items()):
            lines.append(f"  {count:>3}  {who}: {identity} (OIDC issuer {issuer})")
    weak = [(name, record) for name, record in named if record.kind == "unpinned"]
    if weak:
        lines += ["", "unpinned (only TLS vouched for these):"] + [f"  {name}: {record.detail}" for name, record in weak]
    lines.append(f"\ntotal       {human_size(manifest.total_size)} in {len(manifest.files)} members")
    if manifest.base is not None:
        carried = [entry for entry in manifest.files if entry.carried]
        lines.append(f"carried     {human_size(manifest.carried_size)} in {len(carried)} members (the rest comes from serial {manifest.base.serial})")
    lines += ["", *api_lines(apis), *vulnerability_lines(found, full=False)]
    typer.echo("\n".join(lines))


def api_lines(apis: Optional[dict]) -> list[str]:
    if apis is None:
        return ["api versions     not recorded (built by an airlock that did not check them)"]
    findings = apis.get("findings") or []
    table = apis.get("table") or {}
    lines = [
        f"api versions     {len(apis.get('manifests') or [])} manifests checked against Kubernetes {apis.get('minor')} "
        f"({table.get('source')}, read {table.get('read')}): {len(findings)} findings"
    ]
    for finding in findings:
        lines.append(
            f"  {finding['level'].upper():<10} {finding['file']} document {finding['document']}: {finding['apiVersion']} {finding['kind']} {finding['name']} "
            f"{finding['detail']}" + (f"; use {finding['replacement']}" if finding.get("replacement") else "")
        )
    return lines


def vulnerability_lines(found: Optional[dict], full: bool) -> list[str]:
    """vulnerabilities.json as lines: a summary, and with `full` every finding; "not scanned" never reads as clean."""
    if found is None:
        return ["vulnerabilities  not recorded (built by an airlock that did not check them): NOT a clean result"]
    if found.get("status") != "scanned":
        return [f"vulnerabilities  NOT SCANNED: {found.get('reason') or 'no reason recorded'}; this is not a clean result"]
    tally = found.get("counts") or {}
    counts = ", ".join(f"{tally[name]} {name.lower()}" for name in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN") if tally.get(name)) or "none known"
    lines = [f"vulnerabilities  {found.get('packages')} package versions checked against OSV at {found.get('source')} on {found.get('checked')}: {counts}"]
    if not full:
        return lines + (["  (airlock inspect --vulnerabilities lists them)"] if found.get("findings") else [])
    for finding in found.get("findings") or []:
        package = finding.get("package") or {}
        score = f"{finding['score']:.1f}" if isinstance(finding.get("score"), (int, float)) else "-"
        fixed = f"fixed in {finding['fixed']}" if finding.get("fixed") else "no fix recorded"
        lines.append(f"  {finding.get('severity', '?'):<8} {score:>4}  {finding.get('id')}  {package.get('name')} {package.get('version')} ({fixed})")
        lines.append(f"           {finding.get('summary', '')}")
        for place in finding.get("where") or []:
            lines.append(f"           in {place}")
    return lines


@dataclass(frozen=True)
class Source:
    """Where init/join/upgrade read the bundle: a file, or `--from` a registry."""

    bundle: Optional[Path]
    url: Optional[str]
    ca: Optional[Path]
    insecure: bool
    tag: Optional[str]
    deadlines: Optional[str] = None

    def check(self) -> None:
        if (self.bundle is None) == (self.url is None):
            usage_error("give either a BUNDLE file or --from https://HOST[:PORT][/PREFIX], not both and not neither")
        if self.url is None and (self.ca or self.insecure or self.tag or self.deadlines):
            usage_error("--ca, --insecure, --tag and --deadlines go with --from")


def comma_list(text: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c"): the names of a comma-separated option, blanks dropped, in the order given."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class InstallOptions:
    """What `init`, `join` or `upgrade` was asked to do: one value, built from the command line once."""

    command: str  # init, join or upgrade
    source: Source
    keys: Optional[tuple[Path, ...]]  # --key; None: the keys this node kept
    root: Path
    dry_run: bool
    skip_phases: tuple[str, ...]
    config: Optional[Path]
    containerd_address: str
    allow_downgrade: bool
    ignore_preflight_errors: tuple[str, ...]
    control_plane: bool = False
    drain: bool = False
    kubeconfig: Optional[Path] = None

    @classmethod
    def from_flags(cls, command: str, source: Source, key: Optional[list[Path]], skip_phases: str, ignore_preflight_errors: str, **flags) -> "InstallOptions":
        return cls(command, source, tuple(key) if key else None, skip_phases=comma_list(skip_phases), ignore_preflight_errors=comma_list(ignore_preflight_errors), **flags)


def _remote(source: Source, config):
    """The registry source for `--from`, and node.yaml with the images pulled from that same registry unless it names another."""
    import dataclasses

    from bundle.netpolicy import Deadlines, PolicyError
    from installer.remote import Origin, RegistrySource

    try:
        deadlines = Deadlines.parse(source.deadlines or "")
    except PolicyError as error:
        usage_error(f"--deadlines: {error}")
    origin = Origin.parse(source.url, source.insecure)
    ca = source.ca or (Path(config.registry_ca) if config.registry_ca else None)
    if not config.registry_mirror and not config.registry_mirrors:
        config = dataclasses.replace(config, registry_mirror=origin.mirror(), registry_ca=str(ca) if ca else "")
    elif ca and not config.registry_ca:
        config = dataclasses.replace(config, registry_ca=str(ca))
    return RegistrySource(origin, ca, source.tag, deadlines), config


def _install(options: InstallOptions) -> None:
    import platform

    from installer.node import Host, NodeConfig, Paths
    from installer.phases import Context
    from installer.phases.preflight import check_name_known, check_names
    from installer.runner import run_phases
    from installer.workflow import phases_for

    os.umask(NODE_UMASK)
    command, source, root = options.command, options.source, options.root
    source.check()
    skip = set(options.skip_phases)
    known_phases = [phase.name for phase in phases_for(command)]
    unknown = sorted(skip - set(known_phases))
    if unknown:
        usage_error(f"--skip-phases: no phase {', '.join(unknown)} in `airlock-node {command}`; its phases: {', '.join(known_phases)}")
    if "verify" in skip:
        usage_error("the verify phase cannot be skipped")
    ignored = options.ignore_preflight_errors
    unknown = [name for name in ignored if not check_name_known(name)]
    if unknown:
        usage_error(f"--ignore-preflight-errors: no check named {', '.join(unknown)}; checks: {', '.join(check_names())} (or all)")
    try:
        paths = Paths(root)
        host = dry_run_host(paths) if options.dry_run else Host(paths)
        machine = platform.machine().lower()
        node_config = NodeConfig.load(options.config)
        remote = None
        if source.url is not None:
            remote, node_config = _remote(source, node_config)
        context = Context(
            command=command,
            bundle=source.bundle,
            remote=remote,
            keys=trusted_keys(list(options.keys) if options.keys else None, root),
            paths=paths,
            host=host,
            config=node_config,
            containerd_address=options.containerd_address,
            allow_downgrade=options.allow_downgrade,
            ignore_preflight=frozenset(ignored),
            control_plane=options.control_plane,
            drain=options.drain,
            kubeconfig=options.kubeconfig,
            start_services=root == Path("/") and not options.dry_run,
            arch={"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
        )
        run_phases(context, phases_for(command), skip)
    except AirlockError as error:
        fail(error)


def dry_run_host(paths):
    """A dry run's plan is its output: every line on stdout, as kubeadm's --dry-run does."""
    from installer.node import DryRunHost

    return DryRunHost(paths, echo=lambda line: print(line, flush=True))


RootOption = Annotated[Path, typer.Option("--root", help="Write everything under this directory instead of / (services enabled, not started).")]
# Commands on a node that is already installed: --root names where it was installed.
NodeRootOption = Annotated[Path, typer.Option("--root", help="The node installed under this directory instead of / (one installed with --root).")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show every file it would write and every command it would run.")]
SkipOption = Annotated[str, typer.Option("--skip-phases", help="Comma-separated phases to skip (see `airlock-node phases`).")]
NodeConfigOption = Annotated[Optional[Path], typer.Option("--config", help="node.yaml: addresses, subnets, registry, kubelet overrides.")]
ContainerdOption = Annotated[str, typer.Option("--containerd-address", help="containerd socket the images phase loads into.")]
DowngradeOption = Annotated[bool, typer.Option("--allow-downgrade", help="Accept a bundle with a lower serial than the installed one.")]
IgnoreOption = Annotated[str, typer.Option("--ignore-preflight-errors", help="Comma-separated preflight checks to treat as warnings, or all.")]
BundleArgument = Annotated[Optional[Path], typer.Argument(help="The bundle file (or use --from).")]
FromOption = Annotated[
    Optional[str],
    typer.Option("--from", help="Install from the bundle artifact in a registry, the first node's or the site's: https://HOST:PORT/PREFIX (port and prefix optional)."),
]
CaOption = Annotated[Optional[Path], typer.Option("--ca", help="CA certificate (PEM) the --from registry's certificate must chain to (default: node.yaml registry.ca).")]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="Allow --from http:// (plain HTTP; the bundle is still verified).")]
TagOption = Annotated[Optional[str], typer.Option("--tag", help="With --from: the bundle's NAME-SERIAL tag (default: the highest serial).")]
DeadlinesOption = Annotated[
    Optional[str],
    typer.Option("--deadlines", help="With --from: how long one socket read, one member and the whole transfer may take (default read=30s,member=15m,run=4h)."),
]


@app.command()
def init(
    bundle: BundleArgument = None,
    key: KeyOption = None,
    from_: FromOption = None,
    ca: CaOption = None,
    insecure: InsecureOption = False,
    tag: TagOption = None,
    deadlines: DeadlinesOption = None,
    root: RootOption = Path("/"),
    dry_run: DryRunOption = False,
    skip_phases: SkipOption = "",
    config: NodeConfigOption = None,
    containerd_address: ContainerdOption = "/run/containerd/containerd.sock",
    allow_downgrade: DowngradeOption = False,
    ignore_preflight_errors: IgnoreOption = "",
) -> None:
    """Install the first control-plane node from a bundle, offline.

    Verifies the bundle, unpacks it, installs binaries, configures containerd to
    pull only from the node registry, loads every image, then runs kubeadm's
    init phases with the bundle's exact version. Rerun after a failure to resume.
    With --from, the bundle comes from a registry (the site's) and so do the images.
    The first install keeps the --key keys in /etc/airlock/trusted-keys: later commands need none.

    Example: python3 airlock-node.pyz init k8s.tar --key airlock.pub --config node.yaml
    """
    _install(InstallOptions.from_flags("init", Source(bundle, from_, ca, insecure, tag, deadlines), key, skip_phases, ignore_preflight_errors, root=root, dry_run=dry_run, config=config, containerd_address=containerd_address, allow_downgrade=allow_downgrade))


@app.command()
def join(
    bundle: BundleArgument = None,
    key: KeyOption = None,
    from_: FromOption = None,
    ca: CaOption = None,
    insecure: InsecureOption = False,
    tag: TagOption = None,
    deadlines: DeadlinesOption = None,
    control_plane: Annotated[bool, typer.Option("--control-plane", help="Join as an extra control-plane node.")] = False,
    root: RootOption = Path("/"),
    dry_run: DryRunOption = False,
    skip_phases: SkipOption = "",
    config: NodeConfigOption = None,
    containerd_address: ContainerdOption = "/run/containerd/containerd.sock",
    allow_downgrade: DowngradeOption = False,
    ignore_preflight_errors: IgnoreOption = "",
) -> None:
    """Join a worker (or, with --control-plane, another control-plane node) to a cluster, offline.

    node.yaml gives controlPlaneEndpoint, token and caCertHashes (`airlock-node token create` on a control
    plane prints them); registry.mirror may point at the first control plane's registry instead of this
    node's own. With --from, the bundle comes from a registry (no file on this node) and so do the images.

    Example: python3 airlock-node.pyz join k8s.tar --key airlock.pub --config node.yaml
    """
    _install(
        InstallOptions.from_flags(
            "join", Source(bundle, from_, ca, insecure, tag, deadlines), key, skip_phases, ignore_preflight_errors, root=root, dry_run=dry_run, config=config, containerd_address=containerd_address, allow_downgrade=allow_downgrade, control_plane=control_plane
        )
    )


@app.command()
def upgrade(
    bundle: Annotated[Optional[Path], typer.Argument(help="A full or delta bundle newer than the installed one (or use --from).")] = None,
    key: KeyOption = None,
    from_: FromOption = None,
    ca: CaOption = None,
    insecure: InsecureOption = False,
    tag: TagOption = None,
    deadlines: DeadlinesOption = None,
    drain: Annotated[bool, typer.Option("--drain", help="Cordon and drain this node around the upgrade, uncordon after.")] = False,
    kubeconfig: Annotated[
        Optional[Path],
        typer.Option("--kubeconfig", help="Admin kubeconfig for --drain (required off the control plane; a control plane uses its admin.conf)."),
    ] = None,
    root: RootOption = Path("/"),
    dry_run: DryRunOption = False,
    skip_phases: SkipOption = "",
    config: NodeConfigOption = None,
    containerd_address: ContainerdOption = "/run/containerd/containerd.sock",
    allow_downgrade: DowngradeOption = False,
    ignore_preflight_errors: IgnoreOption = "",
) -> None:
    """Upgrade this node offline: new images first, then kubeadm upgrade with the exact version, then kubelet.

    A delta bundle is accepted only on the bundle it was built against. The control plane moves
    one minor at a time and never down; a node's kubelet never gets ahead of the API server.
    Journaled: rerun to resume after a failure. The bundle already installed: nothing to do (exit 0).

    Example: airlock-node upgrade k8s-1.36.5.tar --drain
    """
    _install(
        InstallOptions.from_flags(
            "upgrade", Source(bundle, from_, ca, insecure, tag, deadlines), key, skip_phases, ignore_preflight_errors, root=root, dry_run=dry_run, config=config, containerd_address=containerd_address, allow_downgrade=allow_downgrade, drain=drain, kubeconfig=kubeconfig
        )
    )


@app.command()
def phases() -> None:
    """List the phases of init, join and upgrade, each in the order it runs them.

    Example: airlock-node phases
    """
    from installer.workflow import phases_for

    for command in ("init", "join", "upgrade"):
        listed = phases_for(command)
        typer.echo(f"{command}: {' -> '.join(phase.name for phase in listed)}")
        for phase in listed:
            typer.echo(f"  {phase.name:<16} {phase.description}")
            for step in phase.steps:
                typer.echo(f"    {step}")
        if command != "upgrade":
            typer.echo("")


@app.command()
def reset(
    root: NodeRootOption = Path("/"),
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the image store and installed bundle records.")] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Undo what init, join and upgrade installed: kubeadm reset, then every file airlock made is removed and every file
    it replaced (an operator's containerd config.toml) put back. The image store and trusted keys stay unless --purge.

    Example: airlock-node reset
    """
    from installer.node import Host, Paths
    from installer.reset import reset_node

    os.umask(NODE_UMASK)
    paths = Paths(root)
    try:
        reset_node(paths, dry_run_host(paths) if dry_run else Host(paths), purge, start_services=root == Path("/") and not dry_run)
    except AirlockError as error:
        fail(error)


@app.command()
def status(
    output: Annotated[str, typer.Option("--output", help="text or json.")] = "text",
    root: NodeRootOption = Path("/"),
    containerd_address: Annotated[str, typer.Option("--containerd-address", help="containerd socket to ask which images it holds.")] = "/run/containerd/containerd.sock",
) -> None:
    """Show what this node runs and whether it is in order: the installed bundle (name, serial, version, signer, expiry),
    a run in progress, the registry's health, the bundle's images in containerd (pinned), and whether it is a control plane.

    Reads only; changes nothing. Exit 0 when it could read the node, whatever it found.

    Example: airlock-node status --output json
    """
    from installer.node import Paths
    from installer.status import ctr_command, gather, render, to_json

    if output not in ("text", "json"):
        usage_error(f"--output {output!r}: choose text or json")
    paths = Paths(root)
    try:
        found = gather(paths, ctr_command(containerd_address))
    except AirlockError as error:
        fail(error)
    typer.echo(to_json(found) if output == "json" else render(found, paths))


token_app = typer.Typer(help="Bootstrap tokens: a fresh way in for another node.", no_args_is_help=True, **PLAIN)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    control_plane: Annotated[
        bool, typer.Option("--control-plane", help="Also upload the control-plane certificates again and print the certificate key a joining control plane needs.")
    ] = False,
    root: NodeRootOption = Path("/"),
) -> None:
    """Print what a node needs to join this cluster now: a new bootstrap token (valid 24 h), the CA hash and the endpoint,
    as node.yaml fields and as kubeadm's own join command. Run it on a control plane.

    With --control-plane (on the first control plane) the certificates are uploaded again under a fresh
    certificate key (valid 2 h), which is printed as certificateKey.

    Example: airlock-node token create --control-plane
    """
    from installer.jointoken import create
    from installer.node import Host, Paths

    os.umask(NODE_UMASK)
    paths = Paths(root)
    try:
        join = create(paths, Host(paths), control_plane)
    except AirlockError as error:
        fail(error)
    typer.echo("# node.yaml of the joining node (add its nodeName and anything else it needs):")
    typer.echo(join.node_yaml(), nl=False)
    typer.echo(f"# then on that node: airlock-node join k8s.tar --key airlock.pub --config node.yaml{' --control-plane' if control_plane else ''}")
    typer.echo(f"# the token is valid for 24 h{'; the certificate key for 2 h' if control_plane else ''}. kubeadm's own form:")
    typer.echo(f"# {join.kubeadm()}")


trust_app = typer.Typer(help="The keys this node trusts (/etc/airlock/trusted-keys), so commands here need no --key.", no_args_is_help=True, **PLAIN)
app.add_typer(trust_app, name="trust")


@trust_app.command("list")
def trust_list(root: NodeRootOption = Path("/")) -> None:
    """List the trusted keys: fingerprint, algorithm and file.

    Example: airlock-node trust list
    """
    from installer.trusted import TRUSTED_KEYS, kept_keys

    try:
        keys = kept_keys(root)
    except AirlockError as error:
        fail(error)
    if not keys:
        typer.echo(f"no trusted keys in {TRUSTED_KEYS}; the first install with --key keeps its keys there", err=True)
    for key in keys:
        typer.echo(f"{key.key_id}  {key.algorithm:<10}  {key.origin}")


@trust_app.command("add")
def trust_add(
    key: Annotated[list[Path], typer.Argument(help="Public key file(s) (PEM), e.g. a new signing key's airlock.pub.")],
    root: NodeRootOption = Path("/"),
) -> None:
    """Trust another key (e.g. before bundles signed by a new key arrive). Compare its fingerprint with the signer's first.

    Example: airlock-node trust add airlock-2027.pub
    """
    from bundle.trust import load_trusted_keys
    from installer.trusted import TRUSTED_KEYS, keep

    os.umask(NODE_UMASK)
    try:
        given = load_trusted_keys(key)
        added = keep(root, given)
    except AirlockError as error:
        fail(error)
    for item in given:
        typer.echo(f"{'now trusting' if item in added else 'already trusted'} {item.key_id} ({item.origin}) in {TRUSTED_KEYS}")


@trust_app.command("remove")
def trust_remove(
    fingerprint: Annotated[str, typer.Argument(help="The key's fingerprint, sha256:HEX as `trust list` shows it (a unique prefix of 8 digits or more will do).")],
    root: NodeRootOption = Path("/"),
) -> None:
    """Stop trusting a key (e.g. the old one, once every node runs a bundle signed by the new one).

    Example: airlock-node trust remove sha256:3f9a0c12
    """
    from installer.trusted import kept_keys, remove

    try:
        removed = remove(root, fingerprint)
        left = kept_keys(root)
    except AirlockError as error:
        fail(error)
    typer.echo(f"no longer trusting {removed.key_id} ({removed.algorithm})")
    if not left:
        typer.echo("no trusted key is left: the next install here needs --key", err=True)


store_app = typer.Typer(help="The node's content store under /var/lib/airlock/store.", no_args_is_help=True, **PLAIN)
app.add_typer(store_app, name="store")


@store_app.command("check")
def store_check(root: NodeRootOption = Path("/")) -> None:
    """Re-hash every blob of the store; exit 1 naming each one that is corrupt.

    Example: airlock-node store check
    """
    from installer.node import Paths
    from installer.storecare import check_store

    paths = Paths(root)
    try:
        checked, corrupt = check_store(paths.store)
    except AirlockError as error:
        fail(error)
    for name in corrupt:
        typer.echo(f"corrupt: {name}", err=True)
    typer.echo(f"{checked} blobs checked, {len(corrupt)} corrupt")
    if corrupt:
        raise typer.Exit(1)


@store_app.command("prune")
def store_prune(
    root: NodeRootOption = Path("/"),
    dry_run: DryRunOption = False,
) -> None:
    """Drop images and blobs that the installed bundle no longer references (after an upgrade).

    Example: airlock-node store prune --dry-run
    """
    from installer.node import Paths
    from installer.storecare import prune_store

    os.umask(NODE_UMASK)
    try:
        removed, freed = prune_store(Paths(root), dry_run)
    except AirlockError as error:
        fail(error)
    typer.echo(f"{'would remove' if dry_run else 'removed'} {removed} blobs, {human_size(freed)}")


registry_app = typer.Typer(help="The node's read-only image registry, served from an unpacked store.", no_args_is_help=True, **PLAIN)
app.add_typer(registry_app, name="registry")


@registry_app.command("serve")
def registry_serve(
    store: Annotated[Path, typer.Option("--store", help="Unpacked image store (an OCI layout).")] = Path(
        "/var/lib/airlock/store"
    ),
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = "127.0.0.1:5000",
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="Serving certificate (PEM), e.g. from `airlock-node registry cert`.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="Its private key (PEM).")] = None,
    tls_credentials: Annotated[
        bool, typer.Option("--tls-credentials", help="Read tls.crt and tls.key from systemd's $CREDENTIALS_DIRECTORY (LoadCredential=).")
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="One line per request on stderr.")] = True,
    max_connections: Annotated[int, typer.Option("--max-connections", help="Open connections; past it the longest-waiting one is closed.")] = 4096,
    header_timeout: Annotated[float, typer.Option("--header-timeout", help="Seconds from a request's first byte (or the connect) to its last header.")] = 10.0,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="Seconds a kept-alive connection may wait for its next request.")] = 30.0,
    workers: Annotated[int, typer.Option("--workers", help="Server processes on the one socket; 0: one per CPU, at most 4.")] = 0,
) -> None:
    """Serve the store read-only over the OCI distribution API until SIGTERM.

    containerd reaches it as a mirror (`/v2/{repo}/...?ns={host}`); other clients
    can name images in full (`/v2/registry.k8s.io/pause/manifests/3.10`).

    Example: airlock-node registry serve --store /var/lib/airlock/store --listen 0.0.0.0:5000
    """
    from installer.registry.api import RegistryError
    from installer.registry.connections import Limits
    from installer.registry.serving import credential_paths, make_server, serve_until_stopped

    os.umask(NODE_UMASK)
    if max_connections < 16 or header_timeout <= 0 or idle_timeout <= 0 or not 0 <= workers <= 64:
        usage_error("--max-connections is at least 16, --header-timeout and --idle-timeout above 0 s, --workers 0 (one per CPU) to 64")
    limits = Limits(max_connections=max_connections, header_timeout=header_timeout, handshake_timeout=header_timeout, idle_timeout=idle_timeout)
    try:
        if tls_credentials:
            if tls_cert or tls_key:
                raise RegistryError("--tls-credentials replaces --tls-cert/--tls-key; give one or the other")
            tls_cert, tls_key = credential_paths()
        server = make_server(store, listen, tls_cert, tls_key, sys.stderr if access_log else None, limits)
    except AirlockError as error:
        fail(error)
    host, port = server.server_address[:2]
    typer.echo(f"serving {store} read-only on {'https' if tls_cert else 'http'}://{host}:{port}", err=True)
    serve_until_stopped(server, workers or min(4, os.cpu_count() or 1))
    typer.echo("stopped", err=True)


@registry_app.command("cert")
def registry_cert(
    ca_out: Annotated[Path, typer.Option("--ca-out", help="Directory for ca.crt/ca.key (reused if present) and registry.crt/registry.key.")],
    name: Annotated[list[str], typer.Option("--name", help="A host name or IP address the registry answers on (repeatable).")],
    days: Annotated[int, typer.Option("--days", help="Validity of the serving certificate.")] = 825,
) -> None:
    """Make (or reuse) a small CA and issue a serving certificate for the node's names and addresses.

    Example: airlock-node registry cert --ca-out /etc/airlock/pki --name cp1.corp.example --name 10.0.0.10
    """
    from installer.certs import issue

    os.umask(NODE_UMASK)  # keys are written 0600 explicitly; the certificates are for others to read
    try:
        ca, cert, key = issue(ca_out, name, days)
    except AirlockError as error:
        fail(error)
    typer.echo(f"wrote {cert} and {key} (0600), signed by {ca}; other nodes trust it with ca = \"{ca}\" in hosts.toml")


def main() -> None:
    keep_freed_memory()
    app(prog_name="airlock-node")
