"""A STAND-IN for OSV's API (api.osv.dev), answering its documented endpoints from a fixed set of records.

- `POST /v1/querybatch`: `{"queries": [...]}`, at most 1000; each query names a package by
  `ecosystem` and `name` (or by `purl`, not both) and a `version` (or a `commit`, not both), as the
  API's rules say, else HTTP 400. Answers `{"results": [{"vulns": [{"id", "modified"}], "next_page_token"?}]}`
  in query order, at most `page_size` ids a page, later pages by `page_token`.
- `GET /v1/vulns/{id}`: the full record, or 404.

Matching is by exact ecosystem, name and one of the record's listed `affected[].versions` (real OSV
also evaluates ranges). The records are test fixtures with AIRLOCK-TEST ids: not real advisories.
"""

from __future__ import annotations

import http.server
import json
import threading


class OsvStandIn:
    def __init__(self, records: list[dict] | None = None, page_size: int = 2):
        self.records = {record["id"]: record for record in records or []}
        self.page_size = page_size
        self.queries: list[dict] = []
        self.requests: list[str] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, document: dict) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stand_in.requests.append(f"GET {self.path}")
                prefix = "/v1/vulns/"
                record = stand_in.records.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
                if record is None:
                    self._answer(404, {"code": 5, "message": "Bug not found."})
                    return
                self._answer(200, record)

            def do_POST(self):
                stand_in.requests.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    document = json.loads(self.rfile.read(length))
                except ValueError:
                    self._answer(400, {"code": 3, "message": "Invalid JSON"})
                    return
                if self.path != "/v1/querybatch":
                    self._answer(404, {"code": 5, "message": "Not found"})
                    return
                queries = document.get("queries") if isinstance(document, dict) else None
                if not isinstance(queries, list) or len(queries) > 1000:
                    self._answer(400, {"code": 3, "message": "Too many queries." if isinstance(queries, list) else "queries must be a list"})
                    return
                results = []
                for query in queries:
                    problem = stand_in.invalid(query)
                    if problem:
                        self._answer(400, {"code": 3, "message": problem})
                        return
                    stand_in.queries.append(query)
                    results.append(stand_in.page(query))
                self._answer(200, {"results": results})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def invalid(query: object) -> str:
        if not isinstance(query, dict):
            return "a query must be an object"
        package = query.get("package") or {}
        if "version" in query and "commit" in query:
            return "version and commit cannot both be set"
        if not isinstance(package, dict) or ("purl" in package and ("name" in package or "ecosystem" in package)):
            return "name/ecosystem and purl cannot both be set"
        if "purl" not in package and not (package.get("name") and package.get("ecosystem")):
            return "a package needs a name and an ecosystem"
        return ""

    def matches(self, query: dict) -> list[str]:
        package = query["package"]
        found = []
        for vuln_id, record in sorted(self.records.items()):
            for affected in record.get("affected", []):
                named = affected.get("package", {})
                if named.get("ecosystem") == package.get("ecosystem") and named.get("name") == package.get("name") and query.get("version") in affected.get("versions", []):
                    found.append(vuln_id)
                    break
        return found

    def page(self, query: dict) -> dict:
        ids = self.matches(query)
        start = int(query.get("page_token") or 0)
        result: dict = {"vulns": [{"id": vuln_id, "modified": self.records[vuln_id].get("modified", "2026-11-30T00:00:00Z")} for vuln_id in ids[start : start + self.page_size]]}
        if start + self.page_size < len(ids):
            result["next_page_token"] = str(start + self.page_size)
        return result

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def record(vuln_id: str, ecosystem: str, name: str, versions: list[str], fixed: str, summary: str, cvss_v3: str | None = None, word: str | None = None) -> dict:
    """An OSV record (schema 1.6) for the stand-in: one affected package, an ECOSYSTEM range fixed at `fixed`."""
    found = {
        "schema_version": "1.6.0",
        "id": vuln_id,
        "modified": "2026-11-30T00:00:00Z",
        "published": "2026-11-01T00:00:00Z",
        "aliases": [f"CVE-2099-{vuln_id[-4:]}"],
        "summary": summary,
        "details": f"{summary} (a test fixture, not a real advisory)",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
                "versions": versions,
            }
        ],
    }
    if cvss_v3:
        found["severity"] = [{"type": "CVSS_V3", "score": cvss_v3}]
    if word:
        found["database_specific"] = {"severity": word}
    return found
