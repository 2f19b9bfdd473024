"""The Kubernetes versions airlock builds bundles of, and what each minor's kubeadm lists.

One table: SUPPORTED_MINORS says which minors are supported upstream (December 2026: 1.34-1.38);
`build` refuses anything else with exit 2 unless `--allow-unsupported-version` (for labs; recorded
in bundle.json, shown by `airlock inspect`). IMAGES is what `kubeadm config images list` answers per
minor and patch (coredns, etcd, pause), used only with `--image-list-from-table`; each row names
where it was read (docs/kubeadm.md has the same list). Ask kubeadm whenever you can: a patch
release can move etcd or pause.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import UsageError
from bundle.version import KubernetesVersion

SUPPORTED_MINORS = (34, 35, 36, 37, 38)
SUPPORTED_RANGE = f"1.{SUPPORTED_MINORS[0]}-1.{SUPPORTED_MINORS[-1]}"

# crictl (cri-tools) is released with each Kubernetes minor and follows it.
CRICTL_BY_MINOR = {33: "v1.33.0", 34: "v1.34.0", 35: "v1.35.0", 36: "v1.36.0", 37: "v1.37.0", 38: "v1.38.0"}


class UnsupportedVersion(UsageError):
    """A Kubernetes minor outside SUPPORTED_MINORS without --allow-unsupported-version: a usage error (exit 2)."""


@dataclass(frozen=True)
class ImageRow:
    """From this patch of the minor on (until the next row): the add-on images kubeadm lists."""

    minor: int
    from_patch: int
    coredns: str
    etcd: str
    pause: str
    source: str


IMAGES = (
    ImageRow(33, 0, "v1.12.0", "3.5.21-0", "3.10", "v1.33.0 constants.go (coredns/deployment PR #306 cites build/dependencies.yaml at v1.33.0)"),
    ImageRow(33, 6, "v1.12.0", "3.5.24-0", "3.10", "kubernetes PR #134779 (etcd 3.5.24 for 1.32-1.34, Oct 2025), first in the Nov 2025 patches"),
    ImageRow(34, 0, "v1.12.1", "3.6.4-0", "3.10.1", "release-1.34 constants.go; kubespray PR #12827 (pause 3.10.1 for 1.34)"),
    ImageRow(34, 2, "v1.12.1", "3.6.5-0", "3.10.1", "release-1.34 constants.go revision with SupportedEtcdVersion 34: 3.6.5-0"),
    ImageRow(35, 0, "v1.13.1", "3.6.6-0", "3.10.1", "kubernetes PR #135271 (etcd 3.6.6 for the 1.35 cycle); CoreDNS v1.13.1"),
    ImageRow(36, 0, "v1.14.2", "3.6.9-0", "3.10.2", "etcd update guide diff (34/35/36 -> 3.6.9-0); kubeclipper PR #947 (pause 3.10.2 for 1.36)"),
    ImageRow(37, 0, "v1.14.2", "3.7.0-0", "3.10.2", "CHANGELOG-1.37 (etcd 3.7.0-rc.0 in alpha.1, 3.7.0 at code freeze, kubernetes PR #141032)"),
    ImageRow(38, 0, "v1.14.2", "3.7.1-0", "3.10.2", "kubernetes PR #141032 (etcd 3.7.1 on master after the 1.37 freeze); 1.38 unreleased"),
)


def images_for(minor: int, patch: int) -> ImageRow | None:
    rows = [row for row in IMAGES if row.minor == minor and row.from_patch <= patch]
    return rows[-1] if rows else None


def check_supported(version: KubernetesVersion, allow_unsupported: bool) -> bool:
    """True when `version` is outside the supported range but allowed; raise when it is not allowed."""
    if version.minor in SUPPORTED_MINORS:
        return False
    if allow_unsupported:
        return True
    raise UnsupportedVersion(
        f"Kubernetes {version} is not supported (airlock builds {SUPPORTED_RANGE}, the minors supported upstream); "
        "pick a supported version, or pass --allow-unsupported-version for a lab"
    )
