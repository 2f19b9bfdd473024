"""node.yaml is input, not code: hostile values are refused by type, and the serializers hold even without that check.

Each proof has two walls. The first: NodeConfig refuses the value, naming the
field. The second: the file written from a NodeConfig built around the check
(as a later code path might) still parses to exactly the intended structure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bundle.containerd import hosts_toml
from installer.node import KubeletSettings, NodeConfig, NodeError
from installer.render import kubeadm_config, unitfiles
from installer.render.units import command, environment, quote
from tests.conftest import airlock, airlock_node, require

TOKEN = "abcdef.0123456789abcdef"
HASH = "sha256:" + "a" * 64
FACTS = kubeadm_config.NodeFacts("v1.36.4", "cp1", "10.0.0.10")
JOIN = {"controlPlaneEndpoint": "10.0.0.10:6443", "token": TOKEN, "caCertHashes": [HASH]}
EXEC_START_PRE = '"\nExecStartPre=+/bin/sh -c "touch /root/owned"\nX="'

# (node.yaml document, the field the error must name)
HOSTILE = [
    ({"nodeName": 'cp1"\n  kubeletExtraArgs:\n    anonymous-auth: "true'}, "nodeName"),
    ({"clusterName": 'k"\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nx: "'}, "clusterName"),
    ({**JOIN, "controlPlaneEndpoint": '10.0.0.10:6443"\n    unsafeSkipCAVerification: true\n    x: "'}, "controlPlaneEndpoint"),
    ({"registry": {"ca": '/ca.crt"\n[host."http://evil:5000"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n#'}}, "registry.ca"),
    ({"registry": {"listen": "127.0.0.1:5000" + EXEC_START_PRE}}, "registry.listen"),
    ({"registry": {"tlsCert": "/c.crt" + EXEC_START_PRE, "tlsKey": "/c.key"}}, "registry.tlsCert"),
    ({"registry": {"tlsCert": "/c.crt", "tlsKey": "/c.key" + EXEC_START_PRE}}, "registry.tlsKey"),
    ({"kubelet": {"extraArgs": {"node-labels": "a=b --anonymous-auth=true"}}}, "kubelet.extraArgs"),
    ({"kubelet": {"extraArgs": {"--anonymous-auth": "true"}}}, "kubelet.extraArgs"),
    ({"kubelet": {"extraArgs": ["node-labels=a=b"]}}, "kubelet.extraArgs"),
    ({"kubelet": {"maxPods": "many"}}, "kubelet.maxPods"),
    ({"kubelet": {"maxPods": True}}, "kubelet.maxPods"),
    ({"kubelet": {"cgroupDriver": "systemd\nx"}}, "kubelet.cgroupDriver"),
    ({"registry": {"listen": "127.0.0.1:http"}}, "registry.listen"),
    ({"registry": {"listen": "127.0.0.1:70000"}}, "registry.listen"),
    ({"registry": {"mirror": "https://user:pw@10.0.0.10:5443"}}, "registry.mirror"),
    ({"registry": {"mirror": "ftp://10.0.0.10"}}, "registry.mirror"),
    ({"advertiseAddress": "10.0.0.300"}, "advertiseAddress"),
    ({"podSubnet": "10.244.0.0/16\nx"}, "podSubnet"),
    ({"certSANs": "cp1"}, "certSANs"),
    ({"certSANs": ["cp1", "a b"]}, "certSANs"),
    ({"token": "abc"}, "token"),
    ({"caCertHashes": ["md5:00"]}, "caCertHashes"),
    ({"certificateKey": "zz"}, "certificateKey"),
    ({"criSocket": "unix:///run/c.sock\nx"}, "criSocket"),
    ({"registry": {"ca": "relative/ca.crt"}}, "registry.ca"),
    ({"registry": {"tlsCert": "/c.crt"}}, "registry.tlsCert"),
    ({"nodeName": "cp1", "nodename": "cp2"}, "nodename"),
    ({"registry": {"listen": "127.0.0.1:5000", "port": 5000}}, "registry.port"),
    ({"kubelet": {"maxpods": 10}}, "kubelet.maxpods"),
    ({"kubelet": "systemd"}, "kubelet"),
    ({"kubelet": {"extraArgs": {"node-ip": "10.0.0.9"}}}, "kubelet.extraArgs.node-ip"),
    # A trailing newline is not part of a name, a token or a flag value ($ in a pattern would let it through).
    ({"nodeName": "cp1\n"}, "nodeName"),
    ({"token": TOKEN + "\n"}, "token"),
    ({"kubelet": {"extraArgs": {"node-labels": "a=b\n"}}}, "kubelet.extraArgs"),
    ({"registry": {"ca": "/ca.crt\n"}}, "registry.ca"),
    ({"controlPlaneEndpoint": "api.site\n:6443"}, "controlPlaneEndpoint"),
]


@pytest.mark.parametrize(("document", "field"), HOSTILE, ids=[f"{field}-{i}" for i, (_, field) in enumerate(HOSTILE)])
def test_hostile_node_yaml_is_refused_naming_the_field(document, field):
    with pytest.raises(NodeError) as caught:
        NodeConfig.from_dict(document, "node.yaml")
    message = str(caught.value)
    assert message.startswith("node.yaml: ") and field in message and "\n" not in message


def test_a_good_node_yaml_keeps_its_values():
    config = NodeConfig.from_dict(
        {
            "nodeName": "cp1.site-7",
            "advertiseAddress": "10.0.0.10",
            "controlPlaneEndpoint": "api.site-7:6443",
            "certSANs": ["10.0.0.10", "api.site-7"],
            "registry": {"listen": "0.0.0.0:5443", "tlsCert": "/etc/airlock/pki/registry.crt", "tlsKey": "/etc/airlock/pki/registry.key", "ca": "/etc/airlock/pki/ca.crt"},
            "kubelet": {"cgroupDriver": "cgroupfs", "maxPods": "200", "extraArgs": {"node-labels": "site=plant-7,tier=edge", "register-with-taints": "edge=true:NoSchedule"}},
            **{k: v for k, v in JOIN.items() if k != "controlPlaneEndpoint"},
        }
    )
    assert config.kubelet == KubeletSettings("cgroupfs", 200, {"node-labels": "site=plant-7,tier=edge", "register-with-taints": "edge=true:NoSchedule"})
    assert config.control_plane_endpoint == "api.site-7:6443" and config.registry_listen == "0.0.0.0:5443"
    assert NodeConfig.from_dict({}) == NodeConfig()


def test_cli_names_the_bad_field_in_one_line(keys, tmp_path):
    config = tmp_path / "node.yaml"
    config.write_text("kubelet:\n  maxPods: lots\n")
    result = airlock("init", tmp_path / "missing.tar", "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "root", "--config", config)
    assert result.returncode == 1 and "kubelet.maxPods" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["fifo", "directory", "too large"])
def test_a_config_that_is_not_a_small_regular_file_is_refused_in_one_line(keys, tmp_path, kind):
    """--config a FIFO (nobody writes: reading it would wait forever), a directory or a huge file: one line, at once."""
    config = tmp_path / "node.yaml"
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "directory":
        config.mkdir()
    else:
        config.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    result = airlock_node("init", tmp_path / "missing.tar", "--key", keys["ed25519"] / "airlock.pub", "--root", tmp_path / "root", "--config", config, timeout=60)
    expected = {"fifo": "is not a regular file", "directory": "is not a regular file", "too large": "byte cap of a node.yaml"}[kind]
    assert result.returncode == 1 and f"--config {config}: " in result.stderr and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# The second wall: values that got past the schema still cannot change a file's structure.


def bypass(**fields) -> NodeConfig:
    return replace(NodeConfig(), **fields)


def test_kubeadm_documents_keep_their_shape_whatever_the_values():
    node_name = HOSTILE[0][0]["nodeName"]
    cluster_name = HOSTILE[1][0]["clusterName"]
    facts = replace(FACTS, node_name=node_name)
    text = kubeadm_config.dump(kubeadm_config.init_documents(bypass(cluster_name=cluster_name), facts, TOKEN, "b" * 64), "airlock\nsecond line")
    documents = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in documents] == ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"]
    init, cluster, _ = documents
    assert init["nodeRegistration"]["name"] == node_name and cluster["clusterName"] == cluster_name
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.0.0.10"}]
    endpoint = HOSTILE[2][0]["controlPlaneEndpoint"]
    config = bypass(control_plane_endpoint=endpoint, token=TOKEN, ca_cert_hashes=(HASH,))
    (join,) = yaml.safe_load_all(kubeadm_config.dump(kubeadm_config.join_documents(config, FACTS, False), "airlock"))
    assert join["discovery"] == {"bootstrapToken": {"apiServerEndpoint": endpoint, "token": TOKEN, "caCertHashes": [HASH]}}


def test_kubelet_flags_stay_one_value_each():
    config = bypass(kubelet=KubeletSettings(extra_args={"node-labels": "a=b --anonymous-auth=true"}))
    for version, expected in (("v1.36.4", [{"name": "node-labels", "value": "a=b --anonymous-auth=true"}, {"name": "node-ip", "value": "10.0.0.10"}]),
                              ("v1.33.7", [{"name": "node-labels", "value": "a=b --anonymous-auth=true"}, {"name": "node-ip", "value": "10.0.0.10"}])):
        documents = kubeadm_config.init_documents(config, replace(FACTS, version=version), TOKEN, "b" * 64)
        args = documents[0]["nodeRegistration"]["kubeletExtraArgs"]
        assert (sorted(args, key=lambda a: a["name"]) if isinstance(args, list) else args) == (sorted(expected, key=lambda a: a["name"]) if isinstance(expected, list) else expected)


def test_hosts_toml_ca_cannot_add_a_mirror():
    ca = HOSTILE[3][0]["registry"]["ca"]
    mirror = "http://127.0.0.1:5000"
    parsed = tomllib.loads(hosts_toml("airlock", mirror, {mirror: {"capabilities": ["pull", "resolve"], "ca": ca}}))
    assert list(parsed["host"]) == [mirror] and parsed["host"][mirror]["ca"] == ca and "skip_verify" not in parsed["host"][mirror]


def unit_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting, read the way systemd reads lines."""
    section, out = "", []
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((section, key, value))
    return out


def test_registry_unit_arguments_stay_arguments():
    listen, store = "127.0.0.1:5000" + EXEC_START_PRE, "/$HOME/%n"
    text = unitfiles.registry_service(["/usr/local/bin/airlock"], store, listen)
    settings = unit_settings(text)
    assert [k for _, k, _ in settings].count("ExecStart") == 1 and not any(k.startswith("ExecStartPre") for _, k, _ in settings)
    (exec_start,) = [v for _, k, v in settings if k == "ExecStart"]
    assert "%n" not in exec_start.replace("%%", "") and "$HOME" not in exec_start.replace("$$", "")
    argv = shlex.split(exec_start.replace("\\n", "\n").replace("%%", "%").replace("$$", "$"))
    assert argv == ["/usr/local/bin/airlock", "registry", "serve", "--store", store, "--listen", listen]


def test_proxy_variables_stay_one_environment_value(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128" + EXEC_START_PRE)
    for text in (unitfiles.containerd_service(), unitfiles.kubeadm_dropin()):
        settings = unit_settings(text)
        assert not any(k.startswith("ExecStartPre") and "owned" in v for _, k, v in settings)
        proxy = [v for _, k, v in settings if k == "Environment" and "HTTPS_PROXY" in v]
        assert len(proxy) == 1 and proxy[0].startswith('"HTTPS_PROXY=') and proxy[0].endswith('"')


def test_unit_quoting_rules():
    assert quote('a "b" \\ %i $X') == '"a \\"b\\" \\\\ %%i $$X"'
    assert environment("NO_PROXY", "a,$b,%c") == '"NO_PROXY=a,$b,%%c"'
    assert command(["/usr/bin/x", "two words", "\n"]) == '/usr/bin/x "two words" "\\n"'
    for program in ("+/bin/sh", "-/bin/sh", "relative", "/bin/s h"):
        with pytest.raises(NodeError):
            command([program])


def systemd_root(tmp_path: Path) -> Path:
    """A root holding systemd's own units and stand-in programs, so `systemd-analyze verify --root` can load ours."""
    root = tmp_path / "sysroot"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for program in ("/usr/local/bin/kubelet", "/usr/local/bin/containerd", "/usr/local/bin/airlock", "/sbin/modprobe"):
        (root / program.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy("/bin/true", root / program.lstrip("/"))
    return root


def test_rendered_units_pass_systemd_analyze_verify(tmp_path, monkeypatch):
    require("systemd-analyze")
    monkeypatch.setenv("HTTP_PROXY", 'http://proxy:3128/"x y"%h$USER')
    root = systemd_root(tmp_path)
    units = root / "etc/systemd/system"
    (units / "kubelet.service.d").mkdir(parents=True)
    (units / "kubelet.service").write_text(unitfiles.kubelet_service())
    (units / "kubelet.service.d/10-kubeadm.conf").write_text(unitfiles.kubeadm_dropin())
    (units / "containerd.service").write_text(unitfiles.containerd_service())
    (units / "airlock-registry.service").write_text(
        unitfiles.registry_service(["/usr/local/bin/airlock"], "/var/lib/airlock/store", "127.0.0.1:5000", {"tls.crt": "/etc/airlock/pki/a.crt", "tls.key": "/etc/airlock/pki/a.key"})
    )
    for unit in ("kubelet.service", "containerd.service", "airlock-registry.service"):
        result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", unit], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and not result.stderr.strip(), f"{unit}: {result.stderr}"
    # The check can fail: an unknown setting and a missing program are reported.
    (units / "kubelet.service.d/99-broken.conf").write_text("[Service]\nBogus=1\nExecStartPre=/nowhere/x\n")
    broken = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "kubelet.service"], capture_output=True, text=True, timeout=60)
    assert "Bogus" in broken.stderr and "/nowhere/x" in broken.stderr
