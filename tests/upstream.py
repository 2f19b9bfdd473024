"""A local upstream laid out like the real one, for tests, the demo and benchmarks.

- `FileServer`: serves a directory like dl.k8s.io and GitHub release paths,
  with Range support, a request log, and injectable faults (5xx, 429 with
  Retry-After, a body cut half way).
- `DockerRegistry`: Debian's `docker-registry` (CNCF distribution) on loopback.
- `ImageFactory`: small real images made with umoci from busybox-static, pushed
  with skopeo; multi-platform ones as an OCI index.
- `LocalUpstream`: all of the above, with stand-in kubeadm/kubelet/kubectl.

The kubeadm/kubelet/kubectl here are STAND-INS, not Kubernetes: the real
binaries cannot be had on these machines. The stand-in kubeadm
(tests/standin/kubeadm.py) is strict: it knows the command tree, flags and
configuration kinds of each minor 1.33-1.38, refuses what kubeadm refuses,
answers `config images list` and `version`, and records every call. kubelet
(tests/standin/kubelet.py) refuses the flags its minor no longer has; kubectl
is a shell script that records its calls, its command lines checked against
the real kubectl in tests/test_kubectl.py.

containerd's release archives hold stand-in scripts too, except where a test or
the demo asks `serve_containerd` for real programs: then that release's archive
for that architecture carries them (Debian sid's containerd 2.1.9 build, as
`containerd-2.1.9-linux-amd64.tar.gz`), so a node without a runtime installs and
runs the containerd its bundle carries.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from builder.artifacts import CONTAINERD_RELEASES, DEFAULT_CNI_VERSION, DEFAULT_CONTAINERD_VERSION, default_runc_version
from tests.osv import OsvStandIn
from tests.standin.kubeadm import script as standin_kubeadm
from tests.standin.kubelet import script as standin_kubelet

BUSYBOX = "/bin/busybox"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Fault:
    status: int = 503
    times: int = 1
    retry_after: str | None = None
    cut_at: float | None = None  # fraction of the body after which the connection is dropped
    stall: float = 0.0  # seconds to wait, half way through the body, before going on
    length_delta: int = 0  # announce a Content-Length this much off the real one
    location: str | None = None  # answer `status` with this Location (a redirect)


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up (timeouts, faults under test) are expected here, not errors."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FileServer:
    """A threaded static file server on loopback with faults and a request log."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.faults: dict[str, Fault] = {}
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(RequestRecord(self.command, path, self.headers.get("Range")))
                    fault = server.faults.get(path)
                    if fault and fault.times > 0:
                        fault.times -= 1
                    else:
                        fault = None
                if fault and fault.location:
                    self.send_response(fault.status)
                    self.send_header("Location", fault.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault and fault.cut_at is None and not fault.stall and not fault.length_delta:
                    self.send_response(fault.status)
                    if fault.retry_after:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                target = (server.root / path.lstrip("/")).resolve()
                if server.root.resolve() not in target.parents or not target.is_file():
                    self.send_error(404)
                    return
                size = target.stat().st_size
                start, status = 0, 200
                range_header = self.headers.get("Range")
                if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
                    start = int(range_header[6:-1])
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(size - start + (fault.length_delta if fault else 0)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(target, "rb") as handle:
                    handle.seek(start)
                    if fault and fault.stall:
                        half = (size - start) // 2
                        self.wfile.write(handle.read(half))
                        self.wfile.flush()
                        time.sleep(fault.stall)
                    if fault and fault.length_delta:
                        self.wfile.write(handle.read())
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if fault and fault.cut_at is not None:
                        self.wfile.write(handle.read(int((size - start) * fault.cut_at)))
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    shutil.copyfileobj(handle, self.wfile, 1 << 20)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def requested(self, suffix: str = "") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DockerRegistry:
    """CNCF distribution (`docker-registry`) on a loopback port, storage under `root`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=open(self.root / "registry.log", "wb"))
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"docker-registry did not start: {(self.root / 'registry.log').read_text()[-500:]}")
            time.sleep(0.1)

    def manifest_digest(self, repository: str, reference: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            method="HEAD",
            headers={"Accept": ", ".join([OCI_INDEX, "application/vnd.oci.image.manifest.v1+json"])},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Docker-Content-Digest"]

    def blob_path(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class ImageFactory:
    """Small real OCI images built with umoci, pushed to a registry with skopeo."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.layout = self.work / "layout"
        self.work.mkdir(parents=True, exist_ok=True)
        if not self.layout.exists():
            self._run("umoci", "init", "--layout", str(self.layout))
            self._run("umoci", "new", "--image", f"{self.layout}:base")
            self._run("umoci", "insert", "--image", f"{self.layout}:base", BUSYBOX, "/bin/busybox")
            self._run("umoci", "config", "--image", f"{self.layout}:base", "--config.cmd", "/bin/busybox", "--config.cmd", "sh")

    @staticmethod
    def _run(*argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")

    def _platform_image(self, tag: str, arch: str, payload: Path) -> None:
        self._run("umoci", "insert", "--image", f"{self.layout}:base", "--tag", tag, str(payload), "/etc/airlock-test-image")
        if arch != "amd64":
            self._run("umoci", "config", "--image", f"{self.layout}:{tag}", "--architecture", arch)

    def make(self, name: str, arches: tuple[str, ...] = ("amd64", "arm64"), payload_bytes: int = 64, files: dict | None = None) -> str:
        """Build `name` (an OCI index when more than one arch); return the layout tag.

        `files` ({path in the image: bytes, a file to copy, or {arch: either}}) are added to every platform, one layer each.
        """
        tag = hashlib.sha256(name.encode()).hexdigest()[:16]
        for arch in arches:
            payload = self.work / f"{tag}-{arch}.payload"
            with open(payload, "wb") as handle:
                handle.write(f"{name} {arch}\n".encode())
                if payload_bytes > 64:
                    handle.write(os.urandom(payload_bytes))
            self._platform_image(f"{tag}-{arch}", arch, payload)
            payload.unlink()
            for target, source in (files or {}).items():
                if isinstance(source, dict):  # one file per architecture
                    source = source[arch]
                if isinstance(source, bytes):
                    written = self.work / f"{tag}-{arch}.file"
                    written.write_bytes(source)
                    source = written
                self._run("umoci", "insert", "--image", f"{self.layout}:{tag}-{arch}", str(source), target)
        if len(arches) == 1:
            return f"{tag}-{arches[0]}"
        index_json = json.loads((self.layout / "index.json").read_text())
        by_name = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index_json["manifests"]}
        manifests = []
        for arch in arches:
            descriptor = dict(by_name[f"{tag}-{arch}"])
            descriptor.pop("annotations", None)
            descriptor["platform"] = {"architecture": arch, "os": "linux"}
            manifests.append(descriptor)
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()
        digest = hashlib.sha256(data).hexdigest()
        (self.layout / "blobs" / "sha256" / digest).write_bytes(data)
        index_json["manifests"].append(
            {"mediaType": OCI_INDEX, "digest": f"sha256:{digest}", "size": len(data), "annotations": {"org.opencontainers.image.ref.name": tag}}
        )
        (self.layout / "index.json").write_text(json.dumps(index_json))
        return tag

    def push(self, tag: str, registry: DockerRegistry, repository: str, image_tag: str) -> None:
        self._run(
            "skopeo",
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{self.layout}:{tag}",
            f"docker://{registry.host}/{repository}:{image_tag}",
        )


STANDIN_TOOL = """#!/bin/sh
# airlock test STAND-IN for {name} {version} linux/{arch}. Not Kubernetes: it records every call.
# `version -o json` reports an API server at $AIRLOCK_STANDIN_SERVER_VERSION (default: its own version); `api-versions`
# prints what `kubectl api-versions` prints against a default cluster of that version (as of its minor);
# a verb named in $AIRLOCK_STANDIN_FAIL (e.g. drain) fails.
if [ -n "$AIRLOCK_STANDIN_LOG" ]; then echo "{name} $*" >> "$AIRLOCK_STANDIN_LOG"; fi
for word in "$@"; do
  case " $AIRLOCK_STANDIN_FAIL " in *" $word "*) echo "stand-in {name}: $word fails on request" >&2; exit 1 ;; esac
  case "$word" in
    version|--version)
      echo '{{"clientVersion": {{"gitVersion": "{version}"}}, "serverVersion": {{"gitVersion": "'"${{AIRLOCK_STANDIN_SERVER_VERSION:-{version}}}"'"}}}}'
      exit 0 ;;
    api-versions)
      # What a cluster of this version serves by default ($AIRLOCK_STANDIN_API_VERSIONS, space-separated, instead).
      printf '%s\n' ${{AIRLOCK_STANDIN_API_VERSIONS:-{api_versions}}}
      exit 0 ;;
  esac
done
exit 0
"""

# Shaped like flannel's kube-flannel.yml (its ConfigMap kube-flannel-cfg with cni-conf.json and net-conf.json, flanneld's
# args in the DaemonSet), so the node edits what it would edit in the real file.
FLANNEL_MANIFEST = """---
kind: Namespace
apiVersion: v1
metadata:
  name: kube-flannel
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
  labels:
    tier: node
    app: flannel
data:
  cni-conf.json: |
    {{
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        {{
          "type": "flannel",
          "delegate": {{
            "hairpinMode": true,
            "isDefaultGateway": true
          }}
        }},
        {{
          "type": "portmap",
          "capabilities": {{
            "portMappings": true
          }}
        }}
      ]
    }}
  net-conf.json: |
    {{
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {{
        "Type": "vxlan"
      }}
    }}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  selector:
    matchLabels:
      app: flannel
  template:
    metadata:
      labels:
        app: flannel
    spec:
      initContainers:
      - name: install-cni-plugin
        image: docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2
      containers:
      - name: kube-flannel
        image: docker.io/flannel/flannel:{version}
        command:
        - /opt/bin/flanneld
        args:
        - --ip-masq
        - --kube-subnet-mgr
"""

# What each version's kubeadm lists: the minors a node may run (1.33 only as the way off it), two patches of 1.36 and of 1.37
# (upgrades within a minor and across one), and labels that point inside the supported range.
VERSIONS = ("v1.33.7", "v1.34.4", "v1.35.3", "v1.36.3", "v1.36.4", "v1.37.1", "v1.37.2", "v1.38.0")
LABELS = {
    "stable": "v1.37.2", "stable-1": "v1.37.2", "latest": "v1.38.0", "latest-1": "v1.38.0",
    **{f"{kind}-1.{minor}": max((v for v in VERSIONS if v.startswith(f"v1.{minor}.")), key=lambda v: int(v.split(".")[2]))
       for kind in ("stable", "latest") for minor in range(33, 39)},
}
DEFAULT_VERSION = "v1.36.4"  # what the test bundles hold (stable-1.36)


def components_of_version(version: str) -> dict[str, str]:
    """coredns, etcd and pause as kubeadm of that minor and patch lists them (builder/versions.py's table)."""
    from builder.versions import images_for

    _, minor, patch = (int(part) for part in version.lstrip("v").split("."))
    row = images_for(minor, patch)
    return {"coredns": row.coredns, "pause": row.pause, "etcd": row.etcd}


COMPONENT_IMAGES = components_of_version(DEFAULT_VERSION)

# `kubectl api-versions` of a kubeadm cluster with default API server flags, by the minor that changed it
# (flowcontrol v1beta3 is served by default up to 1.31; resource.k8s.io/v1 from 1.34).
API_VERSIONS_1_31 = (
    "admissionregistration.k8s.io/v1 apiextensions.k8s.io/v1 apiregistration.k8s.io/v1 apps/v1 authentication.k8s.io/v1 "
    "authorization.k8s.io/v1 autoscaling/v1 autoscaling/v2 batch/v1 certificates.k8s.io/v1 coordination.k8s.io/v1 discovery.k8s.io/v1 "
    "events.k8s.io/v1 flowcontrol.apiserver.k8s.io/v1 flowcontrol.apiserver.k8s.io/v1beta3 networking.k8s.io/v1 node.k8s.io/v1 policy/v1 "
    "rbac.authorization.k8s.io/v1 scheduling.k8s.io/v1 storage.k8s.io/v1 v1"
)


def api_versions(version: str) -> str:
    minor = int(version.lstrip("v").split(".")[1])
    served = API_VERSIONS_1_31.split()
    if minor >= 32:
        served.remove("flowcontrol.apiserver.k8s.io/v1beta3")
    if minor >= 34:
        served.append("resource.k8s.io/v1")
    return " ".join(sorted(served))


@dataclass
class LocalUpstream:
    """Everything a build reads, served from this machine."""

    root: Path
    versions: tuple[str, ...] = VERSIONS
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))
    extra_images: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"docker.io/library/busybox:1.36": ("amd64", "arm64")})
    payload_bytes: int = 64
    # The builder's containerd, runc and CNI defaults, so that a build with no version flags finds its files here.
    cni_version: str = DEFAULT_CNI_VERSION
    crictl_version: str = "v1.36.0"  # besides every minor's default (builder/versions.py CRICTL_BY_MINOR), all served
    containerd_version: str = DEFAULT_CONTAINERD_VERSION  # served beside the newest patch of every supported minor
    runc_version: str | None = None  # None: the runc each served containerd release pairs with
    flannel_version: str = "v0.25.7"
    # Per exact version, what its kubeadm answers instead of COMPONENT_IMAGES (etcd changes within a minor).
    component_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # Per image reference, files added to each platform of it, one layer each: {path in the image: bytes or a file}.
    image_files: dict[str, dict] = field(default_factory=dict)
    # A real program served instead of a stand-in script, for every arch: "kubectl", "kubelet", "runc", or
    # "containerd", "ctr", "containerd-shim-runc-v2" inside the containerd tarball.
    release_binaries: dict[str, Path] = field(default_factory=dict)
    # What the OSV stand-in (tests/osv.py) knows: records that builds from this upstream are checked against.
    osv_records: list[dict] = field(default_factory=list)
    # Sign as Kubernetes does (tests/standin/sigstore.py): .sig/.cert beside kubeadm, kubelet and kubectl, and a cosign
    # signature beside every registry.k8s.io image; build_flags() then names the stand-in's trust root.
    signed: bool = False

    def components_of(self, version: str) -> dict[str, str]:
        return {**components_of_version(version), **self.component_overrides.get(version, {})}

    def start(self) -> LocalUpstream:
        self.root = Path(self.root)
        self.files_root = self.root / "files"
        self._write_release_tree()
        self.server = FileServer(self.files_root)
        self.osv = OsvStandIn(self.osv_records)
        self.registry = DockerRegistry(self.root / "registry")
        self.factory = ImageFactory(self.root / "images")
        # umoci builds one image at a time in the shared layout; skopeo pushes from it (read-only) in parallel.
        from concurrent.futures import ThreadPoolExecutor

        made = [
            (reference, self.factory.make(reference, arches, self.payload_bytes, self.image_files.get(reference)))
            for reference, arches in self.all_images().items()
        ]
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(self._push_made, reference, tag) for reference, tag in made]:
                future.result()
        self.signing = None
        if self.signed:
            self.sign_release()
        return self

    def _push_made(self, reference: str, tag: str) -> None:
        name, image_tag = reference.rsplit(":", 1)
        self.factory.push(tag, self.registry, name.split("/", 1)[1], image_tag)

    def sign_release(self) -> None:
        """Kubernetes' signatures, made by the Sigstore stand-in: every release binary and every registry.k8s.io image."""
        from tests.standin.sigstore import SigningStandin

        self.signing = SigningStandin(self.root / "sigstore")
        for version in self.versions:
            for arch in ("amd64", "arm64"):
                for name in ("kubeadm", "kubelet", "kubectl"):
                    self.signing.sign_file(self.release_file(version, arch, name))
        for reference in self.all_images():
            if reference.startswith("registry.k8s.io/"):
                self.sign_image(reference)

    def release_file(self, version: str, arch: str, name: str) -> Path:
        return self.files_root / f"release-server/release/{version}/bin/linux/{arch}/{name}"

    def sign_image(self, reference: str, **options):
        """A cosign signature beside `reference`'s image (its digest), as registry.k8s.io serves them; options: see SigningStandin.sign_image."""
        from tests.standin.sigstore import KUBERNETES_IMAGES

        name = reference.rsplit(":", 1)[0]
        return self.signing.sign_image(
            self.registry.url, name.split("/", 1)[1], self.upstream_digest(reference), name, options.pop("identity", KUBERNETES_IMAGES), **options
        )

    @property
    def release_url(self) -> str:
        return f"{self.server.url}/release-server"

    @property
    def github_url(self) -> str:
        return f"{self.server.url}/github"

    def mirror_flags(self) -> list[str]:
        flags = []
        for host in ("registry.k8s.io", "docker.io"):
            flags += ["--registry-mirror", f"{host}={self.registry.url}"]
        return flags

    def build_flags(self) -> list[str]:
        # flannel publishes kube-flannel.yml without a checksum: a build pins it (this stand-in's own sum).
        flannel = hashlib.sha256(FLANNEL_MANIFEST.format(version=self.flannel_version).encode()).hexdigest()
        signing = ["--trusted-root", str(self.signing.trusted_root_path)] if getattr(self, "signing", None) else []
        return [
            "--release-url", self.release_url, "--github-url", self.github_url, *self.mirror_flags(), "--flannel-sha256", flannel,
            "--osv-url", self.osv.url, *signing,
        ]  # fmt: skip

    def all_images(self) -> dict[str, tuple[str, ...]]:
        both = ("amd64", "arm64")
        found: dict[str, tuple[str, ...]] = {}
        for version in self.versions:
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
                found[f"registry.k8s.io/{name}:{version}"] = both
            components = self.components_of(version)
            found["registry.k8s.io/coredns/coredns:" + components["coredns"]] = both
            found["registry.k8s.io/pause:" + components["pause"]] = both
            found["registry.k8s.io/etcd:" + components["etcd"]] = both
        found[f"docker.io/flannel/flannel:{self.flannel_version}"] = both
        found["docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2"] = both
        found.update(self.extra_images)
        return found

    def push(self, reference: str, arches: tuple[str, ...]) -> None:
        """Make an image with umoci and push it as `reference` (its registry host mapped to the local registry)."""
        name, tag = reference.rsplit(":", 1)
        repository = name.split("/", 1)[1]
        self.factory.push(self.factory.make(reference, arches, self.payload_bytes, self.image_files.get(reference)), self.registry, repository, tag)

    def upstream_digest(self, reference: str) -> str:
        name, tag = reference.rsplit(":", 1)
        return self.registry.manifest_digest(name.split("/", 1)[1], tag)

    def _write(self, relative: str, data: bytes, checksum: str | None = None) -> Path:
        path = self.files_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if checksum == "bare":
            Path(f"{path}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
        elif checksum == "named":
            Path(f"{path}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        elif checksum == "sha256sum":
            Path(f"{path}.sha256sum").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        return path

    def serve_containerd(self, release: str, arch: str, programs: Path | None = None, replaced: dict[str, Path] | None = None) -> None:
        """containerd-RELEASE-linux-ARCH.tar.gz and its .sha256sum, laid out as containerd's release archives are
        (bin/containerd, bin/containerd-shim-runc-v2, bin/ctr): stand-in scripts, or the real programs in `programs`.
        Real programs must be that release (`containerd --version` and `ctr --version` are asked). `replaced`: single
        programs put in instead, of any release (what is read is their build info, not their version)."""
        names = ("containerd", "containerd-shim-runc-v2", "ctr")
        if programs is None:
            files = {f"bin/{name}": f"#!/bin/sh\n# stand-in {name} {arch}\n".encode() for name in names}
        else:
            for name in ("containerd", "ctr"):
                answer = subprocess.run([str(programs / name), "--version"], capture_output=True, text=True, check=True, timeout=30).stdout.split()
                if len(answer) < 3 or answer[2].lstrip("v").split("+")[0].split("~")[0] != release:
                    raise ValueError(f"{programs / name} is not containerd {release}: {' '.join(answer)}")
            files = {f"bin/{name}": (programs / name).read_bytes() for name in names}
        files.update({f"bin/{name}": path.read_bytes() for name, path in (replaced or {}).items()})
        archive = f"containerd-{release}-linux-{arch}.tar.gz"
        self._write(f"github/containerd/containerd/releases/download/v{release}/{archive}", self._tarball(files, level=1), "sha256sum")

    @staticmethod
    def _tarball(files: dict[str, bytes], gz: bool = True, level: int = 9) -> bytes:
        import io

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w", **({"compresslevel": level} if gz else {})) as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755
                info.mtime = 1700000000
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def _write_release_tree(self) -> None:
        release = "release-server/release"
        for label, version in self.labels.items():
            self._write(f"{release}/{label}.txt", f"{version}\n".encode())
        for version in self.versions:
            for arch in ("amd64", "arm64"):
                base = f"{release}/{version}/bin/linux/{arch}"
                self._write(f"{base}/kubeadm", standin_kubeadm(version, arch, self.components_of(version)).encode(), "bare")
                kubelet = self.release_binaries["kubelet"].read_bytes() if "kubelet" in self.release_binaries else standin_kubelet(version, arch).encode()
                self._write(f"{base}/kubelet", kubelet, "bare")
                kubectl = self.release_binaries["kubectl"].read_bytes() if "kubectl" in self.release_binaries else None
                self._write(f"{base}/kubectl", kubectl or STANDIN_TOOL.format(name="kubectl", version=version, arch=arch, api_versions=api_versions(version)).encode(), "bare")
        github = "github"
        # containerd: the given release and the newest patch of every supported minor, each with the runc it pairs with.
        containerd_versions = sorted({self.containerd_version, *(patch for patch, _ in CONTAINERD_RELEASES.values())})
        runc_versions = {self.runc_version} if self.runc_version else {default_runc_version(version) for version in containerd_versions}
        runc_sums = []
        for arch in ("amd64", "arm64"):
            cni = f"cni-plugins-linux-{arch}-{self.cni_version}.tgz"
            self._write(
                f"{github}/containernetworking/plugins/releases/download/{self.cni_version}/{cni}",
                self._tarball(
                    {
                        f"./{p}": f"#!/bin/sh\n# stand-in CNI plugin {p} {arch}\n".encode()
                        for p in ("bridge", "host-local", "loopback", "portmap", "flannel")
                    }
                ),
                "named",
            )
            from builder.versions import CRICTL_BY_MINOR

            for crictl_version in sorted({self.crictl_version, *CRICTL_BY_MINOR.values()}):
                crictl = f"crictl-{crictl_version}-linux-{arch}.tar.gz"
                self._write(
                    f"{github}/kubernetes-sigs/cri-tools/releases/download/{crictl_version}/{crictl}",
                    self._tarball({"crictl": f"#!/bin/sh\n# stand-in crictl {crictl_version} {arch}\n".encode()}),
                    "bare",
                )
            # Real programs named in release_binaries stand in whatever the release (the contents tests read their Go build info).
            replaced = {name: path for name, path in self.release_binaries.items() if name in ("containerd", "containerd-shim-runc-v2", "ctr")}
            for containerd_version in containerd_versions:
                self.serve_containerd(containerd_version, arch, replaced=replaced)
            runc = self.release_binaries["runc"].read_bytes() if "runc" in self.release_binaries else f"#!/bin/sh\n# stand-in runc {arch}\n".encode()
            for runc_version in runc_versions:
                self._write(f"{github}/opencontainers/runc/releases/download/{runc_version}/runc.{arch}", runc)
            runc_sums.append(f"{hashlib.sha256(runc).hexdigest()}  runc.{arch}")
        for runc_version in runc_versions:
            self._write(f"{github}/opencontainers/runc/releases/download/{runc_version}/runc.sha256sum", ("\n".join(runc_sums) + "\n").encode())
        self._write(
            f"{github}/flannel-io/flannel/releases/download/{self.flannel_version}/kube-flannel.yml",
            FLANNEL_MANIFEST.format(version=self.flannel_version).encode(),
        )

    def close(self) -> None:
        self.server.close()
        self.registry.close()
        self.osv.close()
        if getattr(self, "signing", None):
            self.signing.close()


def main() -> None:
    """Serve a local upstream until Ctrl-C or SIGTERM: `python -m tests.upstream [DIR]`.

    The first line on stdout is the build flags that point `airlock build` at it.
    """
    import signal
    import sys

    def stop(*_) -> None:
        raise KeyboardInterrupt

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/airlock-upstream")
    # SIGTERM stops it as Ctrl-C does, so the docker-registry child is stopped too, never orphaned.
    signal.signal(signal.SIGTERM, stop)
    upstream = LocalUpstream(root)
    try:
        upstream.start()
        print(" ".join(upstream.build_flags()), flush=True)
        print(
            f"local upstream in {root}: Kubernetes {', '.join(upstream.versions)} (kubeadm, kubelet, kubectl are stand-ins), "
            f"registry {upstream.registry.url}\n"
            f"try: airlock build -o k8s.tar --kubernetes-version stable-1.36 --sign-key keys/airlock.key {' '.join(upstream.build_flags())}\n"
            "stop with Ctrl-C or SIGTERM",
            file=sys.stderr,
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # Whatever had started when the signal came (it may come while images are still being made).
        for part in (getattr(upstream, "server", None), getattr(upstream, "registry", None), getattr(upstream, "osv", None)):
            if part is not None:
                part.close()


if __name__ == "__main__":
    main()


class TokenAuthRegistry:
    """A registry front that behaves like registry.k8s.io or Docker Hub: bearer
    tokens scoped per repository (issued only for Basic credentials), and blob
    GETs redirected to another host ("blob storage") that must never see the
    registry's Authorization header."""

    def __init__(self, backend: DockerRegistry, username: str = "puller", password: str = "s3cret"):
        import base64

        self.backend = backend
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.tokens_issued: list[str] = []
        self.leaked_authorization: list[str] = []
        front = self

        def relay(handler, url: str, method: str, extra: dict | None = None) -> None:
            request = urllib.request.Request(url, method=method, headers={k: v for k, v in (extra or {}).items() if v})
            try:
                response = urllib.request.urlopen(request, timeout=30)
            except urllib.error.HTTPError as error:
                response = error
            body = response.read() if method != "HEAD" else b""
            handler.send_response(response.status if hasattr(response, "status") else response.code)
            for name in ("Content-Type", "Docker-Content-Digest", "Content-Range"):
                if response.headers.get(name):
                    handler.send_header(name, response.headers[name])
            handler.send_header("Content-Length", response.headers.get("Content-Length", str(len(body))))
            handler.end_headers()
            handler.wfile.write(body)

        class Blobs(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.headers.get("Authorization"):
                    front.leaked_authorization.append(self.headers["Authorization"])
                    self.send_error(400, "blob storage does not take registry credentials")
                    return
                # /storage/<repository>/<digest>
                _, _, rest = self.path.partition("/storage/")
                repository, _, digest = rest.rpartition("/")
                relay(self, f"{backend.url}/v2/{repository}/blobs/{digest}", "GET", {"Range": self.headers.get("Range")})

        self.blob_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blobs)
        blob_url = f"http://127.0.0.1:{self.blob_server.server_address[1]}"

        class Front(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._handle("HEAD")

            def do_GET(self):
                self._handle("GET")

            def _handle(self, method: str):
                path = self.path.split("?", 1)[0]
                if path == "/token":
                    self._token()
                    return
                if path == "/v2/":
                    self._challenge("")
                    return
                repository = path[len("/v2/") :].rsplit("/", 2)[0]
                if self.headers.get("Authorization") != f"Bearer token-for-{repository}":
                    self._challenge(repository)
                    return
                if "/blobs/" in path and method == "GET":
                    self.send_response(307)
                    self.send_header("Location", f"{blob_url}/storage/{repository}/{path.rsplit('/', 1)[1]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                relay(self, f"{backend.url}{self.path}", method, {"Accept": self.headers.get("Accept"), "Range": self.headers.get("Range")})

            def _challenge(self, repository: str):
                self.send_response(401)
                scope = f',scope="repository:{repository}:pull"' if repository else ""
                self.send_header("WWW-Authenticate", f'Bearer realm="{front.url}/token",service="test-registry"{scope}')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _token(self):
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                scope = query.get("scope", [""])[0]
                if self.headers.get("Authorization") != front.basic or not scope.startswith("repository:"):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                repository = scope.split(":")[1]
                front.tokens_issued.append(repository)
                body = json.dumps({"token": f"token-for-{repository}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.front_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
        self.host = f"127.0.0.1:{self.front_server.server_address[1]}"
        self.url = f"http://{self.host}"
        for server in (self.blob_server, self.front_server):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def docker_config(self, home: Path, username: str = "puller", password: str = "s3cret") -> None:
        import base64

        config = home / ".docker" / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"auths": {self.host: {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}}}))

    def close(self) -> None:
        for server in (self.front_server, self.blob_server):
            server.shutdown()
            server.server_close()
