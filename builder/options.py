"""The build options, listed once: `airlock build`'s flags, the keys of `--config build.yaml`, and what `build()` reads.

Each field of `BuildOptions` carries its flag (name, help, shown default, command-line type); the CLI
generates `airlock build`'s parameters from these fields and `--config` accepts exactly their names.
`BuildOptions.parse` turns the merged raw values (flags over build.yaml) into typed values, refusing
what no build could use as a usage error (exit 2) before anything is read or fetched.

Imported when `airlock` starts: nothing heavy (requests, oras) at module level.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from builder import artifacts
from builder.errors import BuildError, ResolveError, UsageError
from builder.resolve import ACCEPTED, VersionRequest

CNI_CHOICES = ("flannel", "none")
OSV_URL = "https://api.osv.dev"
# Fields that name a file or directory: build.yaml gives them as strings.
PATH_FIELDS = ("output", "sign_key", "images_file", "cache_dir", "base", "node_pyz", "trusted_root")


@dataclass(frozen=True)
class Flag:
    """How one option is given on the command line (`--config` keys are the flag names without the dashes)."""

    name: str
    help: str
    show_default: str | bool = True
    cli: object = str  # what typer parses the flag into: str, int, bool, Path, list[str], list[Path]
    short: str | None = None

    @property
    def key(self) -> str:
        return self.name.removeprefix("--")


def option(flag: Flag, default=dataclasses.MISSING, factory=dataclasses.MISSING):
    return field(default=default, default_factory=factory, metadata={"flag": flag})


@dataclass(frozen=True)
class BuildOptions:
    output: Path = option(Flag("--output", "Bundle file to write (.tar).", cli=Path, short="-o"))
    kubernetes_version: VersionRequest = option(Flag("--kubernetes-version", "stable, stable-1, stable-1.36, latest, latest-1.36, v1.36.4 or 1.36.4."))
    sign_key: Path = option(Flag("--sign-key", "Private key from `airlock keygen`.", cli=Path))
    arches: tuple[str, ...] = option(Flag("--arch", "Comma-separated: amd64,arm64 (linux only).", "amd64"), ("amd64",))
    cni: str = option(Flag("--cni", "flannel or none.", "flannel"), "flannel")
    images: tuple[str, ...] = option(Flag("--image", "Extra image to carry (repeatable).", cli=list[str]), ())
    images_file: Path | None = option(Flag("--images-file", "File with one extra image per line (# comments).", cli=Path), None)
    release_url: str = option(Flag("--release-url", "Kubernetes release server (or its internal mirror).", "https://dl.k8s.io"), "https://dl.k8s.io")
    github_url: str = option(Flag("--github-url", "GitHub release downloads (or their internal mirror).", "https://github.com"), "https://github.com")
    registry_mirrors: dict[str, str] = option(
        Flag("--registry-mirror", "HOST=URL: fetch HOST's images from URL (repeatable).", cli=list[str]), factory=dict
    )
    cache_dir: Path | None = option(Flag("--cache-dir", "Download cache.", "$XDG_CACHE_HOME/airlock", cli=Path), None)
    concurrency: int = option(Flag("--concurrency", "Parallel transfers.", "8", cli=int), 8)
    cni_version: str = option(Flag("--cni-version", "CNI plugins version.", artifacts.DEFAULT_CNI_VERSION), artifacts.DEFAULT_CNI_VERSION)
    crictl_version: str | None = option(Flag("--crictl-version", "crictl version.", "the one for the Kubernetes minor"), None)
    containerd_version: str = option(
        Flag(
            "--containerd-version",
            "containerd release: 2.3, 2.2, 2.1, 2.0 or 1.7 (newest patch), or an exact one.",
            artifacts.DEFAULT_CONTAINERD_VERSION,
        ),
        artifacts.DEFAULT_CONTAINERD_VERSION,
    )
    # None: the runc that containerd release pairs with (artifacts.CONTAINERD_RELEASES)
    runc_version: str | None = option(Flag("--runc-version", "runc version.", "the one that containerd release pairs with"), None)
    flannel_version: str = option(Flag("--flannel-version", "flannel version.", artifacts.DEFAULT_FLANNEL_VERSION), artifacts.DEFAULT_FLANNEL_VERSION)
    flannel_sha256: str | None = option(
        Flag("--flannel-sha256", "sha256 of kube-flannel.yml (flannel publishes none); without it (and no pin in airlock) the file is recorded unpinned."),
        None,
    )
    name: str = option(Flag("--name", "Bundle name recorded in bundle.json.", "airlock"), "airlock")
    serial: int | None = option(Flag("--serial", "Bundle serial (increasing; a delta's at least its base's + 1).", "build time in seconds", cli=int), None)
    expires_days: int = option(Flag("--expires-days", "Nodes refuse the bundle after this many days.", "365", cli=int), 365)
    base: Path | None = option(Flag("--base", "Build a delta on this earlier bundle (or its bundle.json): carry only what it lacks.", cli=Path), None)
    node_pyz: Path | None = option(
        Flag("--node-pyz", "The node installer to carry (make dist builds it).", "$AIRLOCK_NODE_PYZ, else dist/airlock-node-VERSION.pyz", cli=Path), None
    )
    split: int | None = option(  # bytes per part (builder.split.parse_size), or one file
        Flag("--split", "Write numbered parts of at most SIZE (3900M, 4G, fat32, dvd, bd25) and a signed parts list.", "one file"), None
    )
    sidecars: bool = option(
        Flag("--sidecars", "Also write SHA256SUMS(.sig), sbom.spdx.json, vulnerabilities.json, report.html and MANIFEST.txt beside the bundle.", "False", cli=bool),
        False,
    )
    image_list_from_table: bool = option(
        Flag(
            "--image-list-from-table",
            "Take the control-plane images from a built-in per-minor table instead of asking kubeadm (not exact: etcd changes within a minor).",
            "False",
            cli=bool,
        ),
        False,
    )
    # Extra YAML the node applies after init.
    manifests: tuple[Path, ...] = option(
        Flag(
            "--manifest",
            "Extra Kubernetes YAML the node applies after init, after the CNI (repeatable; checked against the API versions of the target minor).",
            cli=list[Path],
        ),
        (),
    )
    osv_url: str | None = option(  # None: do not ask (--osv-url none)
        Flag("--osv-url", "OSV API to check the packages found against (an internal mirror), or none.", OSV_URL), OSV_URL
    )
    fail_on: str | None = option(  # refuse a bundle with a known vulnerability at or above this severity
        Flag("--fail-on", "Refuse the bundle when a known vulnerability is at or above low, medium, high or critical.", "report only"), None
    )
    no_scan: bool = option(  # the SBOM lists files and images only
        Flag("--no-scan", "Do not read what is inside binaries and image layers: the SBOM then lists files and images only.", "False", cli=bool), False
    )
    require: str = option(
        Flag(
            "--require",
            "Refuse to build when any file or image has less than this: signed (a verified upstream signature), "
            "pinned (a pin, a published checksum or a signature: nothing unpinned) or any.",
            "any",
        ),
        "any",
    )
    trusted_root: Path | None = option(
        Flag(
            "--trusted-root",
            "Sigstore trusted_root.json to verify upstream signatures against (a newer public one, or a private Sigstore's).",
            "the one shipped with airlock",
            cli=Path,
        ),
        None,
    )
    allow_unsupported_version: bool = option(
        Flag(
            "--allow-unsupported-version",
            "Build a Kubernetes minor outside the supported range (labs only; recorded in bundle.json and shown by inspect).",
            "False",
            cli=bool,
        ),
        False,
    )

    @classmethod
    def parse(cls, values: dict) -> BuildOptions:
        """Typed options from raw values by field name (flags over build.yaml); UsageError for what no build could use."""
        values = dict(values)
        missing = [f"--{FLAGS[name].key}" for name in ("output", "kubernetes_version", "sign_key") if not values.get(name)]
        if missing:
            raise UsageError(f"build needs {', '.join(missing)} (as flags or in --config)")
        values["kubernetes_version"] = _version_request(values["kubernetes_version"], values.get("allow_unsupported_version"))
        if "arches" in values:
            values["arches"] = tuple(_as_list(values["arches"]))
        arches = values.get("arches", ("amd64",))
        unknown = [arch for arch in arches if arch not in artifacts.ARCHES]
        if unknown or not arches:
            raise UsageError(f"--arch {','.join(unknown) or repr('')}: choose from {', '.join(artifacts.ARCHES)} (linux only; comma-separated for several)")
        if values.get("cni", "flannel") not in CNI_CHOICES:
            raise UsageError(f"--cni {values['cni']!r}: choose from {', '.join(CNI_CHOICES)}")
        if "containerd_version" in values:
            from bundle.containerd import ContainerdVersionError

            try:
                artifacts.containerd_release(str(values["containerd_version"]))
            except ContainerdVersionError as error:
                raise UsageError(str(error)) from None
        from bundle.provenance import REQUIRE_LEVELS

        if values.get("require", "any") not in REQUIRE_LEVELS:
            raise UsageError(f"--require {values['require']!r}: choose from {', '.join(REQUIRE_LEVELS)}")
        if "images" in values:
            values["images"] = tuple(_as_list(values["images"]) if isinstance(values["images"], str) else values["images"])
        if "registry_mirrors" in values:
            from builder.images import parse_mirrors

            raw = values["registry_mirrors"]
            values["registry_mirrors"] = parse_mirrors([f"{k}={v}" for k, v in raw.items()] if isinstance(raw, dict) else _as_list(raw))
        for name in PATH_FIELDS:
            if values.get(name) is not None:
                values[name] = Path(values[name])
        if values.get("osv_url") == "none":
            values["osv_url"] = None
        if values.get("fail_on") is not None:
            values["fail_on"] = str(values["fail_on"]).lower()
            if values["fail_on"] not in ("low", "medium", "high", "critical"):
                raise UsageError(f"--fail-on {values['fail_on']!r}: choose low, medium, high or critical")
        if "manifests" in values:
            raw = values["manifests"]
            values["manifests"] = tuple(Path(item) for item in ([raw] if isinstance(raw, str) else raw))
        if values.get("split") is not None:
            from builder.split import parse_size

            values["split"] = parse_size(values["split"])
        return cls(**values)

    def checked(self) -> BuildOptions:
        """These options with the containerd release and the node installer found; BuildError before anything is downloaded."""
        from builder.osv import FAIL_ON_CHOICES
        from bundle.provenance import REQUIRE_LEVELS
        from bundle.reference import ImageRef

        if not isinstance(self.kubernetes_version, VersionRequest):
            raise BuildError(f"--kubernetes-version {self.kubernetes_version!r}: parse it with VersionRequest.parse")
        if not self.arches or any(arch not in artifacts.ARCHES for arch in self.arches):
            raise BuildError(f"--arch {','.join(self.arches)}: choose from {','.join(artifacts.ARCHES)} (linux only)")
        if self.cni not in CNI_CHOICES:
            raise BuildError(f"--cni {self.cni!r}: choose flannel or none")
        if not 1 <= self.concurrency <= 64:
            raise BuildError("--concurrency must be between 1 and 64")
        if self.expires_days < 1:
            raise BuildError("--expires-days must be at least 1")
        for url in (self.release_url, self.github_url, *([self.osv_url] if self.osv_url else [])):
            if not url.startswith(("http://", "https://")):
                raise BuildError(f"{url!r} is not an http(s) URL")
        if self.fail_on is not None and self.fail_on not in FAIL_ON_CHOICES:
            raise BuildError(f"--fail-on {self.fail_on!r}: choose {', '.join(FAIL_ON_CHOICES)}")
        for text in self.images:
            ImageRef.parse(text)
        if self.flannel_sha256 is not None and not artifacts.is_hex64(self.flannel_sha256):
            raise BuildError(f"--flannel-sha256 {self.flannel_sha256!r}: give the 64 lowercase hex digits of kube-flannel.yml's sha256")
        if self.require not in REQUIRE_LEVELS:
            raise BuildError(f"--require {self.require!r}: choose {', '.join(REQUIRE_LEVELS)}")
        return dataclasses.replace(
            self, containerd_version=artifacts.containerd_release(str(self.containerd_version)), node_pyz=node_pyz_path(self.node_pyz)
        )


# Field name -> its flag, in the order `airlock build --help` lists them.
FLAGS: dict[str, Flag] = {item.name: item.metadata["flag"] for item in dataclasses.fields(BuildOptions)}
# `--config build.yaml` key -> field name.
CONFIG_KEYS: dict[str, str] = {flag.key: name for name, flag in FLAGS.items()}


def _version_request(text, allow_unsupported) -> VersionRequest:
    from builder.versions import SUPPORTED_MINORS, SUPPORTED_RANGE

    try:
        request = VersionRequest.parse(text)
    except ResolveError:
        raise UsageError(f"--kubernetes-version {text!r} is not a version or label; use {ACCEPTED}") from None
    if request.minor is not None and request.minor not in SUPPORTED_MINORS and not allow_unsupported:
        raise UsageError(
            f"--kubernetes-version {text}: Kubernetes 1.{request.minor} is not supported (airlock builds {SUPPORTED_RANGE}, "
            "the minors supported upstream); pick a supported version, or pass --allow-unsupported-version for a lab"
        )
    return request


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def node_pyz_path(given: Path | None) -> Path:
    """The node installer to carry: --node-pyz, else $AIRLOCK_NODE_PYZ, else what `make dist` wrote in this checkout."""
    import os

    from builder.zipapp import default_output

    path = given or (Path(os.environ["AIRLOCK_NODE_PYZ"]) if os.environ.get("AIRLOCK_NODE_PYZ") else default_output())
    if not path.is_file():
        raise BuildError(f"no node installer at {path}: run `make dist` in the airlock checkout, or pass --node-pyz FILE")
    return path
