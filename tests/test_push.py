"""`airlock push` of any bundle airlock builds into distribution (Debian's docker-registry), then containerd pulls from it.

A bundle carries only its own platforms of an upstream index; distribution
refuses an index whose manifests it does not hold, so such an index goes in
narrowed, under a new digest the push prints. An index carried whole keeps its
upstream digest. containerd then pulls every image, for every carried
platform, through the hosts.toml the push printed.
"""

from __future__ import annotations

import json
import re
import tarfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import airlock, build, require
from tests.upstream import COMPONENT_IMAGES, OCI_INDEX, DockerRegistry

PAUSE_TAG, ETCD_TAG = COMPONENT_IMAGES["pause"], COMPONENT_IMAGES["etcd"]
PAUSE, ETCD = f"registry.k8s.io/pause:{PAUSE_TAG}", f"registry.k8s.io/etcd:{ETCD_TAG}"  # what the test bundles' kubeadm lists

# An upstream image with a platform no bundle can carry (airlock builds amd64 and arm64 only).
THREE_PLATFORMS = "docker.io/library/threeway:1.0"
ACCEPT = ", ".join([OCI_INDEX, "application/vnd.oci.image.manifest.v1+json"])


def bundle_images(bundle: Path) -> dict[str, str]:
    with tarfile.open(bundle) as archive:
        manifest = json.loads(archive.extractfile("bundle.json").read())
    return {image["reference"]: image["digest"] for image in manifest["images"]}


def get(registry: DockerRegistry, repository: str, reference: str) -> dict:
    request = urllib.request.Request(f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def hosts_files(stdout: str) -> dict[str, str]:
    """The hosts.toml texts `airlock push` printed, by upstream registry."""
    found = {}
    for upstream, text in re.findall(r"# /etc/containerd/certs\.d/([^/]+)/hosts\.toml\n(.*?)(?=\n# /etc/containerd|\nor, for)", stdout, re.S):
        found[upstream] = text
    return found


def narrowed(stdout: str) -> dict[str, tuple[str, str]]:
    """reference -> (upstream digest, pushed digest) from the push report."""
    pattern = r"^  (\S+) \(([^)]*)\): (sha256:[0-9a-f]{64}) -> (sha256:[0-9a-f]{64})$"
    return {m[0]: (m[2], m[3]) for m in re.findall(pattern, stdout, re.M)}


def push(bundle: Path, keys, target: DockerRegistry, work: Path, prefix: str = "site"):
    return airlock("push", bundle, "--to", f"{target.host}/{prefix}", "--insecure", "--key", keys["ed25519"] / "airlock.pub", "--work-dir", work)


def target_repository(reference: str, prefix: str = "site") -> tuple[str, str]:
    name, tag = reference.rsplit(":", 1)
    return f"{prefix}/{name.split('/', 1)[1]}", tag


def platform_blobs(target: DockerRegistry, repository: str, index_digest: str, platform: str) -> set[str]:
    """The manifest, config and layer digests of one platform of an index in the target."""
    os_name, arch = platform.split("/")
    child = next(d for d in get(target, repository, index_digest)["manifests"] if d["platform"] == {"os": os_name, "architecture": arch})
    manifest = get(target, repository, child["digest"])
    return {child["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


def pull_every_platform(containerd, target: DockerRegistry, stdout: str, expected: dict[str, str], platforms: list[str]) -> None:
    for upstream_host, text in hosts_files(stdout).items():
        containerd.hosts(upstream_host, text)
    for platform in platforms:
        for reference in expected:
            containerd.pull(reference, platforms=platform)
        present = set(containerd.ctr("content", "ls", "-q").stdout.split())
        for reference, digest in expected.items():
            missing = platform_blobs(target, *target_repository(reference)[:1], digest, platform) - present
            assert not missing, f"{reference} {platform}: containerd lacks {missing}"
    assert containerd.image_digests() == expected


def test_hosts_toml_falls_back_to_the_site_registry_not_the_internet():
    from builder.push import Target, hosts_toml

    for text, url in (("reg.site:5000/k8s", "https://reg.site:5000/v2/k8s"), ("reg.site", "https://reg.site")):
        toml = hosts_toml("registry.k8s.io", Target.parse(text, insecure=False))
        assert f'server = "{url}"' in toml and f'[host."{url}"]' in toml
        assert "registry.k8s.io\"" not in toml and ("override_path = true" in toml) == ("/k8s" in url)
    quoted = hosts_toml("registry.k8s.io", Target.parse("reg.site", insecure=False), ca_file='/etc/pki/"odd".crt')
    assert 'ca = "/etc/pki/\\"odd\\".crt"' in quoted


def test_one_arch_bundle_pushes_narrowed_indexes_and_containerd_pulls_them(node_bundle, keys, containerd, tmp_path):
    require("docker-registry", "containerd", "ctr")
    target = DockerRegistry(tmp_path / "target")
    try:
        result = push(node_bundle, keys, target, tmp_path / "work")
        assert result.returncode == 0, result.stderr
        upstream_digests = bundle_images(node_bundle)
        changes = narrowed(result.stdout)
        # Every upstream image in the test upstream has amd64 and arm64; an amd64 bundle narrows each one.
        assert set(changes) == set(upstream_digests)
        expected = {}
        for reference, (before, after) in changes.items():
            assert before == upstream_digests[reference] and after != before
            repository, tag = target_repository(reference)
            assert target.manifest_digest(repository, tag) == after
            index = get(target, repository, after)
            assert [d["platform"]["architecture"] for d in index["manifests"]] == ["amd64"]
            expected[reference] = after
        assert "linux/amd64; 1 left out" in result.stdout
        pull_every_platform(containerd, target, result.stdout, expected, ["linux/amd64"])
        # A platform manifest keeps its upstream digest: pulling it by that digest works too.
        repository, _ = target_repository(PAUSE)
        child = get(target, repository, expected[PAUSE])["manifests"][0]["digest"]
        containerd.pull(f"registry.k8s.io/pause@{child}")
        # A rerun finds everything in place.
        again = push(node_bundle, keys, target, tmp_path / "work")
        assert again.returncode == 0 and " 0 blobs uploaded, 0 mounted" in again.stdout
        assert narrowed(again.stdout) == changes
    finally:
        target.close()


@pytest.fixture(scope="module")
def two_arch_bundle(upstream, keys, tmp_path_factory) -> Path:
    upstream.push(THREE_PLATFORMS, ("amd64", "arm64", "ppc64le"))
    out = tmp_path_factory.mktemp("two-arch") / "k8s.tar"
    build(upstream, keys, out, "v1.36.4", tmp_path_factory.mktemp("two-arch-cache"), "--arch", "amd64,arm64", "--image", THREE_PLATFORMS, check=True)
    return out


def test_two_arch_bundle_keeps_whole_indexes_and_narrows_the_rest(two_arch_bundle, upstream, keys, containerd, tmp_path):
    require("docker-registry", "containerd", "ctr")
    target = DockerRegistry(tmp_path / "target")
    try:
        result = push(two_arch_bundle, keys, target, tmp_path / "work")
        assert result.returncode == 0, result.stderr
        upstream_digests = bundle_images(two_arch_bundle)
        changes = narrowed(result.stdout)
        assert list(changes) == [THREE_PLATFORMS]
        assert changes[THREE_PLATFORMS][0] == upstream_digests[THREE_PLATFORMS] == upstream.upstream_digest(THREE_PLATFORMS)
        assert "linux/amd64, linux/arm64; 1 left out" in result.stdout
        expected = dict(upstream_digests)
        expected[THREE_PLATFORMS] = changes[THREE_PLATFORMS][1]
        for reference, digest in expected.items():
            assert target.manifest_digest(*target_repository(reference)) == digest
        # Every index carried whole keeps the upstream digest.
        assert all(expected[r] == upstream_digests[r] for r in expected if r != THREE_PLATFORMS)
        pull_every_platform(containerd, target, result.stdout, expected, ["linux/amd64", "linux/arm64"])
    finally:
        target.close()


def test_push_prints_the_hosts_toml_a_node_installed_from_that_registry_writes():
    """`airlock push` tells the operator what each node's certs.d/UPSTREAM/hosts.toml says; a node installed `--from` the
    same registry (its CA given) writes that very document: one writer (bundle/containerd.py), the same settings."""
    import tomllib

    from builder.push import Target, hosts_toml
    from installer.phases.runtime import pull_hosts_toml
    from installer.remote import Origin

    for site in ("reg.site:5000/k8s", "reg.site"):
        printed = hosts_toml("registry.k8s.io", Target.parse(site, insecure=False), ca_file="/etc/airlock/site-ca.crt")
        written = pull_hosts_toml("registry.k8s.io", [Origin.parse(f"https://{site}", False).mirror()], "/etc/airlock/site-ca.crt")
        assert tomllib.loads(printed) == tomllib.loads(written)
        assert tomllib.loads(written)["ca"] == "/etc/airlock/site-ca.crt" and ("override_path" in tomllib.loads(written)) == site.endswith("/k8s")
