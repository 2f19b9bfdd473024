"""An SPDX 2.3 JSON document: every file and image of a bundle, and what is inside them.

Top level (DESCRIBES): each bundle file and each image. Inside (CONTAINS):
the OS packages an image's dpkg or apk database lists (one SPDX package per
PURL, so one shared by several images is listed once and contained by each),
and every Go program found in a file or an image; a Go program STATIC_LINKs
the modules of its build info and the Go standard library it was built with.
What could not be read (a zstd layer, a delta's unchanged members) is named
in creationInfo.comment, never silently left out.
"""

from __future__ import annotations

import hashlib

from builder.contents import Binary, Inventory, Package
from bundle.manifest import FileEntry, ImageEntry, canonical_json

NONE = "NOASSERTION"


def _spdx_id(kind: str, text: str) -> str:
    return f"SPDXRef-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _purl_ref(purl: str) -> list[dict]:
    return [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}]


def _unlicensed(package: dict) -> dict:
    package.update({"downloadLocation": package.get("downloadLocation", NONE), "filesAnalyzed": False, "licenseConcluded": NONE, "licenseDeclared": NONE, "copyrightText": NONE})
    return package


def file_id(path: str) -> str:
    return _spdx_id("File", path)


def image_id(reference: str) -> str:
    return _spdx_id("Image", reference)


def spdx_document(
    name: str,
    serial: int,
    created: str,
    version: str,
    files: list[FileEntry],
    images: list[ImageEntry],
    components: dict[str, str],
    inventories: list[Inventory] = (),
) -> bytes:
    packages = []
    relationships = []
    for entry in files:
        packages.append(
            _unlicensed(
                {
                    "SPDXID": file_id(entry.path),
                    "name": entry.path.rsplit("/", 1)[-1],
                    "versionInfo": _version_for(entry.path, components, version),
                    "downloadLocation": entry.source or NONE,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": entry.sha256}],
                    "comment": f"bundle member {entry.path}",
                }
            )
        )
    for image in images:
        repository, _, tag = image.reference.rpartition(":")
        packages.append(
            _unlicensed(
                {
                    "SPDXID": image_id(image.reference),
                    "name": image.reference,
                    "versionInfo": tag,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": image.digest.split(":", 1)[1]}],
                    "externalRefs": _purl_ref(
                        f"pkg:oci/{repository.rsplit('/', 1)[-1]}@{image.digest.replace(':', '%3A')}?repository_url={repository}&tag={tag}"
                    ),
                    "primaryPackagePurpose": "CONTAINER",
                    "comment": f"platforms {', '.join(image.platforms)}",
                }
            )
        )
    relationships += [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": p["SPDXID"]} for p in packages]

    listed: set[str] = set()
    unread: list[str] = []

    def package_of(found: Package, where: str) -> str:
        spdx = _spdx_id("Package", found.purl)
        if spdx not in listed:
            listed.add(spdx)
            packages.append(
                _unlicensed(
                    {
                        "SPDXID": spdx,
                        "name": found.name,
                        "versionInfo": found.version,
                        "externalRefs": _purl_ref(found.purl),
                        "primaryPackagePurpose": "LIBRARY",
                        "sourceInfo": f"{found.ecosystem}; first found in {where}",
                    }
                )
            )
        return spdx

    def binary_of(inventory: Inventory, binary: Binary, container: str) -> str:
        where = f"{inventory.container} {inventory.platform}".strip()
        spdx = _spdx_id("Binary", f"{where}:{binary.path}")
        package = {
            "SPDXID": spdx,
            "name": binary.path.rsplit("/", 1)[-1],
            "versionInfo": binary.main_version or binary.go or NONE,
            "primaryPackagePurpose": "APPLICATION",
            "comment": f"Go program {binary.path} in {where}"
            + (f", built with {binary.go} from {binary.package or binary.main_path}" if binary.go else "")
            + (f"; {binary.note}" if binary.note else ""),
        }
        if binary.main_path and binary.main_version and binary.main_version != "(devel)":
            package["externalRefs"] = _purl_ref(f"pkg:golang/{binary.main_path.lower()}@{binary.main_version}")
        packages.append(_unlicensed(package))
        relationships.append({"spdxElementId": container, "relationshipType": "CONTAINS", "relatedSpdxElement": spdx, "comment": inventory.platform or "file"})
        for module in binary.modules:
            relationships.append({"spdxElementId": spdx, "relationshipType": "STATIC_LINK", "relatedSpdxElement": package_of(module, f"{binary.path} in {where}")})
        return spdx

    for inventory in inventories:
        container = image_id(inventory.container) if inventory.platform else file_id(inventory.container)
        where = f"{inventory.container} {inventory.platform}".strip()
        unread += inventory.unscanned
        for found in inventory.packages:
            relationships.append(
                {"spdxElementId": container, "relationshipType": "CONTAINS", "relatedSpdxElement": package_of(found, where), "comment": inventory.platform or "file"}
            )
        for binary in inventory.binaries:
            binary_of(inventory, binary, container)
    creation = {"created": created, "creators": ["Tool: airlock"]}
    if unread:
        creation["comment"] = "not read for contents: " + "; ".join(unread)
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{name}-{serial}",
        "documentNamespace": f"https://airlock.invalid/spdx/{name}/{serial}",
        "creationInfo": creation,
        "packages": packages,
        "relationships": relationships,
    }
    return canonical_json(document)


def _version_for(path: str, components: dict[str, str], kubernetes: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for component in ("cni", "crictl", "containerd", "runc", "flannel"):
        if name.startswith(component) or (component == "cni" and path.startswith("cni/")) or (component == "flannel" and "flannel" in name):
            return components.get(component, NONE)
    return kubernetes
