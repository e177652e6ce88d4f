"""A fake openFDA ``/drug/drugsfda.json``: a real HTTP server on 127.0.0.1, port 0, on a
thread, answering the way FDA's API code does (tests/data/openfda/MANIFEST cites it)::

    with FakeOpenFda(applications) as fda:
        fda.search_url  # http://127.0.0.1:PORT/drug/drugsfda.json
        fda.throttle(2, retry_after="0")  # the next 2 requests get 429
        ... client.fetch(...)
        fda.requests[0].raw_query  # exactly as sent: "+" vs "%2B" is visible

Supported: ``search=submissions.submission_status_date:[YYYYMMDD TO YYYYMMDD]`` (an
application matches when any of its submissions has a status date in the range, as in
openFDA, which does not match nested fields within one submission), ``limit`` (default
1, at most 1000), ``skip`` (at most 25000), ``search_after`` (from the ``Link`` header),
``api_key`` (taken by the api.data.gov gateway, never seen by the API; with
``api_keys`` set, a key not in it is refused with 403 API_KEY_INVALID).

The query string is decoded like a form (``+`` is a space). A ``+`` that arrives as
``%2B`` stays a literal "+" in the search, which Elasticsearch cannot parse: openFDA then
answers 500 SERVER_ERROR "Check your request and try again".
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote, unquote_plus

from .server import LocalServer

PATH = "/drug/drugsfda.json"
MAX_LIMIT = 1000
MAX_SKIP = 25000
EXPECTED = ("search", "count", "limit", "skip", "sort", "search_after")
_RANGE = re.compile(r"^submissions\.submission_status_date:\[(\d{8}) TO (\d{8})\]$")
META = {
    "disclaimer": "Do not rely on openFDA to make decisions regarding medical care. While we make every effort "
    "to ensure that data is accurate, you should assume all results are unvalidated. We may limit or otherwise "
    "restrict your access to the API in line with our Terms of Service.",
    "terms": "https://open.fda.gov/terms/",
    "license": "https://open.fda.gov/license/",
    "last_updated": "2026-01-27",
}
# api.data.gov, the gateway in front of openFDA, refuses a key it does not know with 403
# before the API sees the request (the body as captured from other api.data.gov APIs,
# api.nasa.gov and api.congress.gov, whose message names the API's host).
API_KEY_INVALID = {
    "error": {
        "code": "API_KEY_INVALID",
        "message": "An invalid api_key was supplied. Get one at https://api.fda.gov:443",
    }
}
OVER_RATE_LIMIT = {
    "error": {
        "code": "OVER_RATE_LIMIT",
        "message": "You have exceeded your rate limit. Try again later or contact us at "
        "https://open.fda.gov/apis/authentication/ for assistance",
    }
}


@dataclass(frozen=True)
class Request:
    path: str
    raw_query: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Canned:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeOpenFda(LocalServer):
    def __init__(self, applications: Sequence[dict[str, Any]] = ()) -> None:
        self.applications: list[dict[str, Any]] = list(applications)
        self.requests: list[Request] = []
        self.link_header = True  # False: an old-style API without Link (clients page by skip)
        self.api_keys: set[str] | None = None  # a set: the gateway refuses (403) any other key
        self.delay = 0.0  # seconds before each answer (a slow gateway)
        self._canned: list[_Canned] = []
        self._lock = threading.Lock()
        self._serve(_handler(self), name="fake-openfda")

    @property
    def search_url(self) -> str:
        return self.base + PATH

    def add(self, *applications: dict[str, Any]) -> None:
        with self._lock:
            self.applications.extend(applications)

    def throttle(self, times: int, retry_after: str = "1") -> None:
        """The next `times` requests get 429 with this Retry-After."""
        self.reply(429, OVER_RATE_LIMIT, {"Retry-After": retry_after}, times=times)

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None, times: int = 1) -> None:
        """The next `times` requests get this answer instead of a search."""
        with self._lock:
            self._canned.extend(_Canned(status, body, dict(headers or {})) for _ in range(times))

    # --- answering --------------------------------------------------------------------------

    def answer(self, path: str, raw_query: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self._canned:
                c = self._canned.pop(0)
                return c.status, c.body, c.headers
        if path != PATH:
            return 404, {}, {}  # not the API: an empty 404, no openFDA error object
        params = _form(raw_query)
        key = params.pop("api_key", None)  # the api.data.gov gateway consumes it
        if key is not None and self.api_keys is not None and key not in self.api_keys:
            return 403, API_KEY_INVALID, {}
        try:
            limit, skip = _check(params)
        except _BadRequest as e:
            return 400, _error("BAD_REQUEST", str(e)), {}
        hits = self._search(params.get("search", ""))
        if hits is None:
            return 500, _error("SERVER_ERROR", "Check your request and try again"), {}
        start = skip
        if "search_after" in params:
            after = params["search_after"].removeprefix("0=")
            start = next((i + 1 for i, a in enumerate(hits) if a["application_number"] == after), len(hits))
        page = hits[start : start + limit]
        if not page:
            return 404, _error("NOT_FOUND", "No matches found!"), {}
        body = {"meta": {**META, "results": {"skip": skip, "limit": limit, "total": len(hits)}}, "results": page}
        headers: dict[str, str] = {}
        if self.link_header and start + limit < len(hits):
            headers["Link"] = f'<{self._next(params, limit, skip, page)}>; rel="next"'
        return 200, body, headers

    def _search(self, search: str) -> list[dict[str, Any]] | None:
        with self._lock:
            apps = sorted(self.applications, key=lambda a: str(a.get("application_number", "")))
        if not search:
            return apps
        m = _RANGE.match(search.strip())
        if m is None:
            return None  # e.g. "[20260101+TO+20260131]": Elasticsearch cannot parse it
        lo, hi = m.groups()
        return [
            a
            for a in apps
            if any(lo <= str(s.get("submission_status_date", "")) <= hi for s in a.get("submissions") or [])
        ]

    def _next(self, params: dict[str, str], limit: int, skip: int, page: list[dict[str, Any]]) -> str:
        # as openFDA: search_after when the request did not use skip, else the next skip
        query = {k: v for k, v in params.items() if k not in ("skip", "search_after", "limit")}
        query["limit"] = str(limit)
        if skip:
            query["skip"] = str(skip + limit)
        else:
            query["skip"] = "0"
            query["search_after"] = "0=" + str(page[-1]["application_number"])
        encoded = "&".join(f"{k}={quote(v, safe=':[]').replace('%20', '+')}" for k, v in query.items())
        return f"{self.search_url}?{encoded}"


class _BadRequest(Exception):
    pass


def _check(params: dict[str, str]) -> tuple[int, int]:
    """api_request.js CheckParams, message for message."""
    for name in params:
        if name not in EXPECTED:
            raise _BadRequest(f"Invalid parameter: {name}")
    limit, skip = 1, 0
    if params.get("limit"):
        if not params["limit"].strip().isdigit():
            raise _BadRequest("Invalid limit parameter value.")
        limit = int(params["limit"])
    if params.get("skip"):
        if not params["skip"].strip().isdigit():
            raise _BadRequest("Invalid skip parameter value.")
        skip = int(params["skip"])
        if skip > MAX_SKIP:
            raise _BadRequest(f"Skip value must {MAX_SKIP} or less.")
    if limit > MAX_LIMIT:
        raise _BadRequest(
            "Limit cannot exceed 1000 results for search requests. Use the skip or search_after param to get "
            "additional results."
        )
    if params.get("search_after") and skip:
        raise _BadRequest("The skip parameter is not supported when using search_after.")
    return limit, skip


def _form(raw_query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[unquote_plus(name)] = unquote_plus(value)
    return out


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _handler(fake: FakeOpenFda) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "open.fda.gov"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path, _, raw = self.path.partition("?")
            with fake._lock:
                fake.requests.append(Request(path, raw, _form(raw), dict(self.headers.items())))
            if fake.delay:
                time.sleep(fake.delay)
            status, body, headers = fake.answer(path, raw)
            data = json.dumps(body, indent=2).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
