"""`airlock report`: one self-contained HTML page a reviewer signs a bundle off with.

Everything is in the one file: inline CSS, no script, no font, no image, and a
Content-Security-Policy that forbids the page any request, so it opens the same
on a laptop in the closed network as on the build host. Sections (each a
`<section id=...>`): summary, components, images, provenance, packages,
vulnerabilities, api-versions, changes. Built from bundle.json and the review
members a bundle starts with (api-versions.json, sbom.spdx.json,
vulnerabilities.json); what a bundle does not record is said, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

from bundle.manifest import API_FINDINGS, IMAGE_BLOBS, SBOM, VULNERABILITIES, Manifest, format_time
from bundle.meter import human_size

SECTIONS = ("summary", "components", "images", "provenance", "packages", "vulnerabilities", "api-versions", "changes")
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; font-src 'none'; connect-src 'none'; form-action 'none'; base-uri 'none'"
STYLE = """
:root { color-scheme: light; --ink: #1d232a; --muted: #5b6670; --line: #d9dee3; --band: #f4f6f8;
  --critical: #8e1b1b; --high: #c0392b; --medium: #b9770e; --low: #2e7d32; --unknown: #6c757d; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #fff; }
header { padding: 24px 40px 16px; border-bottom: 4px solid var(--ink); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: var(--muted); }
nav { padding: 8px 40px; background: var(--band); border-bottom: 1px solid var(--line); font-size: 14px; }
nav a { margin-right: 16px; color: var(--ink); }
main { padding: 8px 40px 48px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--band); font-weight: 600; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; word-break: break-all; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0 12px; }
.tile { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.tile b { display: block; font-size: 22px; }
.sev { display: inline-block; padding: 1px 7px; border-radius: 4px; color: #fff; font-size: 12px; font-weight: 600; }
.CRITICAL { background: var(--critical); } .HIGH { background: var(--high); } .MEDIUM { background: var(--medium); }
.LOW { background: var(--low); } .UNKNOWN { background: var(--unknown); }
.notice { padding: 10px 14px; border-left: 5px solid var(--medium); background: #fff8e6; margin: 8px 0; }
.alarm { border-left-color: var(--critical); background: #fdecea; }
.quiet { color: var(--muted); }
details { margin: 6px 0; } summary { cursor: pointer; }
"""


@dataclass
class Reviewed:
    """A bundle as the report sees it: its manifest and the review members it carries (absent ones are None)."""

    manifest: Manifest
    manifest_sha256: str
    signature: str  # what is known of the signature ("valid, KEY", "not checked")
    api_versions: dict | None
    sbom: dict | None
    vulnerabilities: dict | None

    @classmethod
    def from_members(cls, manifest: Manifest, manifest_sha256: str, signature: str, members: dict[str, bytes]) -> Reviewed:
        def load(name: str) -> dict | None:
            return json.loads(members[name]) if name in members else None

        return cls(manifest, manifest_sha256, signature, load(API_FINDINGS), load(SBOM), load(VULNERABILITIES))


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="quiet">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(name: str, title: str, body: str) -> str:
    return f'<section id="{name}"><h2>{_e(title)}</h2>{body}</section>'


def _summary(bundle: Reviewed) -> str:
    m = bundle.manifest
    facts = [
        ("bundle", f"{m.name}, serial {m.serial}"),
        ("Kubernetes", f"{m.version} (asked for {m.requested})"),
        ("platforms", ", ".join(m.platforms)),
        ("created", format_time(m.created)),
        ("expires", format_time(m.expires)),
        ("signed", f"{m.signer.get('algorithm', '?')} key {m.signer.get('key_id', '?')}; signature {bundle.signature}"),
        ("bundle.json sha256", f"<code>{_e(bundle.manifest_sha256)}</code>"),
        ("base", "none (a full bundle)" if m.base is None else f"a delta on serial {m.base.serial} (bundle.json sha256 <code>{_e(m.base.sha256)}</code>)"),
        ("size", f"{human_size(m.total_size)} in {len(m.files)} members, {len(m.images)} images"),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v if k in ('bundle.json sha256', 'base') else _e(v)}</dd>" for k, v in facts)
    return _section("summary", "Summary", f'<dl class="facts">{rows}</dl>')


def _components(bundle: Reviewed) -> str:
    rows = [[_e(name), f"<code>{_e(version)}</code>"] for name, version in sorted(bundle.manifest.components.items())]
    files = [
        [f"<code>{_e(f.path)}</code>", human_size(f.size), f"<code>{_e(f.sha256[:16])}…</code>", _e(f.source or "made by airlock")]
        for f in bundle.manifest.files
        if not f.path.startswith(IMAGE_BLOBS)
    ]
    return _section(
        "components", "Components", _table(["component", "version"], rows, "none recorded") + "<h3>Files</h3>" + _table(["member", "size", "sha256", "source"], files, "none")
    )


def _images(bundle: Reviewed) -> str:
    rows = [
        [f"<code>{_e(i.reference)}</code>", f"<code>{_e(i.digest)}</code>", _e(", ".join(i.platforms)), human_size(i.size)] for i in bundle.manifest.images
    ]
    return _section("images", "Images", _table(["reference", "digest (as upstream serves it)", "platforms", "size"], rows, "no images"))


def _provenance(bundle: Reviewed) -> str:
    """How each upstream file and image was vouched for at build ([16]: bundle.provenance), strongest first."""
    from bundle.provenance import KINDS, LABELS, SIGNED, UNPINNED, counts, named_records

    m = bundle.manifest
    if m.provenance is None:
        body = (
            '<p class="notice">Provenance: not recorded. This bundle was built by an airlock from before provenance was recorded: '
            "nothing says how its files and images were vouched for beyond the upstream checksums listed under Components.</p>"
        )
        return _section("provenance", "Provenance", body)
    named = named_records(m)
    found = counts([record for _, record in named])
    tiles = "".join(f'<div class="tile">{_e(LABELS[kind])}<b>{found[kind]}</b></div>' for kind in KINDS)
    parts = [
        f"<p>{len(named)} upstream files and images; the build required <b>{_e(m.provenance.require)}</b>. Signatures were verified at build "
        f"against the Sigstore trust root <code>{_e(m.provenance.trusted_root)}</code> (sha256 <code>{_e(m.provenance.trusted_root_sha256)}</code>), "
        "which the bundle carries with the evidence: <code>airlock verify BUNDLE --provenance</code> re-checks them offline.</p>",
        f'<div class="tiles">{tiles}</div>',
    ]
    if found[UNPINNED]:
        parts.append(f'<p class="notice alarm">{found[UNPINNED]} unpinned: only TLS vouched for them (listed first below).</p>')
    signers: dict[tuple[str, str, str], int] = {}
    for _, record in named:
        if record.kind == SIGNED:
            signers[(record.signer, record.identity, record.issuer)] = signers.get((record.signer, record.identity, record.issuer), 0) + 1
    if signers:
        rows = [[_e(who), f"<code>{_e(identity)}</code>", f"<code>{_e(issuer)}</code>", str(n)] for (who, identity, issuer), n in sorted(signers.items())]
        parts.append("<h3>Signed by</h3>" + _table(["signer", "identity", "OIDC issuer", "files and images"], rows, ""))
    order = {kind: index for index, kind in enumerate((UNPINNED, *[k for k in KINDS if k != UNPINNED]))}
    rows = []
    for name, record in sorted(named, key=lambda item: (order[item[1].kind], item[0])):
        if record.kind == SIGNED:
            logged = f", transparency log index {record.log_index}" if record.log_index is not None else ""
            how = f"{_e(record.signer)}: <code>{_e(record.identity)}</code>{_e(logged)}{_e(', signed ' + record.signed_at if record.signed_at else '')}"
        else:
            how = _e(record.detail)
        rows.append([f"<code>{_e(name)}</code>", _e(record.label), how])
    parts.append("<h3>Each file and image</h3>" + _table(["file or image", "vouched for by", "how"], rows, "no upstream files or images"))
    return _section("provenance", "Provenance", "".join(parts))


def sbom_packages(sbom: dict) -> list[tuple[str, list[dict]]]:
    """(container, packages inside it) from an SPDX document as airlock writes it: CONTAINS, then a Go program's STATIC_LINKs."""
    by_id = {p["SPDXID"]: p for p in sbom.get("packages", [])}
    contains: dict[tuple[str, str], list[str]] = {}
    links: dict[str, list[str]] = {}
    for relation in sbom.get("relationships", []):
        kind = relation.get("relationshipType")
        if kind == "CONTAINS":
            contains.setdefault((relation["spdxElementId"], relation.get("comment", "")), []).append(relation["relatedSpdxElement"])
        elif kind == "STATIC_LINK":
            links.setdefault(relation["spdxElementId"], []).append(relation["relatedSpdxElement"])
    found = []
    for (container, where), members in sorted(contains.items(), key=lambda item: (by_id[item[0][0]]["name"], item[0][1])):
        name = by_id[container].get("comment", "").removeprefix("bundle member ") if where == "file" else f"{by_id[container]['name']} {where}"
        rows = []
        for member in members:
            package = by_id[member]
            rows.append({"name": package["name"], "version": package.get("versionInfo", ""), "purl": _purl(package), "kind": package.get("primaryPackagePurpose", ""),
                         "note": package.get("comment", "")})  # fmt: skip
            for module in links.get(member, []):
                linked = by_id[module]
                rows.append({"name": linked["name"], "version": linked.get("versionInfo", ""), "purl": _purl(linked), "kind": "MODULE", "note": f"in {package['name']}"})
        found.append((name, rows))
    return found


def _purl(package: dict) -> str:
    refs = package.get("externalRefs") or []
    return refs[0].get("referenceLocator", "") if refs else ""


def _packages(bundle: Reviewed) -> str:
    if bundle.sbom is None:
        return _section("packages", "Packages", '<p class="notice">Packages: not recorded (this bundle carries no sbom.spdx.json).</p>')
    groups = sbom_packages(bundle.sbom)
    unread = (bundle.sbom.get("creationInfo") or {}).get("comment", "")
    parts = [f'<p class="notice">{_e(unread)}</p>' if unread else ""]
    if not groups:
        parts.append('<p class="quiet">No packages were found inside the files and images (or the contents scan was off: --no-scan).</p>')
    total = 0
    for container, rows in groups:
        total += len(rows)
        table = _table(
            ["name", "version", "kind", "package URL", "note"],
            [[_e(r["name"]), f"<code>{_e(r['version'])}</code>", _e(r["kind"].lower()), f"<code>{_e(r['purl'])}</code>", _e(r["note"])] for r in rows],
            "none",
        )
        parts.append(f"<details><summary><b>{_e(container)}</b>: {len(rows)} packages</summary>{table}</details>")
    header = f"<p>{total} packages and Go programs in {len(groups)} files and image platforms, from the bundle's SPDX 2.3 document.</p>"
    return _section("packages", "Packages", header + "".join(parts))


def _vulnerabilities(bundle: Reviewed) -> str:
    found = bundle.vulnerabilities
    if found is None:
        body = '<p class="notice alarm">Vulnerabilities: not recorded: this bundle was not checked. This is not a clean result.</p>'
        return _section("vulnerabilities", "Vulnerabilities", body)
    if found.get("status") != "scanned":
        body = f'<p class="notice alarm">NOT SCANNED: {_e(found.get("reason") or "no reason recorded")}. This is not a clean result.</p>'
        return _section("vulnerabilities", "Vulnerabilities", body)
    counts = found.get("counts") or {}
    tiles = "".join(f'<div class="tile"><span class="sev {s}">{s.lower()}</span><b>{int(counts.get(s, 0))}</b></div>' for s in SEVERITIES)
    intro = f"<p>{_e(found.get('packages'))} package versions checked against OSV at <code>{_e(found.get('source'))}</code> on {_e(found.get('checked'))}.</p>"
    parts = [intro, f'<div class="tiles">{tiles}</div>']
    for severity in SEVERITIES:
        rows = []
        for f in found.get("findings") or []:
            if f.get("severity") != severity:
                continue
            package = f.get("package") or {}
            score = f"{f['score']:.1f}" if isinstance(f.get("score"), (int, float)) else "–"
            rows.append(
                [
                    f"<code>{_e(f.get('id'))}</code><br><span class='quiet'>{_e(', '.join(f.get('aliases') or []))}</span>",
                    score,
                    f"{_e(package.get('name'))} <code>{_e(package.get('version'))}</code>",
                    f"<code>{_e(f.get('fixed') or '–')}</code>",
                    _e(f.get("summary", "")),
                    "<br>".join(_e(w) for w in f.get("where") or []),
                ]
            )
        if rows:
            parts.append(f'<h3><span class="sev {severity}">{severity.lower()}</span> {len(rows)}</h3>')
            parts.append(_table(["id", "CVSS", "package", "fixed in", "summary", "where"], rows, ""))
    if not found.get("findings"):
        parts.append("<p>OSV knows no vulnerability of these package versions.</p>")
    return _section("vulnerabilities", "Vulnerabilities", "".join(parts))


def _api_versions(bundle: Reviewed) -> str:
    apis = bundle.api_versions
    if apis is None:
        return _section("api-versions", "API versions", '<p class="notice">API versions: not recorded (this bundle carries no api-versions.json).</p>')
    table = apis.get("table") or {}
    intro = (
        f"<p>{len(apis.get('manifests') or [])} manifests checked against Kubernetes {_e(apis.get('minor'))}: "
        f"table from {_e(table.get('source'))}, read {_e(table.get('read'))}. {_e(table.get('note') or '')}</p>"
    )
    manifests = _table(["member", "from"], [[f"<code>{_e(m['member'])}</code>", _e(m["origin"])] for m in apis.get("manifests") or []], "no manifests carried")
    rows = [
        [_e(f["level"]), _e(f["file"]), _e(f["document"]), f"<code>{_e(f['apiVersion'])}</code>", _e(f["kind"]), _e(f["name"]), _e(f["detail"]), _e(f.get("replacement") or "")]
        for f in apis.get("findings") or []
    ]
    findings = _table(["finding", "file", "document", "apiVersion", "kind", "name", "detail", "use instead"], rows, "Every manifest uses APIs this minor serves.")
    return _section("api-versions", "API versions", intro + manifests + "<h3>Findings</h3>" + findings)


def _changes(bundle: Reviewed, base: Reviewed | None) -> str:
    if base is None:
        return _section("changes", "Changes", '<p class="quiet">No earlier bundle given (airlock report BUNDLE --base OLD compares against one).</p>')
    from builder.diff import diff

    change = diff(base.manifest, bundle.manifest)
    rows = [["Kubernetes", f"<code>{_e(change.old_version)}</code>", f"<code>{_e(change.new_version)}</code>"]]
    rows += [[_e(name), f"<code>{_e(old or '–')}</code>", f"<code>{_e(new or '–')}</code>"] for name, (old, new) in sorted(change.components.items())]
    images = [[_e("added"), f"<code>{_e(i.reference)}</code>", f"<code>{_e(i.digest)}</code>"] for i in change.images_added]
    images += [[_e("removed"), f"<code>{_e(i.reference)}</code>", f"<code>{_e(i.digest)}</code>"] for i in change.images_removed]
    images += [[_e("changed"), f"<code>{_e(c.old)}</code> → <code>{_e(c.new)}</code>", f"<code>{_e(c.old_digest)}</code> → <code>{_e(c.new_digest)}</code>"] for c in change.images_changed]
    files = [[_e(kind), f"<code>{_e(path)}</code>"] for kind, paths in (("added", change.files_added), ("removed", change.files_removed), ("changed", change.files_changed)) for path in paths]

    def ids(reviewed: Reviewed) -> set[str] | None:
        found = reviewed.vulnerabilities
        return {f["id"] for f in found.get("findings") or []} if found and found.get("status") == "scanned" else None

    old_ids, new_ids = ids(base), ids(bundle)
    if old_ids is None or new_ids is None:
        vulns = '<p class="notice">Vulnerabilities cannot be compared: one of the two bundles was not scanned.</p>'
    else:
        vulns = f"<p>new since serial {base.manifest.serial}: {_e(', '.join(sorted(new_ids - old_ids)) or 'none')}; gone: {_e(', '.join(sorted(old_ids - new_ids)) or 'none')}</p>"
    body = (
        f"<p>Against serial {base.manifest.serial} ({_e(base.manifest.version)}): a full bundle moves {human_size(change.full_bytes)}, "
        f"a delta {human_size(change.delta_bytes)}.</p>"
        + _table(["", f"serial {base.manifest.serial}", f"serial {bundle.manifest.serial}"], [r for r in rows if r[1] != r[2]], "no version changed")
        + "<h3>Images</h3>" + _table(["", "reference", "digest"], images, "no image changed")
        + "<h3>Files</h3>" + _table(["", "member"], files, "no file changed")
        + "<h3>Vulnerabilities</h3>" + vulns
    )  # fmt: skip
    return _section("changes", "Changes", body)


def render(bundle: Reviewed, base: Reviewed | None = None) -> bytes:
    m = bundle.manifest
    nav = "".join(f'<a href="#{s}">{_e(s.replace("-", " "))}</a>' for s in SECTIONS)
    sections = [_summary(bundle), _components(bundle), _images(bundle), _provenance(bundle), _packages(bundle),
                _vulnerabilities(bundle), _api_versions(bundle), _changes(bundle, base)]  # fmt: skip
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>airlock bundle {_e(m.name)} serial {m.serial}: Kubernetes {_e(m.version)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>airlock bundle {_e(m.name)} · serial {m.serial}</h1>"
        f"<p>Kubernetes {_e(m.version)} · {_e(', '.join(m.platforms))} · built {_e(format_time(m.created))}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(sections)}</main></body></html>\n"
    )
    return page.encode("utf-8")
