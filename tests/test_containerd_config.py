"""An operator's containerd config is merged in the layout its containerd reads, and a REAL containerd starts on it.

The corpus (tests/data/containerd/): `containerd config default` of each release
(1.6 and 2.1 run for real from Debian's packages; 1.7, 2.0 and 2.3 built from
their tags to run that one command, each file names its revision), an old-style
config with mirrors, TLS and credentials, an operator's version-3 file, and a
hand-kept file full of comments. Each is merged as the runtime phase merges it,
pointed at a private root, state and socket, and started with every real
containerd that reads its version: Debian 12's 1.6 (version 2) and Debian sid's
2.1 (versions 2 and 3; tests/debian_sid.py). No containerd 2.3 can be had here:
its version-4 layout is checked against v2.3.4's source, and 2.1 is shown to
refuse it, which is why the node never writes a version 4 for 2.0-2.2.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit

from bundle.containerd import config_version, hosts_toml
from installer.node import NodeError
from installer.render.containerd_config import V2_CRI, V3_IMAGES, V3_RUNTIME, check_dropin, merge
from tests.conftest import require
from tests.containerd import Containerd, private_config, sid_programs

CORPUS = Path(__file__).parent / "data/containerd"
CERTS = "/etc/containerd/certs.d"
PAUSE = "registry.k8s.io/pause:3.10"
# Each corpus file and the containerd release whose node holds it.
RELEASE = {
    "default-1.6": "1.6.20",
    "default-1.7": "1.7.34",
    "default-2.0": "2.0.11",
    "default-2.1": "2.1.9",
    "default-2.3": "2.3.4",
    "registry-legacy": "1.7.34",
    "version3": "2.1.9",
    "commented": "1.7.34",
}


def merged(name: str, release: str | None = None):
    return merge((CORPUS / f"{name}.toml").read_text(), CERTS, PAUSE, True, release or RELEASE[name])


def cri_settings(config: str) -> tuple[str, str, dict]:
    """(config_path, sandbox image, runc options) wherever this config's version keeps them."""
    parsed = tomllib.loads(config)
    if parsed["version"] >= 3:
        images, runtime = parsed["plugins"][V3_IMAGES], parsed["plugins"][V3_RUNTIME]
        return images["registry"]["config_path"], images["pinned_images"]["sandbox"], runtime["containerd"]["runtimes"]["runc"]["options"]
    cri = parsed["plugins"][V2_CRI]
    return cri["registry"]["config_path"], cri["sandbox_image"], cri["containerd"]["runtimes"]["runc"]["options"]


@pytest.mark.parametrize(
    "name, version",
    [("default-1.6", 2), ("default-1.7", 2), ("default-2.0", 3), ("default-2.1", 3), ("default-2.3", 4), ("registry-legacy", 2), ("version3", 3)],
)
def test_each_release_default_is_merged_in_its_own_layout(name, version):
    result = merged(name)
    assert result.version == version == tomllib.loads(result.config)["version"]
    path, sandbox, runc = cri_settings(result.config)
    assert (path, sandbox, runc["SystemdCgroup"]) == (CERTS, PAUSE, True)
    assert merge(result.config, CERTS, PAUSE, True, RELEASE[name]).config == result.config  # a rerun changes nothing
    if version >= 3:
        # 2.x has no sandbox_image: the pause image lives in the images plugin only.
        assert "sandbox_image" not in result.config


@pytest.mark.parametrize("release, version", [("1.7.34", 2), ("2.0.11", 3), ("2.1.9", 3), ("2.2.7", 3), ("2.3.4", 4), ("1.6.20~ds1", 2)])
def test_a_new_config_takes_the_version_its_containerd_reads(release, version):
    for text in (None, "", "# the platform team's file, nothing set yet\noom_score = -999\n"):
        result = merge(text, CERTS, PAUSE, False, release)
        parsed = tomllib.loads(result.config)
        assert parsed["version"] == version == config_version(release)
        assert cri_settings(result.config)[:2] == (CERTS, PAUSE)
        if text and "oom_score" in text:
            assert parsed["oom_score"] == -999 and result.config.startswith("# the platform team's file")


def test_an_older_version_stays_in_its_layout_and_the_migration_is_reported():
    """containerd 2.3 migrates a version-2 file at every start (cmd/containerd/server/config, v2.3.4): airlock keeps it."""
    result = merged("default-1.7", "2.3.4")
    assert result.version == 2 and tomllib.loads(result.config)["plugins"][V2_CRI]["sandbox_image"] == PAUSE
    assert any("stays version 2: containerd 2.3.4 migrates it to version 4 at every start" in note for note in result.notes)


@pytest.mark.parametrize("name, release, reads", [("default-2.3", "2.1.9", 3), ("default-2.3", "2.2.7", 3), ("default-2.1", "1.7.34", 2), ("version3", "1.6.20~ds1", 2)])
def test_a_config_newer_than_the_runtime_reads_is_refused(name, release, reads):
    with pytest.raises(NodeError) as refused:
        merged(name, release)
    message = str(refused.value)
    assert "\n" not in message and f"does not read (it reads up to {reads})" in message and f"write it as version {reads}" in message


def test_version_4_server_settings_left_at_the_top_level_are_reported():
    """In a version-4 file containerd 2.3 reads listeners from io.containerd.server.v1.* only ([grpc] is migrated from 3 and older)."""
    text = (CORPUS / "default-2.3.toml").read_text() + '\n[grpc]\n  address = "/run/corp/containerd.sock"\n\n[metrics]\n  address = "127.0.0.1:1338"\n'
    notes = merge(text, CERTS, PAUSE, True, "2.3.4").notes
    warnings = [note for note in notes if note.startswith("WARNING [")]
    assert len(warnings) == 2
    assert "[grpc] address is ignored in a version 4 config.toml" in warnings[0] and "io.containerd.server.v1.grpc" in warnings[0]
    assert "io.containerd.server.v1.metrics" in warnings[1]
    assert not [note for note in merged("default-2.3").notes if note.startswith("WARNING [")]  # the real default has none


@pytest.mark.parametrize("release", ["1.7.34", "2.0.11", "2.1.9", "2.3.4"])
def test_mirrors_beside_the_operators_config_path_are_refused_with_the_way_out(release):
    layout = config_version(release)
    document = tomlkit.parse((CORPUS / "registry-legacy.toml").read_text())
    registry = document["plugins"][V2_CRI]["registry"]
    registry["config_path"] = "/etc/containerd/certs.d"
    if layout >= 3:
        document["version"] = 3
        document["plugins"][V3_IMAGES] = {"registry": registry.unwrap()}
        del document["plugins"][V2_CRI]
    with pytest.raises(NodeError) as refused:
        merge(tomlkit.dumps(document), CERTS, PAUSE, True, release)
    message = str(refused.value)
    assert "\n" not in message
    assert "sets mirrors beside config_path" in message and "`mirrors` cannot be set when `config_path` is provided" in message
    assert f'[host."URL"] with capabilities = ["pull", "resolve"] in {CERTS}/HOST/hosts.toml' in message


@pytest.mark.parametrize("release, why", [("2.1.9", "containerd 2.1.9 ignores configs.*.tls"), ("1.7.34", "`configs.tls` cannot be set when `config_path` is provided")])
def test_tls_beside_the_operators_config_path_is_refused(release, why):
    text = (CORPUS / "version3.toml").read_text().replace("config_path = ''", "config_path = '/etc/containerd/certs.d'")
    if release.startswith("1."):
        text = (CORPUS / "commented.toml").read_text().replace("# Registry settings follow.", 'config_path = "/etc/containerd/certs.d"')
    with pytest.raises(NodeError) as refused:
        merge(text, CERTS, PAUSE, True, release)
    message = str(refused.value)
    assert why in message and 'configs."registry.corp.example".tls beside config_path' in message
    assert f"as ca, client and skip_verify in {CERTS}/registry.corp.example/hosts.toml" in message


def daemons_for(version: int) -> list[str]:
    """The real containerd releases here that read a config of this version."""
    return {2: ["debian-12", "sid"], 3: ["sid"]}.get(version, [])


@pytest.mark.parametrize(
    "name, daemon",
    [(name, daemon) for name in ("default-1.6", "default-1.7", "default-2.0", "default-2.1", "registry-legacy", "version3", "commented")
     for daemon in daemons_for(config_version(RELEASE[name]))],
)  # fmt: skip
def test_merged_config_starts_real_containerd_with_the_cri_plugin_ok(name, daemon, tmp_path):
    require("containerd", "ctr", "runc")
    programs = sid_programs() if daemon == "sid" else None
    result = merged(name, "2.1.9" if daemon == "sid" else None)
    root = tmp_path / "ctrd"
    root.mkdir()
    for registry, moved in result.hosts.items():
        (root / "certs.d" / registry).mkdir(parents=True)
        (root / "certs.d" / registry / "hosts.toml").write_text(hosts_toml("moved", moved.server, moved.hosts, moved.tls))
    with Containerd(root, config_text=private_config(result.config, root, root / "certs.d"), programs=programs) as containerd:
        log = containerd.log_text()[-1500:]
        assert containerd.plugin_status("io.containerd.grpc.v1", "cri") == "ok", log
        if daemon == "sid":
            assert containerd.release.startswith("2.")
            assert containerd.plugin_status("io.containerd.cri.v1", "images") == "ok", log
            assert containerd.plugin_status("io.containerd.cri.v1", "runtime") == "ok", log
            if result.version == 3:
                # Every CRI key of a version-3 file is one 2.1 reads (2.0's own default has a top-level plugin_dir 2.1 dropped;
                # a 1.x file's runtime_engine and the like are the operator's, and 2.x ignores them after its migration).
                unknown = [line for line in containerd.log_text().splitlines() if "Ignoring unknown key" in line and "cri.v1" in line]
                assert not unknown, unknown


def test_real_containerd_2_refuses_a_version_4_config(tmp_path):
    """Why a node with 2.0-2.2 gets version 3: sid's 2.1 does not start on 2.3's layout."""
    programs = sid_programs()
    root = tmp_path / "ctrd"
    root.mkdir()
    with pytest.raises(RuntimeError, match="expected containerd config version equal to or less than `3`, got `4`"):
        Containerd(root, config_text=private_config(merged("default-2.3").config, root), programs=programs).close()


def test_real_containerd_2_refuses_mirrors_beside_config_path(tmp_path):
    """The refusal above, as containerd 2.1 itself makes it: the CRI image plugin does not load, so kubelet has no runtime."""
    programs = sid_programs()
    document = tomlkit.parse((CORPUS / "default-2.1.toml").read_text())
    registry = document["plugins"][V3_IMAGES]["registry"]
    registry["mirrors"] = {"docker.io": {"endpoint": ["https://harbor.corp.example:8443"]}}
    root = tmp_path / "ctrd"
    with Containerd(root, config_text=private_config(tomlkit.dumps(document), root, root / "certs.d"), programs=programs) as containerd:
        assert containerd.plugin_status("io.containerd.cri.v1", "images") == "error"
        assert "`mirrors` cannot be set when `config_path` is provided" in containerd.log_text()


def test_real_containerd_2_ignores_configs_tls(tmp_path):
    """containerd 2.x has no configs.*.tls: the operator's CA would silently not apply, hence the refusal beside config_path."""
    programs = sid_programs()
    document = tomlkit.parse((CORPUS / "version3.toml").read_text())
    root = tmp_path / "ctrd"
    with Containerd(root, config_text=private_config(tomlkit.dumps(document), root, root / "certs.d"), programs=programs) as containerd:
        assert containerd.plugin_status("io.containerd.cri.v1", "images") == "ok"
        ignored = [line for line in containerd.log_text().splitlines() if "Ignoring unknown key" in line]
        assert any("configs registry.corp.example tls" in line for line in ignored), ignored


def test_tls_beside_config_path_kills_the_cri_plugin_of_containerd_1_unless_moved(tmp_path):
    """The 1.x defect itself: the operator's configs.tls kept beside config_path, as the old merge did, and containerd refuses CRI."""
    require("containerd", "ctr")
    document = tomlkit.parse((CORPUS / "registry-legacy.toml").read_text())
    registry = document["plugins"][V2_CRI]["registry"]
    del registry["mirrors"]
    root = tmp_path / "ctrd"
    with Containerd(root, config_text=private_config(tomlkit.dumps(document), root, root / "certs.d")) as containerd:
        assert containerd.plugin_status("io.containerd.grpc.v1", "cri") == "error"
        assert "`configs.tls` cannot be set when `config_path` is provided" in containerd.log_text()


@pytest.mark.parametrize("release", ["1.7.34", "2.1.9"])
def test_tls_and_mirrors_move_into_hosts_toml_and_credentials_are_reported(release):
    result = merged("registry-legacy", release)
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
    result = merge('[plugins.cri]\n  sandbox_image = "k8s.gcr.io/pause:3.2"\n[plugins.cri.cni]\n  bin_dir = "/opt/cni/bin"\n', CERTS, PAUSE, False, "1.7.34")
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


@pytest.mark.parametrize("shipped", ["etc/containerd/config.toml", "config default"])
def test_containerd_2_applies_airlocks_settings_from_a_version_2_and_a_version_3_file(upstream, shipped, tmp_path):
    """Debian sid's package ships a version-2 /etc/containerd/config.toml; `config default` writes version 3. Merged,
    each keeps its version, and sid's 2.1 applies airlock's settings from both (it migrates version 2 at start): CRI
    pulls go through config_path's hosts.toml (registry.k8s.io itself is unreachable here) and the bundle's pause
    image is the pinned sandbox image."""
    import subprocess

    from tests.containerd import SID_ROOT
    from tests.cri import Cri

    programs = sid_programs()
    if shipped == "config default":
        text = subprocess.run([programs / "containerd", "config", "default"], capture_output=True, text=True, check=True).stdout
    else:
        text = (SID_ROOT / shipped).read_text()
    result = merge(text, CERTS, PAUSE, True, "2.1.9")
    assert result.version == tomllib.loads(text)["version"] == (2 if shipped.startswith("etc/") else 3)
    root = tmp_path / "ctrd"
    mirror = upstream.registry.url
    for registry in ("registry.k8s.io", "docker.io"):
        (root / "certs.d" / registry).mkdir(parents=True)
        (root / "certs.d" / registry / "hosts.toml").write_text(hosts_toml("test", mirror, {mirror: {"capabilities": ["pull", "resolve"]}}))
    with Containerd(root, config_text=private_config(result.config, root, root / "certs.d"), programs=programs) as containerd:
        cri = Cri(containerd.socket)
        try:
            for reference in (PAUSE, "docker.io/library/busybox:1.36"):
                assert cri.pull(reference).startswith("sha256:")
            assert cri.status(PAUSE).pinned and not cri.status("docker.io/library/busybox:1.36").pinned
        finally:
            cri.close()


# Files config.toml imports (containerd 2.3's own default imports /etc/containerd/conf.d/*.toml): containerd merges each
# over config.toml, plugin table by key (mergeConfig, v1.7.34 to v2.3.4). Each refused case and what its line names.
DROPINS_REFUSED = [
    ("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']\n  endpoint = ['https://harbor.corp.example']\n", "registry.mirrors"),
    ('[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n  endpoint = ["https://harbor.corp.example"]\n', "registry.mirrors"),
    ('[plugins.cri.registry.mirrors."docker.io"]\n  endpoint = ["https://harbor.corp.example"]\n', "plugins.cri.registry.mirrors"),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs."harbor.corp.example".tls]\n  ca_file = "/etc/ssl/corp.pem"\n', 'configs."harbor.corp.example".tls'),
    ("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/docker/certs.d'\n", "config_path = '/etc/docker/certs.d'"),
    ("version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = 'registry.k8s.io/pause:3.9'\n", "pinned_images.sandbox = 'registry.k8s.io/pause:3.9'"),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.9"\n', "sandbox_image = 'registry.k8s.io/pause:3.9'"),
    ("version = 4\n", "has version = 4, higher than /etc/containerd/config.toml's 3"),
    ("version = 3\n[plugins\n", "is not valid TOML"),
]


@pytest.mark.parametrize("text, names", DROPINS_REFUSED)
def test_an_imported_file_that_would_undo_airlocks_settings_is_refused(text, names):
    with pytest.raises(NodeError) as refused:
        check_dropin("/etc/containerd/conf.d/20-site.toml", text, CERTS, PAUSE, 3)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("/etc/containerd/conf.d/20-site.toml ") and names in message, message
    if "mirrors" in names or "tls" in names:
        assert f"into {CERTS}/" in message and "hosts.toml" in message


def test_an_imported_file_may_set_everything_else():
    assert check_dropin("/etc/containerd/conf.d/10-runtime.toml", "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'crun'\n", CERTS, PAUSE, 3) == []
    same = f"version = 3\n[plugins.'io.containerd.cri.v1.images']\n  pinned_images = {{ sandbox = '{PAUSE}' }}\n  registry = {{ config_path = '{CERTS}' }}\n"
    assert check_dropin("/etc/containerd/conf.d/10-same.toml", same, CERTS, PAUSE, 3) == []
    auth = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs."harbor.corp.example".auth]\n  username = "robot"\n'
    notes = check_dropin("/etc/containerd/conf.d/30-auth.toml", auth, CERTS, PAUSE, 2)
    assert len(notes) == 1 and notes[0].startswith("WARNING /etc/containerd/conf.d/30-auth.toml: ") and '"harbor.corp.example".auth is kept' in notes[0]
    # A version-3 file's grpc.v1.cri is the CRI service, not the registry's place: nothing there is airlock's.
    assert check_dropin("/etc/containerd/conf.d/40.toml", 'version = 3\n[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n', CERTS, PAUSE, 3) == []


def test_real_containerd_2_merges_an_imported_files_mirrors_beside_config_path_and_refuses_them(tmp_path):
    """Why the refusal: sid's 2.1 merges a drop-in's mirrors with config.toml's config_path, and its CRI image plugin fails."""
    programs = sid_programs()
    root = tmp_path / "ctrd"
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "20-site.toml").write_text(DROPINS_REFUSED[0][0])
    document = tomlkit.parse(merged("default-2.1").config)
    document["imports"] = [str(conf_d / "*.toml")]
    with Containerd(root, config_text=private_config(tomlkit.dumps(document), root, root / "certs.d"), programs=programs) as containerd:
        assert containerd.plugin_status("io.containerd.cri.v1", "images") == "error"
        assert "`mirrors` cannot be set when `config_path` is provided" in containerd.log_text()
    (conf_d / "20-site.toml").write_text("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n")
    with Containerd(root, config_text=private_config(tomlkit.dumps(document), root, root / "certs.d"), programs=programs) as containerd:
        assert containerd.plugin_status("io.containerd.cri.v1", "images") == "ok", containerd.log_text()[-1500:]
