"""An operator's containerd config is merged, and a REAL containerd starts on the result with its CRI plugin loaded.

The corpus (tests/data/containerd/): containerd 1.6's real `config default`,
1.7's written from containerd's source, an old-style config with mirrors, TLS
and credentials, a containerd 2.x (version 3) layout, and a hand-kept file
full of comments. Each is merged as the runtime phase merges it, pointed at a
private root, state and socket, and started with Debian's containerd 1.6.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit

from installer.containerd_config import V2_CRI, V3_IMAGES, hosts_toml, merge
from tests.conftest import require
from tests.containerd import Containerd

CORPUS = Path(__file__).parent / "data/containerd"
CERTS = "/etc/containerd/certs.d"
PAUSE = "registry.k8s.io/pause:3.10"


def merged(name: str):
    return merge((CORPUS / f"{name}.toml").read_text(), CERTS, PAUSE, True)


def private(config: str, root: Path) -> str:
    """The same config, but every path the daemon owns moved under `root` (the test runs beside other tests)."""
    document = tomlkit.parse(config)
    document["root"] = str(root / "root")
    document["state"] = str(root / "state")
    for section, address in (("grpc", root / "c.sock"), ("ttrpc", root / "c.sock.ttrpc"), ("debug", "")):
        if section not in document:
            document[section] = tomlkit.table()
        document[section]["address"] = str(address)
    plugins = document.setdefault("plugins", tomlkit.table())
    for name, key, value in (("io.containerd.internal.v1.opt", "path", root / "opt"), ("io.containerd.nri.v1.nri", "socket_path", root / "nri.sock")):
        if name in plugins:
            plugins[name][key] = str(value)
    version = document.get("version")
    registry = plugins[V3_IMAGES if version == 3 else V2_CRI]["registry"]
    if registry.get("config_path"):
        registry["config_path"] = str(root / "certs.d")
    return tomlkit.dumps(document)


@pytest.mark.parametrize("name", ["default-1.6", "default-1.7", "registry-legacy", "version3", "commented"])
def test_merged_config_starts_real_containerd_with_the_cri_plugin_ok(name, tmp_path):
    require("containerd", "ctr")
    result = merged(name)
    assert merge(result.config, CERTS, PAUSE, True).config == result.config  # a rerun changes nothing
    parsed = tomllib.loads(result.config)
    if parsed["version"] == 3:
        assert parsed["plugins"][V3_IMAGES]["registry"]["config_path"] == CERTS
        assert parsed["plugins"][V3_IMAGES]["pinned_images"]["sandbox"] == PAUSE
    else:
        cri = parsed["plugins"][V2_CRI]
        assert cri["registry"]["config_path"] == CERTS and cri["sandbox_image"] == PAUSE
        assert "mirrors" not in cri["registry"] and all("tls" not in c for c in cri["registry"].get("configs", {}).values())
        assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    root = tmp_path / "ctrd"
    root.mkdir()
    for registry, moved in result.hosts.items():
        (root / "certs.d" / registry).mkdir(parents=True)
        (root / "certs.d" / registry / "hosts.toml").write_text(hosts_toml("moved", moved.server, moved.hosts, moved.tls))
    with Containerd(root, config_text=private(result.config, root)) as containerd:
        assert containerd.plugin_status("io.containerd.grpc.v1", "cri") == "ok", (root / "containerd.log").read_text()[-1500:]


def test_tls_beside_config_path_kills_the_cri_plugin_unless_moved(tmp_path):
    """The defect itself: the operator's configs.tls kept beside config_path, as the old merge did, and containerd refuses CRI."""
    require("containerd", "ctr")
    document = tomlkit.parse((CORPUS / "registry-legacy.toml").read_text())
    registry = document["plugins"][V2_CRI]["registry"]
    del registry["mirrors"]
    registry["config_path"] = CERTS
    root = tmp_path / "ctrd"
    with Containerd(root, config_text=private(tomlkit.dumps(document), root)) as containerd:
        assert containerd.plugin_status("io.containerd.grpc.v1", "cri") == "error"
        assert "`configs.tls` cannot be set when `config_path` is provided" in (root / "containerd.log").read_text()


def test_tls_and_mirrors_move_into_hosts_toml_and_credentials_are_reported():
    result = merged("registry-legacy")
    harbor = "https://harbor.corp.example:8443"
    client = [["/etc/pki/corp/node.pem", "/etc/pki/corp/node-key.pem"]]
    docker = tomllib.loads(hosts_toml("", result.hosts["docker.io"].server, result.hosts["docker.io"].hosts))
    assert docker["server"] == "https://registry-1.docker.io"
    assert docker["host"] == {harbor: {"capabilities": ["pull", "resolve"], "ca": "/etc/pki/corp/ca.pem", "client": client}}
    moved = result.hosts["harbor.corp.example:8443"]
    assert (moved.server, moved.tls) == (harbor, {"ca": "/etc/pki/corp/ca.pem", "client": client})
    assert result.hosts["quay.corp.example"].tls == {"skip_verify": True}
    # Credentials stay where containerd still reads them, and the operator is told.
    cri = tomllib.loads(result.config)["plugins"][V2_CRI]
    assert cri["registry"]["configs"]["harbor.corp.example:8443"] == {"auth": {"username": "robot$node", "password": "s3cret"}}
    warnings = [note for note in result.notes if note.startswith("WARNING")]
    assert len(warnings) == 1 and 'configs."harbor.corp.example:8443".auth' in warnings[0] and "imagePullSecret" in warnings[0]
    assert "# airlock moved registry.mirrors and configs.*.tls to HOST/hosts.toml" in result.config
    for setting in ('mirrors."docker.io"', 'mirrors."registry.k8s.io"', 'configs."harbor.corp.example:8443".tls (ca_file, cert_file, key_file)', 'configs."quay.corp.example".tls (insecure_skip_verify)'):
        assert any(setting in note for note in result.notes), setting


def test_the_operators_comments_and_layout_survive():
    original = (CORPUS / "commented.toml").read_text()
    text = merged("commented").config
    moved_out = {'      ca_file = "/etc/pki/corp/ca.pem"  # the corporate root'}
    for line in original.splitlines():
        stripped = line.strip()
        if line in moved_out or not stripped or "sandbox_image" in line or "SystemdCgroup" in line or ".tls]" in line:
            continue
        assert line in text.splitlines(), line
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"  # replaced by airlock' in text
    assert "oom_score = -999   # keep containerd alive under memory pressure" in text


def test_a_version_1_config_takes_full_plugin_names():
    result = merge('[plugins.cri]\n  sandbox_image = "k8s.gcr.io/pause:3.2"\n[plugins.cri.cni]\n  bin_dir = "/opt/cni/bin"\n', CERTS, PAUSE, False)
    parsed = tomllib.loads(result.config)
    assert parsed["version"] == 2 and "cri" not in parsed["plugins"]
    assert parsed["plugins"][V2_CRI]["cni"]["bin_dir"] == "/opt/cni/bin" and parsed["plugins"][V2_CRI]["sandbox_image"] == PAUSE


def test_hosts_toml_values_cannot_add_settings():
    """A value is one TOML string whatever it holds (registry.ca is checked by type as well, this is the second wall)."""
    hostile = '/x"\nskip_verify = true\n[host."http://evil"]\ncapabilities = ["pull"]\n#'
    text = hosts_toml("airlock", "http://127.0.0.1:5000", {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"], "ca": hostile}})
    parsed = tomllib.loads(text)
    assert list(parsed["host"]) == ["http://127.0.0.1:5000"] and "skip_verify" not in parsed and parsed["host"]["http://127.0.0.1:5000"]["ca"] == hostile


def test_hosts_toml_paths_stay_inside_certs_d():
    from installer.node import NodeError
    from installer.phases.runtime import hosts_file

    assert hosts_file("harbor.corp.example:8443") == f"{CERTS}/harbor.corp.example:8443/hosts.toml"
    assert hosts_file("_default") == f"{CERTS}/_default/hosts.toml"
    for bad in ("../pause", "..", "a/b", "x y", "host\n"):
        with pytest.raises(NodeError, match="is not a host"):
            hosts_file(bad)


def test_an_operators_hosts_toml_keeps_its_values_and_comments():
    existing = '# ours: the corporate mirror\nserver = "https://quay.corp.example"\nskip_verify = false  # never\n\n[host."https://mirror.corp.example"]\n  capabilities = ["pull"]\n'
    text = hosts_toml("airlock", "https://quay.corp.example", {"https://mirror.corp.example": {"ca": "/x"}, "https://other.corp.example": {"ca": "/y"}}, {"skip_verify": True, "ca": "/ca.pem"}, existing)
    assert text.startswith(existing.split("\n\n")[0])
    parsed = tomllib.loads(text)
    assert parsed["skip_verify"] is False and parsed["ca"] == "/ca.pem"
    assert parsed["host"] == {"https://mirror.corp.example": {"capabilities": ["pull"]}, "https://other.corp.example": {"ca": "/y"}}
