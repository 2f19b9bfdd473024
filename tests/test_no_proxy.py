"""Preflight's NO_PROXY check: names are matched by domain, not by their last letters, and a registry mirror counts."""

from __future__ import annotations

from types import SimpleNamespace

from installer.phases.preflight import _covered, proxy_findings


def test_a_domain_covers_itself_and_its_subdomains_only():
    assert _covered("registry.example.com", ["example.com"])
    assert _covered("registry.example.com", [".example.com"])
    assert _covered("example.com", [".example.com"])
    assert _covered("localhost", ["localhost"])
    assert not _covered("localhost", [".host"]), "'.host' is not localhost's domain"
    assert not _covered("localhost", ["host"])
    assert not _covered("badexample.com", ["example.com"])
    assert _covered("10.96.0.0/12", ["10.0.0.0/8"]) and not _covered("10.96.0.0/12", ["192.168.0.0/16"])


def test_the_registry_mirror_must_be_covered_too(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,10.0.0.0/8")
    config = SimpleNamespace(registry_listen="127.0.0.1:5000", service_subnet="10.96.0.0/12", pod_subnet="10.244.0.0/16",
                             advertise_address="10.0.0.10", registry_mirror="https://cp1.plant.example:5443")
    findings = [message for _, message in proxy_findings(SimpleNamespace(config=config))]
    assert len(findings) == 1 and "registry mirror cp1.plant.example" in findings[0]
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,10.0.0.0/8,.plant.example")
    assert list(proxy_findings(SimpleNamespace(config=config))) == []
