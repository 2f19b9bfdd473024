"""A private containerd (Debian's 1.6) for tests: own config, root, state and socket."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class Containerd:
    def __init__(self, root: Path, netns: str | None = None, config_text: str | None = None, prefix: list[str] | None = None):
        """`netns` (a name from `ip netns add`) or `prefix` (e.g. NodeNetwork.prefix) runs it on a node's own network."""
        self.root = Path(root)
        self.prefix = prefix or (["nsenter", f"--net=/run/netns/{netns}"] if netns else [])
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket = self.root / "c.sock"
        self.certs_d = self.root / "certs.d"
        self.certs_d.mkdir(exist_ok=True)
        config = self.root / "config.toml"
        if config_text is None:
            config_text = (
                "version = 2\n"
                f'root = "{self.root / "root"}"\n'
                f'state = "{self.root / "state"}"\n'
                f'[grpc]\n  address = "{self.socket}"\n'
                '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
                f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{self.certs_d}"\n'
            )
        config.write_text(config_text)
        binary = shutil.which("containerd")
        if binary is None:
            raise RuntimeError("containerd is not installed (apt-get install containerd)")
        self.log = open(self.root / "containerd.log", "wb")
        self.process = subprocess.Popen([*self.prefix, binary, "--config", str(config)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"containerd did not start: {(self.root / 'containerd.log').read_text()[-800:]}")
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, namespace: str = "k8s.io", timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "-a", str(self.socket), "-n", namespace, *args], capture_output=True, text=True, timeout=timeout)
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
