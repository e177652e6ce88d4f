"""A fake Crossref REST API on 127.0.0.1 for tests, built from the real records in
tests/data/crossref/: `/works/{doi}` (404 "Resource not found." for an unknown DOI),
`/works?filter=…` with repeated filters OR'd and different filters AND'd (`doi`,
`is-update`, `from-index-date`, `until-index-date`, `update-type`), `rows` (default
20, at most 1000, Crossref's validation message beyond), `select`, cursor paging
(`cursor=*`, `next-cursor`), and the rate-limit headers of Crossref's pools
(`x-api-pool`, `x-rate-limit-limit`, `x-rate-limit-interval`, `x-concurrency-limit`).

Filters are split on every comma, as Crossref's are (a filter value cannot carry one:
`doi:10.1000/ab,cd` is answered "Filter cd specified but there is no such filter");
`refuse` holds DOIs refused with a 400 wherever they are asked.

It enforces what it advertises: a request over the rate or the concurrency limit gets
a 429 and is counted in `rejected`, so a test can check that a client obeyed. Faults:
a status with headers (429 + Retry-After, 5xx), malformed or truncated JSON, a huge
answer (a valid work list of repeated real works, streamed), a slow answer.

The pool limits are those Crossref advertised in 2026 (observed in public repositories,
see tests/data/crossref/MANIFEST): lists ("array") 3 a second and 3 at once in the
polite pool (with `mailto`), 1 and 1 in the public pool; single works 10/3 and 5/1."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .server import LocalServer

DATA = Path(__file__).parents[1] / "data" / "crossref"
NOT_FOUND = b"Resource not found."
ROWS_MAX = 1000
FILTERS = ("doi", "is-update", "from-index-date", "until-index-date", "update-type")


def real_works() -> dict[str, dict[str, Any]]:
    """The real works of tests/data/crossref, by lower-case DOI."""
    out = {}
    for path in sorted(DATA.glob("work-*.json")):
        message = json.loads(path.read_bytes())["message"]
        out[message["DOI"].lower()] = message
    return out


@dataclass
class Request:
    at: float
    path: str
    params: dict[str, list[str]]
    user_agent: str
    pool: str
    in_flight: int


@dataclass
class Fault:
    route: str = "*"  # "works" (lists), "work" (one DOI) or "*"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    truncate: bool = False  # the real answer, cut in the middle
    huge: int = 0  # a valid work list of about this many bytes, streamed
    content_length: bool = True  # with huge: declare the length, or make the client count
    delay: float = 0.0
    filter_has: str = ""  # only a list request whose filter contains this ("is-update": the new-notice search)


@dataclass
class Work:
    message: dict[str, Any]
    indexed: date


class FakeCrossref(LocalServer):
    def __init__(self) -> None:
        self.works: dict[str, Work] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.cursors: dict[str, tuple[list[str], int]] = {}
        # pool → (requests per interval, interval in s, concurrency)
        self.limits: dict[str, tuple[int, float, int]] = {
            "polite-array": (3, 1.0, 3),
            "public-array": (1, 1.0, 1),
            "polite-single": (10, 1.0, 3),
            "public-single": (5, 1.0, 1),
        }
        self.enforce = True
        # DOIs refused with a 400 wherever they are asked (filter or /works/{doi}), as
        # Crossref refuses what its router cannot read
        self.refuse: set[str] = set()
        self.delay = 0.0  # added to every answer (a network's latency)
        self.rejected = 0  # requests refused for going over the advertised limits
        self.max_in_flight = 0
        self._in_flight = 0
        self._starts: dict[str, deque[float]] = {}
        self.lock = threading.Lock()
        self._serve(self._handler(), name="fake-crossref")

    # ---------------------------------------------------------------- control

    @property
    def url(self) -> str:
        return f"{self.base}/"

    def add(self, message: dict[str, Any], *, indexed: date | None = None) -> None:
        with self.lock:
            self.works[message["DOI"].lower()] = Work(message, indexed or date.today())

    def add_real(self, *, indexed: date | None = None) -> None:
        for message in real_works().values():
            self.add(message, indexed=indexed)

    def lists(self) -> list[Request]:
        return [r for r in self.requests if r.path.rstrip("/") == "/works"]

    # ---------------------------------------------------------------- behaviour

    def pool(self, route: str, params: dict[str, list[str]], user_agent: str) -> str:
        polite = bool(params.get("mailto")) or "mailto:" in user_agent
        return f"{'polite' if polite else 'public'}-{'array' if route == 'works' else 'single'}"

    def headers(self, pool: str) -> dict[str, str]:
        limit, interval, concurrency = self.limits[pool]
        return {
            "x-api-pool": pool,
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-interval": f"{interval:g}s",
            "x-concurrency-limit": str(concurrency),
        }

    def admit(self, pool: str) -> bool:
        """Count the request against the pool's limits; False: over them (429)."""
        limit, interval, concurrency = self.limits[pool]
        now = time.monotonic()
        starts = self._starts.setdefault(pool, deque())
        # arrivals jitter behind the client's starts: a tenth of the interval of slack
        while starts and starts[0] <= now - interval * 0.9:
            starts.popleft()
        over = len(starts) >= limit or self._in_flight > concurrency
        starts.append(now)
        if over and self.enforce:
            self.rejected += 1
            return False
        return True

    def work(self, doi: str) -> tuple[int, bytes]:
        if doi.lower() in self.refuse:
            return 400, _failure("doi-not-valid", doi, f"DOI {doi} is not valid.")
        with self.lock:
            w = self.works.get(doi.lower())
        if w is None:
            return 404, NOT_FOUND
        return 200, _dump({"status": "ok", "message-type": "work", "message-version": "1.0.0", "message": w.message})

    def list_works(self, params: dict[str, list[str]]) -> tuple[int, bytes]:
        rows_text = params.get("rows", ["20"])[-1]
        if not rows_text.isdigit() or int(rows_text) > ROWS_MAX:
            return 400, _failure(
                "integer-not-valid",
                rows_text,
                f"Integer specified as {rows_text} but must be a positive integer less than or equal to {ROWS_MAX}. ",
            )
        rows = int(rows_text)
        filters: dict[str, list[str]] = {}
        for spec in params.get("filter", []):
            for part in spec.split(","):
                name, _, value = part.partition(":")
                if name == "doi" and value.lower() in self.refuse:
                    return 400, _failure("doi-not-valid", value, f"DOI {value} is not valid.")
                if name not in FILTERS:
                    return 400, _failure(
                        "filter-not-available",
                        name,
                        f"Filter {name} specified but there is no such filter for this route. "
                        f"Valid filters for this route are: {', '.join(FILTERS)}",
                    )
                filters.setdefault(name, []).append(value)
        cursor = params.get("cursor", [None])[-1]
        with self.lock:
            if cursor and cursor != "*":
                if cursor not in self.cursors:
                    return 400, _failure("cursor-not-valid", cursor, "Cursor specified is not valid or has expired.")
                dois, start = self.cursors[cursor]
            else:
                dois, start = [d for d, w in sorted(self.works.items()) if _matches(w, filters)], 0
            page = dois[start : start + rows]
            items = [_select(self.works[d].message, params.get("select", [])) for d in page]
            next_cursor = None
            if cursor:
                next_cursor = "DnF1ZXJ5VGhlbkZldGNo" + uuid.uuid4().hex  # Crossref's are opaque base64
                self.cursors[next_cursor] = (dois, start + len(page))
        message: dict[str, Any] = {"facets": {}, "total-results": len(dois), "items": items, "items-per-page": rows}
        if next_cursor:
            message["next-cursor"] = next_cursor
        message["query"] = {"start-index": 0, "search-terms": None}
        return 200, _dump({"status": "ok", "message-type": "work-list", "message-version": "1.0.0", "message": message})

    def huge_body(self, size: int) -> bytes:
        """A valid work list of about `size` bytes: the real works, repeated."""
        works = list(real_works().values())
        chunk = b",".join(_dump(w) for w in works)
        n = max(1, size // (len(chunk) + 1))
        head = b'{"status":"ok","message-type":"work-list","message-version":"1.0.0","message":{"facets":{},"total-results":1,"items":['
        return head + b",".join([chunk] * n) + b'],"items-per-page":1000}}'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = parse_qs(parts.query)
                path = parts.path
                route = "works" if path.rstrip("/") == "/works" else "work" if path.startswith("/works/") else ""
                if not route:
                    return self._send(404, NOT_FOUND, {}, "text/plain")
                ua = self.headers.get("User-Agent", "")
                pool = fake.pool(route, params, ua)
                with fake.lock:
                    fake._in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
                    fake.requests.append(Request(time.monotonic(), path, params, ua, pool, fake._in_flight))
                    admitted = fake.admit(pool)
                    filters = ",".join(params.get("filter", []))
                    fault = next(
                        (
                            f
                            for f in fake.faults
                            if f.route in (route, "*") and (not f.filter_has or f.filter_has in filters)
                        ),
                        None,
                    )
                    if fault is not None and admitted:
                        fake.faults.remove(fault)
                try:
                    self._answer(route, path, params, pool, admitted, fault)
                finally:
                    with fake.lock:
                        fake._in_flight -= 1

            def _answer(
                self,
                route: str,
                path: str,
                params: dict[str, list[str]],
                pool: str,
                admitted: bool,
                fault: Fault | None,
            ) -> None:
                headers = fake.headers(pool)
                if fake.delay:
                    time.sleep(fake.delay)
                if not admitted:
                    return self._send(429, b"Too many requests", headers, "text/plain")
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.huge:
                        return self._huge(fake.huge_body(fault.huge), headers, fault.content_length)
                    if fault.status != 200 or fault.body is not None:
                        return self._send(
                            fault.status, fault.body or b"error", {**headers, **fault.headers}, "text/plain"
                        )
                if route == "work":
                    status, body = fake.work(unquote(path[len("/works/") :]))
                else:
                    status, body = fake.list_works(params)
                if fault is not None and fault.truncate:
                    body = body[: len(body) // 2]
                self._send(status, body, headers, "text/plain" if body == NOT_FOUND else "application/json")

            def _send(self, status: int, body: bytes, headers: dict[str, str], ctype: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _huge(self, body: bytes, headers: dict[str, str], declare: bool) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if declare:
                        self.send_header("Content-Length", str(len(body)))
                    else:
                        self.close_connection = True  # no length: the client must count
                    self.end_headers()
                    for i in range(0, len(body), 1 << 20):
                        self.wfile.write(body[i : i + (1 << 20)])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _failure(kind: str, value: str, message: str) -> bytes:
    return _dump(
        {
            "status": "failed",
            "message-type": "validation-failure",
            "message": [{"type": kind, "value": value, "message": message}],
        }
    )


def _matches(w: Work, filters: dict[str, list[str]]) -> bool:
    """Different filters AND, a repeated filter ORs (Crossref REST API, "Filters")."""
    m = w.message
    for name, values in filters.items():
        if name == "doi":
            ok = m["DOI"].lower() in {v.lower() for v in values}
        elif name == "is-update":
            ok = any(bool(m.get("update-to")) == (v == "true") for v in values)
        elif name == "update-type":
            ok = any(u.get("type") in values for u in m.get("update-to") or [])
        elif name == "from-index-date":
            ok = any(w.indexed >= date.fromisoformat(v) for v in values)
        else:  # until-index-date
            ok = any(w.indexed <= date.fromisoformat(v) for v in values)
        if not ok:
            return False
    return True


def _select(message: dict[str, Any], select: list[str]) -> dict[str, Any]:
    if not select:
        return message
    keep = {f for s in select for f in s.split(",")}
    return {k: v for k, v in message.items() if k in keep}
