"""A private containerd for tests: own config, root, state and socket.

Two releases: Debian 12's containerd 1.6 on PATH (config `version = 2`), and
Debian sid's containerd 2.x unpacked by `make test` into .dist-cache/containerd-sid
(tests/debian_sid.py), which reads `version = 3`. Both run bookworm's runc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import tomlkit

from bundle.containerd import config_version
from tests.debian_sid import DEFAULT_ROOT as SID_ROOT
from tests.debian_sid import installed

V2_CRI = "io.containerd.grpc.v1.cri"
V3_IMAGES = "io.containerd.cri.v1.images"


def sid_programs() -> Path:
    """The bin directory of sid's containerd 2.x; a test without it skips (fails in CI: `make test` fetches it)."""
    if installed(SID_ROOT) is None or shutil.which("runc") is None:
        message = f"containerd 2.x from Debian sid is not in {SID_ROOT} (`make containerd-sid` fetches it), or runc is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SID_ROOT / "usr/bin"


def release_of(program: str | Path) -> str:
    """`containerd --version`'s release: `1.6.20~ds1`, `2.1.9+unknown`."""
    words = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=True, timeout=30).stdout.split()
    return words[2].lstrip("v")


def private_config(config: str, root: Path, certs_d: Path | None = None) -> str:
    """`config` with every path the daemon owns moved under `root` (tests run beside each other) and, when given,
    the CRI registry's config_path pointed at `certs_d`. Nothing else changes: this is the config under test."""
    document = tomlkit.parse(config)
    version = int(document.get("version", 1))
    document["root"] = str(root / "root")
    document["state"] = str(root / "state")
    plugins = document.setdefault("plugins", tomlkit.table(is_super_table=True))
    if version >= 4:
        # containerd 2.3 reads its listeners from the server plugins (config version 4).
        for name, address in (("grpc", root / "c.sock"), ("ttrpc", root / "c.sock.ttrpc"), ("debug", ""), ("metrics", "")):
            plugins.setdefault(f"io.containerd.server.v1.{name}", tomlkit.table())["address"] = str(address)
    else:
        for section, address in (("grpc", root / "c.sock"), ("ttrpc", root / "c.sock.ttrpc"), ("debug", ""), ("metrics", "")):
            document.setdefault(section, tomlkit.table())["address"] = str(address)
    for name, key, value in (("io.containerd.internal.v1.opt", "path", root / "opt"), ("io.containerd.nri.v1.nri", "socket_path", root / "nri.sock")):
        if name in plugins:
            plugins[name][key] = str(value)
    if version >= 3:
        # NRI is on by default in 2.x; its socket would be shared with every other daemon on the machine.
        plugins.setdefault("io.containerd.nri.v1.nri", tomlkit.table())["socket_path"] = str(root / "nri.sock")
    if certs_d is not None:
        cri = plugins.setdefault(V3_IMAGES if version >= 3 else V2_CRI, tomlkit.table())
        cri.setdefault("registry", tomlkit.table())["config_path"] = str(certs_d)
    return tomlkit.dumps(document)


class Containerd:
    def __init__(
        self, root: Path, netns: str | None = None, config_text: str | None = None, prefix: list[str] | None = None, programs: Path | None = None
    ):
        """Start containerd with `config_text` (default: a minimal one of the layout it reads) under `root`.

        `netns` (a name from `ip netns add`) or `prefix` (e.g. NodeNetwork.prefix) runs it on a node's own network
        (only the network namespace: `ip netns exec` would also remount /sys and hide the cgroup mount runc needs).
        `programs` is a bin directory holding containerd, ctr and the runc shim (sid's 2.x); default PATH's (1.6).
        """
        self.root = Path(root)
        self.prefix = prefix or (["nsenter", f"--net=/run/netns/{netns}"] if netns else [])
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket = self.root / "c.sock"
        self.certs_d = self.root / "certs.d"
        self.certs_d.mkdir(exist_ok=True)
        self.env = {**os.environ, "PATH": f"{programs}:{os.environ.get('PATH', '')}"} if programs else dict(os.environ)
        binary = shutil.which("containerd", path=self.env["PATH"])
        self.ctr_program = shutil.which("ctr", path=self.env["PATH"])
        if binary is None or self.ctr_program is None:
            raise RuntimeError("containerd is not installed (apt-get install containerd)")
        self.release = release_of(binary)
        config = self.root / "config.toml"
        if config_text is None:
            layout = config_version(self.release)
            if layout >= 3:
                base = f'version = {layout}\n[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
            else:
                base = f'version = 2\n[plugins."{V2_CRI}"]\n  disable_tcp_service = true\n'
            config_text = private_config(base, self.root, self.certs_d)
        config.write_text(config_text)
        self.log = open(self.root / "containerd.log", "wb")
        # The shim is found on PATH: sid's own containerd-shim-runc-v2 beside sid's containerd.
        self.process = subprocess.Popen([*self.prefix, binary, "--config", str(config)], stdout=self.log, stderr=self.log, env=self.env)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"containerd did not start: {(self.root / 'containerd.log').read_text()[-800:]}")
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, namespace: str = "k8s.io", timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.ctr_program, "-a", str(self.socket), "-n", namespace, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def plugin_status(self, plugin_type: str, plugin_id: str) -> str:
        """The STATUS column of `ctr plugins ls` for one plugin ("ok", "error", "skip"), "" when it is not listed."""
        for line in self.ctr("plugins", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == plugin_type and fields[1] == plugin_id:
                return fields[-1]
        return ""

    def log_text(self) -> str:
        return (self.root / "containerd.log").read_text(errors="replace")

    def hosts(self, upstream: str, text: str) -> None:
        directory = self.certs_d / upstream
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(text)

    def pull(self, reference: str, platforms: str | None = None) -> subprocess.CompletedProcess:
        args = ["images", "pull", "--hosts-dir", str(self.certs_d)]
        for platform in (platforms or "").split(","):
            if platform:
                args += ["--platform", platform]
        return self.ctr(*args, reference)

    def image_digests(self) -> dict[str, str]:
        lines = self.ctr("images", "ls").stdout.splitlines()[1:]
        # The CRI plugin adds image-ID references (sha256:...) of its own; only names count.
        return {line.split()[0]: line.split()[2] for line in lines if line.strip() and not line.startswith("sha256:")}

    def __enter__(self) -> Containerd:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the daemon and remove its private root."""
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
