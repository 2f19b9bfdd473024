"""The bundle as an OCI artifact, and nodes that install straight from a registry.

`airlock push` puts the whole bundle into a distribution registry (images as
images, everything else as one artifact); oras-py and skopeo read it back. A
first node serves the same artifact from its store. A second node in its own
network namespace, with no bundle file, joins from either over TLS and ends
with the same binaries and images as a node installed from the file. Hostile
registries are refused by name.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundle.artifact import ARTIFACT_TYPE, EMPTY_DIGEST, REPOSITORY, TITLE
from tests.conftest import airlock, require


def bundle_json(bundle: Path) -> tuple[bytes, bytes, dict]:
    with tarfile.open(bundle) as archive:
        manifest_bytes = archive.extractfile("bundle.json").read()
        signature = archive.extractfile("bundle.json.sig").read()
    return manifest_bytes, signature, json.loads(manifest_bytes)


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as archive:
        return {item.name: archive.extractfile(item).read() for item in archive if item.isfile() and not item.name.startswith("images/blobs/")}


@pytest.fixture
def distribution(tmp_path):
    require("docker-registry")
    from tests.upstream import DockerRegistry

    registry = DockerRegistry(tmp_path / "distribution")
    yield registry
    registry.close()


def push(bundle: Path, keys, host: str, work: Path) -> subprocess.CompletedProcess:
    return airlock("push", bundle, "--to", host, "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", work, check=True)


def test_push_makes_one_artifact_that_oras_and_skopeo_read(bundle, keys, distribution, tmp_path):
    require("skopeo")
    import oras.client

    manifest_bytes, signature, document = bundle_json(bundle)
    tag = f"{document['name']}-{document['serial']}"
    first = push(bundle, keys, f"{distribution.host}/site", tmp_path / "work")
    assert f"{distribution.host}/site/{REPOSITORY}:{tag}" in first.stdout
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{distribution.host}/site/{REPOSITORY}:{tag}"],
                         capture_output=True, check=True).stdout
    artifact = json.loads(raw)
    assert artifact["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert artifact["artifactType"] == ARTIFACT_TYPE
    assert artifact["config"]["digest"] == EMPTY_DIGEST and artifact["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    titles = [layer["annotations"][TITLE] for layer in artifact["layers"]]
    files = members(bundle)
    assert titles[:2] == ["bundle.json", "bundle.json.sig"]
    assert sorted(titles[2:]) == sorted(name for name in files if name not in ("bundle.json", "bundle.json.sig"))
    for layer in artifact["layers"]:
        name = layer["annotations"][TITLE]
        assert layer["digest"] == "sha256:" + hashlib.sha256(files[name]).hexdigest()
    # oras-py pulls every layer to its bundle path, byte for byte.
    client = oras.client.OrasClient(hostname=distribution.host, insecure=True)
    out = tmp_path / "pulled"
    client.pull(target=f"{distribution.host}/site/{REPOSITORY}:{tag}", outdir=str(out))
    assert (out / "bundle.json").read_bytes() == manifest_bytes and (out / "bundle.json.sig").read_bytes() == signature
    for name, data in files.items():
        assert (out / name).read_bytes() == data, name
    # A rerun moves nothing: every blob and manifest is already there.
    again = push(bundle, keys, f"{distribution.host}/site", tmp_path / "work")
    assert " 0 blobs uploaded, 0 mounted" in again.stdout
