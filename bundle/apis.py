"""Which API group-versions and kinds each Kubernetes minor serves, deprecates or has removed, and manifest checks.

The table is data, read from the Kubernetes Deprecated API Migration Guide
(https://kubernetes.io/docs/reference/using-api/deprecation-guide/), whose
last listed removal is v1.32 (flowcontrol.apiserver.k8s.io/v1beta3), and
from the API reference of the minors for what is served by default; it was
read on READ_ON. As of that date no removal is scheduled for 1.33 to 1.38, so
their tables differ only in what they add and deprecate. A minor beyond the
newest listed is checked against the newest table, and says so.

The builder refuses a carried manifest that uses a removed API and warns on
a deprecated one; before an upgrade across minors a node checks the
manifests it applied and the running cluster's `kubectl api-versions`
against the target minor. Both use `check_documents` here; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

SOURCE = "Kubernetes Deprecated API Migration Guide (kubernetes.io/docs/reference/using-api/deprecation-guide), removals through v1.32; API reference v1.34"
READ_ON = "2026-12-02"
TABLE_MINORS = (34, 35, 36, 37, 38)


@dataclass(frozen=True)
class Served:
    group_version: str
    kinds: tuple[str, ...]
    since: int  # first minor that serves it by default
    until: int | None = None  # first minor that no longer serves it


@dataclass(frozen=True)
class Removal:
    group_version: str
    kinds: tuple[str, ...]
    removed: int
    replacement: str  # the group-version to use instead, or what replaces the kind


@dataclass(frozen=True)
class Deprecation:
    group_version: str
    kind: str
    since: int
    replacement: str


_CORE = ("Binding", "ComponentStatus", "ConfigMap", "Endpoints", "Event", "LimitRange", "Namespace", "Node", "PersistentVolume",
         "PersistentVolumeClaim", "Pod", "PodTemplate", "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount")  # fmt: skip

SERVED: tuple[Served, ...] = (
    Served("v1", _CORE, 1),
    Served("admissionregistration.k8s.io/v1", ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"), 16),
    Served("admissionregistration.k8s.io/v1", ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"), 30),
    Served("apiextensions.k8s.io/v1", ("CustomResourceDefinition",), 16),
    Served("apiregistration.k8s.io/v1", ("APIService",), 10),
    Served("apps/v1", ("ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"), 9),
    Served("authentication.k8s.io/v1", ("TokenReview",), 6),
    Served("authentication.k8s.io/v1", ("SelfSubjectReview",), 28),
    Served("authorization.k8s.io/v1", ("LocalSubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview"), 6),
    Served("autoscaling/v1", ("HorizontalPodAutoscaler",), 2),
    Served("autoscaling/v2", ("HorizontalPodAutoscaler",), 23),
    Served("batch/v1", ("Job",), 2),
    Served("batch/v1", ("CronJob",), 21),
    Served("certificates.k8s.io/v1", ("CertificateSigningRequest",), 19),
    Served("coordination.k8s.io/v1", ("Lease",), 14),
    Served("discovery.k8s.io/v1", ("EndpointSlice",), 21),
    Served("events.k8s.io/v1", ("Event",), 19),
    Served("flowcontrol.apiserver.k8s.io/v1", ("FlowSchema", "PriorityLevelConfiguration"), 29),
    Served("flowcontrol.apiserver.k8s.io/v1beta3", ("FlowSchema", "PriorityLevelConfiguration"), 26, 32),
    Served("networking.k8s.io/v1", ("Ingress", "IngressClass"), 19),
    Served("networking.k8s.io/v1", ("NetworkPolicy",), 8),
    Served("networking.k8s.io/v1", ("IPAddress", "ServiceCIDR"), 33),
    Served("node.k8s.io/v1", ("RuntimeClass",), 20),
    Served("policy/v1", ("PodDisruptionBudget",), 21),
    Served("rbac.authorization.k8s.io/v1", ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"), 8),
    Served("resource.k8s.io/v1", ("DeviceClass", "ResourceClaim", "ResourceClaimTemplate", "ResourceSlice"), 34),
    Served("scheduling.k8s.io/v1", ("PriorityClass",), 14),
    Served("storage.k8s.io/v1", ("StorageClass",), 6),
    Served("storage.k8s.io/v1", ("VolumeAttachment",), 13),
    Served("storage.k8s.io/v1", ("CSINode",), 17),
    Served("storage.k8s.io/v1", ("CSIDriver",), 19),
    Served("storage.k8s.io/v1", ("CSIStorageCapacity",), 24),
    Served("storage.k8s.io/v1", ("VolumeAttributesClass",), 34),
)

REMOVALS: tuple[Removal, ...] = (
    Removal("extensions/v1beta1", ("DaemonSet", "Deployment", "ReplicaSet"), 16, "apps/v1"),
    Removal("extensions/v1beta1", ("NetworkPolicy",), 16, "networking.k8s.io/v1"),
    Removal("extensions/v1beta1", ("PodSecurityPolicy",), 16, "policy/v1beta1, itself removed in 1.25: use Pod Security Admission"),
    Removal("apps/v1beta1", ("Deployment", "StatefulSet", "ReplicaSet"), 16, "apps/v1"),
    Removal("apps/v1beta2", ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet"), 16, "apps/v1"),
    Removal("admissionregistration.k8s.io/v1beta1", ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"), 22, "admissionregistration.k8s.io/v1"),
    Removal("apiextensions.k8s.io/v1beta1", ("CustomResourceDefinition",), 22, "apiextensions.k8s.io/v1"),
    Removal("apiregistration.k8s.io/v1beta1", ("APIService",), 22, "apiregistration.k8s.io/v1"),
    Removal("authentication.k8s.io/v1beta1", ("TokenReview",), 22, "authentication.k8s.io/v1"),
    Removal("authorization.k8s.io/v1beta1", ("LocalSubjectAccessReview", "SelfSubjectAccessReview", "SubjectAccessReview"), 22, "authorization.k8s.io/v1"),
    Removal("certificates.k8s.io/v1beta1", ("CertificateSigningRequest",), 22, "certificates.k8s.io/v1"),
    Removal("coordination.k8s.io/v1beta1", ("Lease",), 22, "coordination.k8s.io/v1"),
    Removal("extensions/v1beta1", ("Ingress",), 22, "networking.k8s.io/v1"),
    Removal("networking.k8s.io/v1beta1", ("Ingress", "IngressClass"), 22, "networking.k8s.io/v1"),
    Removal("rbac.authorization.k8s.io/v1beta1", ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"), 22, "rbac.authorization.k8s.io/v1"),
    Removal("scheduling.k8s.io/v1beta1", ("PriorityClass",), 22, "scheduling.k8s.io/v1"),
    Removal("storage.k8s.io/v1beta1", ("CSIDriver", "CSINode", "StorageClass", "VolumeAttachment"), 22, "storage.k8s.io/v1"),
    Removal("rbac.authorization.k8s.io/v1alpha1", ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"), 22, "rbac.authorization.k8s.io/v1"),
    Removal("scheduling.k8s.io/v1alpha1", ("PriorityClass",), 22, "scheduling.k8s.io/v1"),
    Removal("batch/v1beta1", ("CronJob",), 25, "batch/v1"),
    Removal("discovery.k8s.io/v1beta1", ("EndpointSlice",), 25, "discovery.k8s.io/v1"),
    Removal("events.k8s.io/v1beta1", ("Event",), 25, "events.k8s.io/v1"),
    Removal("autoscaling/v2beta1", ("HorizontalPodAutoscaler",), 25, "autoscaling/v2"),
    Removal("policy/v1beta1", ("PodDisruptionBudget",), 25, "policy/v1"),
    Removal("policy/v1beta1", ("PodSecurityPolicy",), 25, "nothing: use Pod Security Admission"),
    Removal("node.k8s.io/v1beta1", ("RuntimeClass",), 25, "node.k8s.io/v1"),
    Removal("flowcontrol.apiserver.k8s.io/v1beta1", ("FlowSchema", "PriorityLevelConfiguration"), 26, "flowcontrol.apiserver.k8s.io/v1"),
    Removal("autoscaling/v2beta2", ("HorizontalPodAutoscaler",), 26, "autoscaling/v2"),
    Removal("storage.k8s.io/v1beta1", ("CSIStorageCapacity",), 27, "storage.k8s.io/v1"),
    Removal("flowcontrol.apiserver.k8s.io/v1beta2", ("FlowSchema", "PriorityLevelConfiguration"), 29, "flowcontrol.apiserver.k8s.io/v1"),
    Removal("flowcontrol.apiserver.k8s.io/v1beta3", ("FlowSchema", "PriorityLevelConfiguration"), 32, "flowcontrol.apiserver.k8s.io/v1"),
)

DEPRECATIONS: tuple[Deprecation, ...] = (
    Deprecation("v1", "ComponentStatus", 19, "nothing: query the components' own health endpoints"),
    Deprecation("v1", "Endpoints", 33, "discovery.k8s.io/v1 EndpointSlice"),
    Deprecation("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema", 29, "flowcontrol.apiserver.k8s.io/v1"),
    Deprecation("flowcontrol.apiserver.k8s.io/v1beta3", "PriorityLevelConfiguration", 29, "flowcontrol.apiserver.k8s.io/v1"),
)


@dataclass(frozen=True)
class MinorTable:
    minor: int
    served: dict[str, frozenset[str]]  # group-version -> kinds
    deprecated: dict[tuple[str, str], Deprecation]
    removed: dict[tuple[str, str], Removal]
    note: str = ""

    def removed_group_versions(self) -> dict[str, Removal]:
        """Group-versions no kind of which this minor serves any more."""
        gone: dict[str, Removal] = {}
        for (group_version, _), removal in sorted(self.removed.items()):
            if group_version not in self.served:
                gone.setdefault(group_version, removal)
        return gone


def table(minor: int) -> MinorTable:
    """What Kubernetes 1.`minor` serves by default, deprecates and no longer serves."""
    note = ""
    if minor > max(TABLE_MINORS):
        note = f"no table for 1.{minor}: checked against 1.{max(TABLE_MINORS)}'s (read {READ_ON})"
    served: dict[str, set[str]] = {}
    for entry in SERVED:
        if entry.since <= minor and (entry.until is None or minor < entry.until):
            served.setdefault(entry.group_version, set()).update(entry.kinds)
    removed = {(r.group_version, kind): r for r in REMOVALS if r.removed <= minor for kind in r.kinds}
    deprecated = {
        (d.group_version, d.kind): d for d in DEPRECATIONS if d.since <= minor and d.kind in served.get(d.group_version, ())
    }
    return MinorTable(minor, {gv: frozenset(kinds) for gv, kinds in served.items()}, deprecated, removed, note)


# ---------------------------------------------------------------------------------------------- manifests

MAX_MANIFEST_BYTES = 4 << 20
MAX_MANIFEST_NODES = 200_000


class ManifestError(ValueError):
    """A manifest that cannot be read as Kubernetes YAML (the caller names the file)."""


class _PlainYamlLoader(yaml.SafeLoader):
    """SafeLoader without aliases (a few hundred bytes of them expand into billions of nodes) and with a node budget."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"uses the alias *{event.anchor}; manifests airlock carries may not", event.start_mark)
        self.node_count = getattr(self, "node_count", 0) + 1
        if self.node_count > MAX_MANIFEST_NODES:
            raise yaml.composer.ComposerError(None, None, f"has more than {MAX_MANIFEST_NODES} YAML nodes", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_documents(data: bytes) -> list:
    """Every document of a multi-document Kubernetes YAML, parsed with limits (no aliases, bounded size); ManifestError otherwise."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{len(data)} bytes is more than a manifest may be ({MAX_MANIFEST_BYTES})")
    try:
        return list(yaml.load_all(data, Loader=_PlainYamlLoader))
    except yaml.YAMLError as error:
        raise ManifestError(f"not valid YAML: {error}") from None
    except RecursionError:
        raise ManifestError("nests YAML too deeply") from None


@dataclass(frozen=True)
class Finding:
    level: str  # "removed" (refused), "deprecated" (warned) or "unknown" (not a built-in API: a CRD's, or not served)
    file: str
    document: int  # 1-based position in the file
    api_version: str
    kind: str
    name: str
    replacement: str = ""
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.file} document {self.document} ({self.kind} {self.name or '(unnamed)'})"
        if self.level == "removed":
            return f"{where}: {self.api_version} {self.kind} {self.detail}; use {self.replacement}"
        if self.level == "deprecated":
            return f"{where}: {self.api_version} {self.kind} {self.detail}; use {self.replacement}"
        return f"{where}: {self.api_version} {self.detail}"

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "file": self.file,
            "document": self.document,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "replacement": self.replacement,
            "detail": self.detail,
        }


@dataclass
class Checked:
    """Findings of a set of manifests against one minor, and the group-versions their CRDs add."""

    minor: int
    findings: list[Finding] = field(default_factory=list)
    custom: set[str] = field(default_factory=set)

    @property
    def removed(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "removed"]


def _objects(documents: list):
    """(document number, object) for each object, List items included."""
    for number, document in enumerate(documents, 1):
        if not isinstance(document, dict):
            continue
        if str(document.get("kind", "")).endswith("List") and isinstance(document.get("items"), list):
            for item in document["items"]:
                if isinstance(item, dict):
                    yield number, item
        else:
            yield number, document


def check_documents(manifests: list[tuple[str, list]], minor: int) -> Checked:
    """Check every object of `manifests` ([(file name, parsed documents)]) against what 1.`minor` serves.

    Group-versions defined by CustomResourceDefinitions among them count as served.
    """
    rules = table(minor)
    checked = Checked(minor)
    for _, documents in manifests:
        for _, item in _objects(documents):
            if item.get("kind") == "CustomResourceDefinition" and isinstance(item.get("spec"), dict):
                spec = item["spec"]
                for version in spec.get("versions") or []:
                    if isinstance(version, dict) and spec.get("group") and version.get("name"):
                        checked.custom.add(f"{spec['group']}/{version['name']}")
    for name, documents in manifests:
        for number, item in _objects(documents):
            api_version, kind = str(item.get("apiVersion", "")), str(item.get("kind", ""))
            if not api_version or not kind:
                continue
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            object_name = str(metadata.get("name", ""))
            removal = rules.removed.get((api_version, kind))
            deprecation = rules.deprecated.get((api_version, kind))
            if removal is not None and kind not in rules.served.get(api_version, ()):
                detail = f"is not served since 1.{removal.removed}"
                checked.findings.append(Finding("removed", name, number, api_version, kind, object_name, removal.replacement, detail))
            elif deprecation is not None:
                detail = f"is deprecated since 1.{deprecation.since}"
                checked.findings.append(Finding("deprecated", name, number, api_version, kind, object_name, deprecation.replacement, detail))
            elif kind not in rules.served.get(api_version, ()) and api_version not in checked.custom:
                detail = (
                    f"is not an API Kubernetes 1.{minor} serves by default; it works only if a CRD or an aggregated API provides it"
                    if api_version not in rules.served
                    else f"does not serve the kind {kind} by default in 1.{minor}"
                )
                checked.findings.append(Finding("unknown", name, number, api_version, kind, object_name, "", detail))
    return checked


def live_breaks(live_group_versions: list[str], minor: int) -> list[str]:
    """What a running cluster serves that 1.`minor` no longer does (from `kubectl api-versions`), one line each."""
    gone = table(minor).removed_group_versions()
    lines = []
    for group_version in sorted(set(live_group_versions)):
        removal = gone.get(group_version)
        if removal is not None:
            lines.append(
                f"the cluster serves {group_version} ({', '.join(removal.kinds)}), which 1.{minor} no longer serves (removed in 1.{removal.removed}); "
                f"clients and manifests must use {removal.replacement}"
            )
    return lines


def minor_of(version: str) -> int:
    """1.`N`.x -> N, for v1.36.4 or 1.36.4; ValueError otherwise."""
    parts = version.lstrip("v").split(".")
    if len(parts) < 2 or parts[0] != "1" or not parts[1].isdigit():
        raise ValueError(f"{version!r} is not a Kubernetes 1.x version")
    return int(parts[1])
