"""Preflight's NO_PROXY check reads NO_PROXY the way kubelet, containerd and kubeadm do: Go's httpproxy rules.

The table's answers are what Go's net/http (ProxyFromEnvironment, which is
golang.org/x/net/http/httpproxy) answers for each NO_PROXY value and URL;
where a Go toolchain is installed, the last test asks Go itself.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from types import SimpleNamespace

import pytest

from installer.noproxy import NoProxy, request_target
from installer.phases.preflight import proxy_findings
from tests.conftest import require

DIRECT, PROXY = "direct", "proxy"

# (NO_PROXY, request URL, what Go does)
TABLE = [
    # names: the name and its subdomains; never a name that merely ends in the same letters
    ("example.com", "https://example.com", DIRECT),
    ("example.com", "https://registry.example.com", DIRECT),
    ("example.com", "https://badexample.com", PROXY),
    ("EXAMPLE.com", "https://Registry.Example.COM", DIRECT),
    (" example.com , other.org ", "https://other.org", DIRECT),
    ("registry", "https://registry:5000", DIRECT),
    ("registry", "https://my-registry:5000", PROXY),
    (".svc", "https://kubernetes.default.svc", DIRECT),
    ("cluster.local", "https://kubernetes.default.svc.cluster.local", DIRECT),
    ("example.com.", "https://example.com", PROXY),
    ("example.com", "https://example.com.", PROXY),
    # leading dots and "*.": subdomains only, not the name itself
    (".example.com", "https://example.com", PROXY),
    (".example.com", "https://registry.example.com", DIRECT),
    ("*.example.com", "https://example.com", PROXY),
    ("*.example.com", "https://a.b.example.com", DIRECT),
    ("*foo.com", "https://foo.com", PROXY),
    # "*": nothing is proxied, wherever it stands
    ("*", "https://anything.example", DIRECT),
    ("foo.com,*", "https://bar.org", DIRECT),
    # localhost and loopback are never proxied, whatever NO_PROXY says (but LOCALHOST is a name like any other)
    ("host", "https://localhost", DIRECT),
    (".host", "https://localhost:5000", DIRECT),
    ("", "https://127.0.0.1:5000", DIRECT),
    ("", "https://127.1.2.3", DIRECT),
    ("", "https://[::1]:5000", DIRECT),
    ("", "https://[::ffff:127.0.0.1]", DIRECT),
    ("", "https://LOCALHOST", PROXY),
    # IP addresses, as Go parses them
    ("10.0.0.10", "https://10.0.0.10:6443", DIRECT),
    ("10.0.0.10", "https://[::ffff:10.0.0.10]", DIRECT),
    ("::ffff:10.0.0.10", "https://10.0.0.10", DIRECT),
    ("10.0.0.010", "https://10.0.0.10", PROXY),
    ("fd00::1", "https://[fd00::1]:443", DIRECT),
    ("[fd00::1]", "https://[fd00::1]", PROXY),
    ("fe80::1%eth0", "https://[fe80::1]", PROXY),
    ("10.0.0.10", "https://10.0.0.10.nip.io", PROXY),
    ("0.10", "https://10.0.0.10", DIRECT),  # not an address, so a name: compared as text, and 10.0.0.10 ends in .0.10
    # CIDRs
    ("10.0.0.0/8", "https://10.96.0.1", DIRECT),
    ("10.0.0.0/8", "https://11.0.0.1", PROXY),
    ("10.1.2.3/8", "https://10.200.0.1", DIRECT),
    ("10.0.0.0/08", "https://10.0.0.1", DIRECT),
    ("10.0.0.0/33", "https://10.0.0.1", PROXY),
    ("fd00::/8", "https://[fd12::1]", DIRECT),
    ("fd00::/8", "https://10.0.0.1", PROXY),
    ("10.0.0.0/8:443", "https://10.0.0.1", PROXY),
    # ports: an entry with a port covers that port only; a URL without one has its scheme's
    ("example.com:5000", "https://example.com:5000", DIRECT),
    ("example.com:5000", "https://example.com:5001", PROXY),
    ("example.com:5000", "https://example.com", PROXY),
    ("example.com:443", "https://example.com", DIRECT),
    ("example.com:80", "http://example.com", DIRECT),
    ("example.com:", "https://example.com:5000", DIRECT),
    (".example.com:5000", "https://a.example.com:5000", DIRECT),
    (".example.com:5000", "https://example.com:5000", PROXY),
    ("10.0.0.10:5000", "http://10.0.0.10:5000", DIRECT),
    ("10.0.0.10:5000", "http://10.0.0.10:5001", PROXY),
    ("[fd00::1]:5000", "http://[fd00::1]:5000", DIRECT),
    ("[fd00::1]:5000", "http://[fd00::1]:5001", PROXY),
    (":5000", "http://example.com:5000", PROXY),
]


@pytest.mark.parametrize(("no_proxy", "url", "go"), TABLE)
def test_no_proxy_matches_as_go_does(no_proxy, url, go):
    host, port = request_target(url)
    assert (DIRECT if NoProxy.parse(no_proxy).bypasses(host, port) else PROXY) == go


def test_a_whole_subnet_is_covered_only_by_a_network_that_holds_it():
    parsed = NoProxy.parse("10.0.0.0/8,10.96.0.1,fd00::/8")
    assert parsed.bypasses_network(ipaddress.ip_network("10.96.0.0/12"))
    assert not parsed.bypasses_network(ipaddress.ip_network("192.168.0.0/16"))
    assert not NoProxy.parse("10.96.0.1").bypasses_network(ipaddress.ip_network("10.96.0.0/12")), "one address is not the subnet"
    assert parsed.bypasses_network(ipaddress.ip_network("fd00:10::/108"))
    assert NoProxy.parse("*").bypasses_network(ipaddress.ip_network("10.96.0.0/12"))
    # A node address checked for every port: an entry with a port does not cover it.
    assert not NoProxy.parse("10.0.0.10:6443").bypasses("10.0.0.10", None)
    assert NoProxy.parse("10.0.0.10").bypasses("10.0.0.10", None)


def config(**changes) -> SimpleNamespace:
    values = dict(registry_listen="127.0.0.1:5000", service_subnet="10.96.0.0/12", pod_subnet="10.244.0.0/16",
                  advertise_address="10.0.0.10", registry_mirror=None, registry_mirrors=())  # fmt: skip
    return SimpleNamespace(config=SimpleNamespace(**{**values, **changes}))


def findings(monkeypatch, no_proxy: str, **changes) -> list[str]:
    for name in ("https_proxy", "http_proxy", "HTTP_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    return [message for _, message in proxy_findings(config(**changes))]


def test_preflight_passes_only_where_go_would_not_use_the_proxy(monkeypatch):
    # The registry mirror's domain written with a leading dot does not cover the bare name: Go would proxy it.
    mirror = "https://plant.example:5443"
    (finding,) = findings(monkeypatch, "10.0.0.0/8,.plant.example", registry_mirror=mirror)
    assert "registry mirror plant.example" in finding
    assert findings(monkeypatch, "10.0.0.0/8,plant.example", registry_mirror=mirror) == []
    assert findings(monkeypatch, "10.0.0.0/8,plant.example:5443", registry_mirror=mirror) == []
    (finding,) = findings(monkeypatch, "10.0.0.0/8,plant.example:443", registry_mirror=mirror)
    assert "registry mirror plant.example" in finding
    # A registry on the node's address must be covered for its port; on loopback it never needs an entry.
    assert findings(monkeypatch, "10.0.0.0/8") == []
    # An entry with a port covers that port only: not the registry's, and not the node address on every port.
    messages = findings(monkeypatch, "10.0.0.10:6443,10.96.0.0/12,10.244.0.0/16", registry_listen="10.0.0.10:5000")
    assert [m.split(" NO_PROXY does not cover the ")[1].split(";")[0] for m in messages] == ["registry address 10.0.0.10", "node address 10.0.0.10"]
    assert findings(monkeypatch, "10.0.0.10,10.96.0.0/12,10.244.0.0/16", registry_listen="10.0.0.10:5000") == []
    # Subnets need a network that holds them.
    messages = findings(monkeypatch, "10.0.0.10,10.96.0.1")
    assert [m.split(" NO_PROXY does not cover the ")[1].split(";")[0] for m in messages] == ["service subnet 10.96.0.0/12", "pod subnet 10.244.0.0/16"]
    assert findings(monkeypatch, "*") == []


def test_the_table_is_what_go_answers(tmp_path):
    """Each row of the table through Go's own net/http (Debian's golang-go, which `make deps` installs)."""
    require("go")
    (tmp_path / "go.mod").write_text("module noproxycheck\n\ngo 1.19\n")
    (tmp_path / "main.go").write_text(
        "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"net/url\"\n\t\"os\"\n)\n\n"
        "func main() {\n\tu, err := url.Parse(os.Args[1])\n\tif err != nil {\n\t\tpanic(err)\n\t}\n"
        "\tproxy, err := http.ProxyFromEnvironment(&http.Request{URL: u})\n\tif err != nil {\n\t\tpanic(err)\n\t}\n"
        '\tif proxy != nil {\n\t\tfmt.Println("proxy")\n\t} else {\n\t\tfmt.Println("direct")\n\t}\n}\n'
    )
    unset = {"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUEST_METHOD"}
    env = {**{k: v for k, v in os.environ.items() if k not in unset}, "HOME": str(tmp_path), "GOCACHE": str(tmp_path / "cache"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    subprocess.run(["go", "build", "-o", "oracle", "."], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    for no_proxy, url, expected in TABLE:
        proxies = {"HTTPS_PROXY": "http://proxy.corp:3128", "HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": no_proxy}
        answer = subprocess.run([str(tmp_path / "oracle"), url], env={**env, **proxies}, capture_output=True, text=True, check=True, timeout=60)
        assert answer.stdout.strip() == expected, (no_proxy, url)
