"""An SPDX 2.3 JSON document listing every file and image of a bundle."""

from __future__ import annotations

import hashlib

from bundle.manifest import FileEntry, ImageEntry, canonical_json


def _spdx_id(kind: str, text: str) -> str:
    return f"SPDXRef-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def spdx_document(
    name: str, serial: int, created: str, version: str, files: list[FileEntry], images: list[ImageEntry], components: dict[str, str]
) -> bytes:
    packages = []
    for entry in files:
        packages.append(
            {
                "SPDXID": _spdx_id("File", entry.path),
                "name": entry.path.rsplit("/", 1)[-1],
                "versionInfo": _version_for(entry.path, components, version),
                "downloadLocation": entry.source or "NOASSERTION",
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": entry.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "comment": f"bundle member {entry.path}",
            }
        )
    for image in images:
        repository, _, tag = image.reference.rpartition(":")
        packages.append(
            {
                "SPDXID": _spdx_id("Image", image.reference),
                "name": image.reference,
                "versionInfo": tag,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": image.digest.split(":", 1)[1]}],
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{image.digest.replace(':', '%3A')}?repository_url={repository}&tag={tag}",
                    }
                ],
                "primaryPackagePurpose": "CONTAINER",
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }
        )
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name}-{serial}",
        "documentNamespace": f"https://airlock.invalid/spdx/{name}/{serial}",
        "creationInfo": {"created": created, "creators": ["Tool: airlock"]},
        "packages": packages,
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": package["SPDXID"]} for package in packages
        ],
    }
    return canonical_json(document)


def _version_for(path: str, components: dict[str, str], kubernetes: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for component in ("cni", "crictl", "containerd", "runc", "flannel"):
        if name.startswith(component) or (component == "cni" and path.startswith("cni/")) or (component == "flannel" and "flannel" in name):
            return components.get(component, "NOASSERTION")
    return kubernetes
