"""Known vulnerabilities of the packages a bundle carries, from OSV (the open vulnerability database).

Its documented API: `POST {osv-url}/v1/querybatch` with up to 1000 queries
(`{"package": {"ecosystem", "name"}, "version"}`), answered in the same
order with the ids of the vulnerabilities that affect each, paged per query
by `next_page_token`; then `GET {osv-url}/v1/vulns/{id}` for each id's
record (summary, severity, affected ranges). Requests go through the build's
one HTTP client (builder.transfer.Http: its retries, caps and errors).

The result is `vulnerabilities.json`, a member signed in bundle.json:
status "scanned" with every finding, or "not-scanned" with the reason (OSV
could not be reached, --osv-url none, --no-scan). Never a clean bill of
health for a bundle nobody checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from builder.contents import Inventory, Package
from builder.errors import BuildError
from builder.transfer import Http
from bundle.errors import JsonObjectError
from bundle.jsonobject import parse_object
from bundle.manifest import canonical_json

SCHEMA = "airlock.vulnerabilities/v1"
BATCH = 1000  # the API's limit of queries per request
MAX_PAGES = 50  # per batch: a runaway paginator is an error, not a loop
MAX_BATCH_ANSWER = 32 << 20
MAX_RECORD = 4 << 20
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
FAIL_ON_CHOICES = ("low", "medium", "high", "critical")


class OsvError(BuildError):
    """OSV answered something that is not its documented API."""


# ---------------------------------------------------------------------------------------------- severity (pure)

_CVSS3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _roundup(value: float) -> float:
    """CVSS 3.1's Roundup: the smallest number with one decimal that is not below `value`."""
    whole = round(value * 100000)
    return whole / 100000.0 if whole % 10000 == 0 else (math.floor(whole / 10000) + 1) / 10.0


def cvss3_score(vector: str) -> float | None:
    """The base score of a CVSS:3.0/3.1 vector (the specification's formula); None when it is not one."""
    parts = vector.split("/")
    if not parts or not parts[0].startswith("CVSS:3"):
        return None
    metrics = dict(part.split(":", 1) for part in parts[1:] if ":" in part)
    try:
        scope_changed = metrics["S"] == "C"
        privileges = {"N": 0.85, "L": 0.68 if scope_changed else 0.62, "H": 0.5 if scope_changed else 0.27}[metrics["PR"]]
        impact_base = 1 - (1 - _CVSS3["C"][metrics["C"]]) * (1 - _CVSS3["C"][metrics["I"]]) * (1 - _CVSS3["C"][metrics["A"]])
        exploitability = 8.22 * _CVSS3["AV"][metrics["AV"]] * _CVSS3["AC"][metrics["AC"]] * privileges * _CVSS3["UI"][metrics["UI"]]
    except KeyError:
        return None
    impact = 7.52 * (impact_base - 0.029) - 3.25 * (impact_base - 0.02) ** 15 if scope_changed else 6.42 * impact_base
    if impact <= 0:
        return 0.0
    return _roundup(min((1.08 if scope_changed else 1) * (impact + exploitability), 10))


def rating(score: float) -> str:
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    return "LOW" if score > 0 else "UNKNOWN"


def severity_of(record: dict) -> tuple[str, float | None]:
    """(CRITICAL/HIGH/MEDIUM/LOW/UNKNOWN, CVSS v3 base score or None) of an OSV record.

    A CVSS v3 vector is scored; else the database's own word (GHSA's MODERATE is MEDIUM); else UNKNOWN.
    """
    for entry in record.get("severity") or []:
        if isinstance(entry, dict) and entry.get("type") == "CVSS_V3" and isinstance(entry.get("score"), str):
            score = cvss3_score(entry["score"])
            if score is not None:
                return rating(score), score
    words = [(record.get("database_specific") or {}).get("severity")]
    words += [((affected or {}).get("ecosystem_specific") or {}).get("severity") for affected in record.get("affected") or [] if isinstance(affected, dict)]
    for word in words:
        if isinstance(word, str):
            word = {"MODERATE": "MEDIUM"}.get(word.upper(), word.upper())
            if word in SEVERITIES:
                return word, None
    return "UNKNOWN", None


def fixed_in(record: dict, package: Package) -> str:
    """The first version OSV says fixes this package, or ""."""
    for affected in record.get("affected") or []:
        if not isinstance(affected, dict) or (affected.get("package") or {}).get("name") != package.query_name:
            continue
        for found in affected.get("ranges") or []:
            for event in (found or {}).get("events") or []:
                if isinstance(event, dict) and isinstance(event.get("fixed"), str):
                    return event["fixed"]
    return ""


def at_or_above(severity: str, threshold: str) -> bool:
    order = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}
    return severity != "UNKNOWN" and order[severity] >= order[threshold.upper()]


# ---------------------------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Target:
    """One distinct package version to ask about, and where the bundle carries it."""

    package: Package
    where: tuple[str, ...]

    def query(self) -> dict:
        return {"package": {"ecosystem": self.package.ecosystem, "name": self.package.query_name}, "version": self.package.query_version}


def targets_of(inventories: list[Inventory]) -> list[Target]:
    places: dict[tuple[str, str, str], list[str]] = {}
    first: dict[tuple[str, str, str], Package] = {}
    for inventory in inventories:
        where = f"{inventory.container} {inventory.platform}".strip()
        found = [(p, where) for p in inventory.packages]
        found += [(m, f"{where}: {binary.path}") for binary in inventory.binaries for m in binary.modules]
        for package, place in found:
            if package.ecosystem in ("Debian", "Alpine") or not package.query_version:
                continue  # no release known (OSV's Debian and Alpine data is per release), or no version to ask about
            key = (package.ecosystem, package.query_name, package.query_version)
            first.setdefault(key, package)
            if place not in places.setdefault(key, []):
                places[key].append(place)
    return [Target(first[key], tuple(places[key])) for key in sorted(first)]


class OsvClient:
    def __init__(self, http: Http, base_url: str, threads: int = 8):
        self.http = http
        self.base = base_url.rstrip("/")
        self.threads = threads

    def affected(self, targets: list[Target]) -> list[set[str]]:
        """For each target, the ids of the vulnerabilities OSV lists for it (querybatch, every page followed)."""
        found: list[set[str]] = [set() for _ in targets]
        url = f"{self.base}/v1/querybatch"
        for start in range(0, len(targets), BATCH):
            pending = {start + offset: None for offset in range(len(targets[start : start + BATCH]))}
            for _ in range(MAX_PAGES):
                if not pending:
                    break
                order = sorted(pending)
                queries = [dict(targets[index].query(), **({"page_token": pending[index]} if pending[index] else {})) for index in order]
                answer = self.http.fetch_bytes("POST", url, MAX_BATCH_ANSWER, {"Content-Type": "application/json"}, body=json.dumps({"queries": queries}).encode())
                results = parse_object(answer.body, f"{url} (OSV's answer)", MAX_BATCH_ANSWER).get("results")
                if not isinstance(results, list) or len(results) != len(order):
                    raise OsvError(f"{url}: answered {len(results) if isinstance(results, list) else 'no'} results for {len(order)} queries")
                pending = {}
                for index, result in zip(order, results, strict=True):
                    for vuln in (result or {}).get("vulns") or []:
                        if isinstance(vuln, dict) and isinstance(vuln.get("id"), str):
                            found[index].add(vuln["id"])
                    token = (result or {}).get("next_page_token")
                    if isinstance(token, str) and token:
                        pending[index] = token
            else:
                raise OsvError(f"{url}: still paging after {MAX_PAGES} pages")
        return found

    def record(self, vuln_id: str) -> dict:
        url = f"{self.base}/v1/vulns/{vuln_id}"
        document = parse_object(self.http.get_bytes(url, MAX_RECORD).body, f"{url} (OSV's answer)", MAX_RECORD)
        if document.get("id") != vuln_id:
            raise OsvError(f"{url}: answered the record of {document.get('id')!r}")
        return document

    def scan(self, targets: list[Target]) -> list[dict]:
        ids = self.affected(targets)
        wanted = sorted({vuln for found in ids for vuln in found})
        with ThreadPoolExecutor(self.threads, thread_name_prefix="osv") as pool:
            records = dict(zip(wanted, pool.map(self.record, wanted), strict=True))
        findings = []
        for target, found in zip(targets, ids, strict=True):
            for vuln_id in sorted(found):
                record = records[vuln_id]
                severity, score = severity_of(record)
                package = target.package
                findings.append(
                    {
                        "id": vuln_id,
                        "aliases": sorted(a for a in record.get("aliases") or [] if isinstance(a, str)),
                        "summary": str(record.get("summary") or record.get("details") or "")[:300],
                        "severity": severity,
                        "score": score,
                        "package": {"ecosystem": package.ecosystem, "name": package.name, "version": package.version, "purl": package.purl},
                        "fixed": fixed_in(record, package),
                        "where": list(target.where),
                    }
                )
        findings.sort(key=lambda f: (SEVERITIES.index(f["severity"]), f["id"], f["package"]["purl"]))
        return findings


def document(status: str, source: str, when: str, targets: int, findings: list[dict], reason: str = "") -> bytes:
    counts = {name: sum(1 for f in findings if f["severity"] == name) for name in SEVERITIES}
    return canonical_json(
        {"schema": SCHEMA, "status": status, "reason": reason, "source": source, "checked": when, "packages": targets, "counts": counts, "findings": findings}
    )


def check(
    http: Http, osv_url: str | None, inventories: list[Inventory], when: str, log: Callable[[str], None], reason_off: str = ""
) -> tuple[bytes, dict]:
    """vulnerabilities.json for these inventories, and its parsed form. OSV out of reach is said, and recorded as not scanned."""
    targets = targets_of(inventories)
    if reason_off or not osv_url:
        reason = reason_off or "--osv-url none"
        log(f"vulnerabilities: not scanned ({reason})")
        data = document("not-scanned", osv_url or "", when, len(targets), [], reason)
        return data, json.loads(data)
    try:
        findings = OsvClient(http, osv_url).scan(targets)
    except (BuildError, JsonObjectError) as error:
        reason = f"OSV at {osv_url} could not be reached or answered wrongly: {error}"
        log(f"warning: vulnerabilities NOT SCANNED: {reason}; the bundle records 'not-scanned', not 'clean'")
        data = document("not-scanned", osv_url, when, len(targets), [], reason)
        return data, json.loads(data)
    data = document("scanned", osv_url, when, len(targets), findings)
    parsed = json.loads(data)
    counts = ", ".join(f"{parsed['counts'][name]} {name.lower()}" for name in SEVERITIES if parsed["counts"][name]) or "none known"
    log(f"vulnerabilities: {len(targets)} package versions checked against OSV at {osv_url}: {counts}")
    return data, parsed


def refuse_above(parsed: dict, threshold: str | None) -> None:
    """--fail-on: refuse a bundle with a finding at or above `threshold`, or one that could not be checked."""
    if not threshold:
        return
    if parsed["status"] != "scanned":
        raise BuildError(f"--fail-on {threshold}: the vulnerabilities could not be checked ({parsed['reason']}); no bundle was written")
    above = [f for f in parsed["findings"] if at_or_above(f["severity"], threshold)]
    if above:
        names = ", ".join(f"{f['id']} ({f['severity'].lower()}, {f['package']['name']} {f['package']['version']})" for f in above[:5])
        more = f" and {len(above) - 5} more" if len(above) > 5 else ""
        raise BuildError(f"--fail-on {threshold}: {len(above)} known vulnerabilities at or above {threshold}: {names}{more}; no bundle was written")
