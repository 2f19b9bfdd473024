"""What to download for a bundle: the upstream layout of DESIGN.md as data.

Pure decisions, no I/O: `plan_artifacts` turns versions and architectures
into a list of `Artifact`s, each saying where it comes from, how its
checksum is published, and where it lands in the bundle. Archives are kept
exactly as published, so each member's sha256 equals the upstream checksum.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundle.containerd import SUPPORTED, ContainerdVersionError, minor_of
from bundle.signer import Expected

ARCHES = ("amd64", "arm64")
# containerd's own pairings, read at each release tag (containerd/containerd): the runc its CI installs
# (script/setup/runc-version) and the CNI plugins it builds against (containernetworking/plugins in go.mod,
# which script/setup/install-cni installs). containerd minor -> (newest patch, runc).
#   v2.3.4 db8809540e1a: runc v1.4.3, plugins v1.9.1   v2.2.7 7835c8dfefce: runc v1.3.6, plugins v1.9.0
#   v2.1.9 926009266892: runc v1.3.6, plugins v1.9.0   v2.0.11 ea0b49555e46: runc v1.3.6, plugins v1.5.1
#   v1.7.34 fb9028b920d2: runc v1.3.6, plugins v1.9.0 (script/setup/cni-plugins-version)
CONTAINERD_RELEASES = {
    (2, 3): ("2.3.4", "v1.4.3"),
    (2, 2): ("2.2.7", "v1.3.6"),
    (2, 1): ("2.1.9", "v1.3.6"),
    (2, 0): ("2.0.11", "v1.3.6"),
    (1, 7): ("1.7.34", "v1.3.6"),
}
DEFAULT_CONTAINERD_VERSION = CONTAINERD_RELEASES[(2, 3)][0]  # 2.3: containerd's LTS release (supported to 2028-04)
DEFAULT_RUNC_VERSION = CONTAINERD_RELEASES[(2, 3)][1]
DEFAULT_CNI_VERSION = "v1.9.1"
DEFAULT_FLANNEL_VERSION = "v0.25.7"
# flannel publishes kube-flannel.yml with no checksum beside it, so its sha256 is pinned here, by version, from a
# copy someone checked; a version missing here is pinned by --flannel-sha256, or recorded `unpinned` (TLS only).
# Add a line only for a file you verified.
FLANNEL_SHA256: dict[str, str] = {}
# Who signs what, as Kubernetes documents it ("Verify Signed Kubernetes Artifacts"): release binaries are signed
# keyless by krel-staging, images on registry.k8s.io by krel-trust, both through Google's OIDC issuer.
KUBERNETES_RELEASE = "Kubernetes release engineering"
KUBERNETES_BINARIES = Expected("krel-staging@k8s-releng-prod.iam.gserviceaccount.com", "https://accounts.google.com", KUBERNETES_RELEASE)
KUBERNETES_IMAGES = Expected("krel-trust@k8s-releng-prod.iam.gserviceaccount.com", "https://accounts.google.com", KUBERNETES_RELEASE)
IMAGE_SIGNERS = {"registry.k8s.io": KUBERNETES_IMAGES}


def default_crictl_version(minor: int) -> str:
    """crictl follows Kubernetes minors (builder/versions.py); a minor outside the table takes the nearest one."""
    from builder.versions import CRICTL_BY_MINOR

    if minor in CRICTL_BY_MINOR:
        return CRICTL_BY_MINOR[minor]
    return CRICTL_BY_MINOR[max(CRICTL_BY_MINOR)] if minor > max(CRICTL_BY_MINOR) else CRICTL_BY_MINOR[min(CRICTL_BY_MINOR)]


def containerd_release(requested: str) -> str:
    """An exact containerd release for `--containerd-version`: `2.1` is its newest patch, `v2.1.5` is `2.1.5`.

    Raises ContainerdVersionError naming the supported minors for anything else.
    """
    text = requested.strip().lstrip("v")
    parts = text.split(".")
    if len(parts) in (2, 3) and all(part.isdigit() for part in parts):
        minor = (int(parts[0]), int(parts[1]))
        if minor in CONTAINERD_RELEASES:
            return CONTAINERD_RELEASES[minor][0] if len(parts) == 2 else text
    raise ContainerdVersionError(
        f"--containerd-version {requested!r}: airlock supports containerd {', '.join(SUPPORTED)} "
        f"(MAJOR.MINOR for the newest patch, or MAJOR.MINOR.PATCH; default {DEFAULT_CONTAINERD_VERSION})"
    )


def default_runc_version(containerd: str) -> str:
    """The runc containerd's release at that minor is tested with."""
    return CONTAINERD_RELEASES.get(minor_of(containerd), CONTAINERD_RELEASES[(2, 3)])[1]


@dataclass(frozen=True)
class Checksum:
    """Where the upstream publishes the checksum: a file beside it (bare hex,
    or `hex  name` lines), or nowhere (then the bytes are pinned by the bundle)."""

    url: str | None
    name: str | None = None  # the file name to pick from a multi-line checksum file
    pinned: str | None = None  # a sha256 known in advance (upstream publishes none): the download must match it
    pinned_by: str = ""  # who fixed `pinned`, in words for bundle.json's provenance


@dataclass(frozen=True)
class Artifact:
    component: str
    version: str
    arch: str | None
    url: str
    checksum: Checksum
    member: str
    mode: int
    signer: Expected | None = None  # a keyless signature (`.sig`/`.cert` beside the file) is looked for and must be this signer's


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    cni: str
    crictl: str
    containerd: str
    runc: str
    flannel: str | None
    flannel_sha256: str | None = None


def plan_artifacts(release_url: str, github_url: str, versions: Versions, arches: list[str]) -> list[Artifact]:
    release = release_url.rstrip("/")
    github = github_url.rstrip("/")
    k8s, cni, crictl, containerd, runc = versions.kubernetes, versions.cni, versions.crictl, versions.containerd, versions.runc
    containerd_bare = containerd.lstrip("v")
    plan: list[Artifact] = []
    for arch in arches:
        bin_dir = f"bin/linux-{arch}"
        for name in ("kubeadm", "kubelet", "kubectl"):
            url = f"{release}/release/{k8s}/bin/linux/{arch}/{name}"
            plan.append(Artifact(name, k8s, arch, url, Checksum(url + ".sha256"), f"{bin_dir}/{name}", 0o755, KUBERNETES_BINARIES))
        cni_file = f"cni-plugins-linux-{arch}-{cni}.tgz"
        url = f"{github}/containernetworking/plugins/releases/download/{cni}/{cni_file}"
        plan.append(Artifact("cni", cni, arch, url, Checksum(url + ".sha256", cni_file), f"cni/linux-{arch}/{cni_file}", 0o644))
        crictl_file = f"crictl-{crictl}-linux-{arch}.tar.gz"
        url = f"{github}/kubernetes-sigs/cri-tools/releases/download/{crictl}/{crictl_file}"
        plan.append(Artifact("crictl", crictl, arch, url, Checksum(url + ".sha256", crictl_file), f"{bin_dir}/{crictl_file}", 0o644))
        containerd_file = f"containerd-{containerd_bare}-linux-{arch}.tar.gz"
        url = f"{github}/containerd/containerd/releases/download/v{containerd_bare}/{containerd_file}"
        plan.append(
            Artifact("containerd", containerd_bare, arch, url, Checksum(url + ".sha256sum", containerd_file), f"{bin_dir}/{containerd_file}", 0o644)
        )
        runc_base = f"{github}/opencontainers/runc/releases/download/{runc}"
        plan.append(
            Artifact(
                "runc", runc, arch, f"{runc_base}/runc.{arch}", Checksum(f"{runc_base}/runc.sha256sum", f"runc.{arch}"), f"{bin_dir}/runc", 0o755
            )
        )
    if versions.flannel:
        url = f"{github}/flannel-io/flannel/releases/download/{versions.flannel}/kube-flannel.yml"
        if versions.flannel_sha256:
            checksum = Checksum(None, pinned=versions.flannel_sha256, pinned_by="--flannel-sha256")
        elif versions.flannel in FLANNEL_SHA256:
            checksum = Checksum(None, pinned=FLANNEL_SHA256[versions.flannel], pinned_by=f"airlock's table for flannel {versions.flannel}")
        else:
            checksum = Checksum(None)
        plan.append(Artifact("flannel", versions.flannel, None, url, checksum, "manifests/cni/kube-flannel.yml", 0o644))
    return plan


def kubeadm_for(release_url: str, version: str, arch: str) -> Artifact:
    """The kubeadm of an exact version for one architecture (the build host's, to ask it for the image list)."""
    url = f"{release_url.rstrip('/')}/release/{version}/bin/linux/{arch}/kubeadm"
    return Artifact("kubeadm", version, arch, url, Checksum(url + ".sha256"), f"bin/linux-{arch}/kubeadm", 0o755, KUBERNETES_BINARIES)


def parse_checksum_file(text: str, name: str | None) -> str | None:
    """The hex digest in a `.sha256` (bare hex) or `sha256sum` style file, for `name`."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        candidate = lines[0][0].lower()
        return candidate if is_hex64(candidate) else None
    for fields in lines:
        if len(fields) >= 2 and fields[-1].lstrip("*") == name and is_hex64(fields[0].lower()):
            return fields[0].lower()
    return None


def is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
