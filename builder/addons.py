"""The manifests a bundle carries and their API versions: the CNI's, and any `--manifest FILE`.

Extra manifests become members `manifests/addons/NN-NAME` (NN keeps the
order they were given in; the node's cni phase applies them in that order
after the CNI, with kubectl apply). Every manifest is checked against the
API table of the bundle's Kubernetes minor (bundle.apis): a removed API
refuses the build, naming the file, document, kind and replacement; a
deprecated one, or one no built-in API serves, is a warning. The findings
travel signed in the bundle as `api-versions.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError
from bundle import apis
from bundle.manifest import canonical_json

ADDONS = "manifests/addons/"
SCHEMA = "airlock.api-versions/v1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Carried:
    member: str
    origin: str  # what the user knows it by: the --manifest path or the URL it came from
    data: bytes
    documents: list


def read_extra(paths: list[Path]) -> list[Carried]:
    """Each --manifest file, read (bounded) and parsed; refused with the file's name when it is not YAML."""
    found = []
    names: set[str] = set()
    for number, path in enumerate(paths, 1):
        try:
            with open(path, "rb") as handle:
                data = handle.read(apis.MAX_MANIFEST_BYTES + 1)
        except OSError as error:
            raise BuildError(f"--manifest {path}: {error.strerror}") from None
        try:
            documents = apis.load_documents(data)
        except apis.ManifestError as error:
            raise BuildError(f"--manifest {path}: {error}") from None
        member = f"{ADDONS}{number:02d}-{_SAFE.sub('_', path.name)}"
        if member in names:
            raise BuildError(f"--manifest {path} is given twice")
        names.add(member)
        found.append(Carried(member, str(path), data, documents))
    return found


def check(carried: list[Carried], minor: int) -> apis.Checked:
    """The carried manifests against Kubernetes 1.`minor`; BuildError listing every use of a removed API."""
    checked = apis.check_documents([(item.origin, item.documents) for item in carried], minor)
    if checked.removed:
        lines = "; ".join(finding.describe() for finding in checked.removed)
        raise BuildError(f"Kubernetes 1.{minor} does not serve APIs these manifests use: {lines}. Change the manifests to the replacement APIs")
    return checked


def findings_document(carried: list[Carried], checked: apis.Checked, version: str) -> bytes:
    """api-versions.json: the table used (its source and date) and every finding, per carried manifest."""
    rules = apis.table(checked.minor)
    return canonical_json(
        {
            "schema": SCHEMA,
            "kubernetes": version,
            "minor": f"1.{checked.minor}",
            "table": {"source": apis.SOURCE, "read": apis.READ_ON, "note": rules.note},
            "manifests": [{"member": item.member, "origin": item.origin} for item in carried],
            "findings": [finding.to_dict() for finding in checked.findings],
        }
    )
