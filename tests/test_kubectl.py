"""Every kubectl command line airlock can run parses with the real kubectl, 1.27 to 1.33.

The lines come from installer.commands.catalogue(), the one place that builds them. Each runs
against a server that is not there (https://127.0.0.1:1): a line whose flags and verb kubectl
knows gets as far as dialling and fails with a connection error; a flag or verb it does not know
fails with a usage error first. In CI a missing kubectl is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from installer import commands

WANTED_MINORS = range(27, 34)
SEARCH = ("/usr/lib/google-cloud-sdk/bin", "/usr/local/bin", "/opt/kubectl", "/usr/bin")
USAGE_ERRORS = ("unknown flag", "unknown shorthand flag", "unknown command", "flag needs an argument", "invalid argument", "see 'kubectl")
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: nobody
  user:
    token: not-a-token
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
"""
MANIFEST = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: default\ndata:\n  a: b\n"


def client_minor(binary: str) -> int | None:
    result = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    match = re.search(r'"minor":\s*"(\d+)', result.stdout)
    return int(match.group(1)) if match else None


def find_kubectls() -> dict[int, str]:
    found: dict[int, str] = {}
    candidates = [shutil.which("kubectl") or ""]
    for directory in SEARCH:
        if os.path.isdir(directory):
            candidates += sorted(str(p) for p in Path(directory).glob("kubectl*") if p.is_file() and os.access(p, os.X_OK))
    for candidate in filter(None, candidates):
        minor = client_minor(candidate)
        if minor is not None:
            found.setdefault(minor, candidate)
    return found


KUBECTLS = find_kubectls()


def require_kubectl(minor: int) -> str:
    if minor in KUBECTLS:
        return KUBECTLS[minor]
    message = f"no kubectl 1.{minor} found (looked in PATH and {', '.join(SEARCH)})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.parametrize("minor", WANTED_MINORS, ids=[f"1.{m}" for m in WANTED_MINORS])
def test_every_kubectl_line_airlock_builds_parses(minor, tmp_path):
    kubectl = require_kubectl(minor)
    kubeconfig, manifest = tmp_path / "kubeconfig", tmp_path / "probe.yaml"
    kubeconfig.write_text(KUBECONFIG)
    manifest.write_text(MANIFEST)
    lines = commands.catalogue(kubectl_path=kubectl, kubeconfig=str(kubeconfig), node="node-1", manifest=str(manifest))["kubectl"]
    verbs = {line[3] for line in lines}
    assert {"drain", "uncordon", "apply", "version"} <= verbs
    for line in lines:
        probe = [*line[:3], "--request-timeout=2s", *line[3:]]
        result = subprocess.run(probe, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        said = result.stderr.lower()
        assert result.returncode != 0, f"{' '.join(line[3:])}: reached nothing yet succeeded?"
        assert not any(usage in said for usage in USAGE_ERRORS), f"kubectl 1.{minor} refuses `{' '.join(line[3:])}`: {result.stderr}"
        assert "refused" in said or "dial tcp" in said, f"kubectl 1.{minor} `{' '.join(line[3:])}`: {result.stderr}"


def test_the_probe_catches_a_flag_kubectl_lacks(tmp_path):
    """The same probe fails for a flag that does not exist, so a passing line really parsed."""
    kubectl = require_kubectl(max(KUBECTLS) if KUBECTLS else 33)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    line = commands.kubectl_drain(kubectl, str(kubeconfig), "node-1") + ["--delete-local-data-please"]
    result = subprocess.run(line, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown flag: --delete-local-data-please" in result.stderr
