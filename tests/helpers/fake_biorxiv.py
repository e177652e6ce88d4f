"""A fake api.biorxiv.org: a real HTTP server on 127.0.0.1, port 0, on a thread,
answering `details` and `pubs` the way the real API does (tests/data/biorxiv/MANIFEST)::

    with FakeBiorxiv() as api:
        api.post("medrxiv", doi="10.1101/2026.01.02.26300001", title=..., date=..., version="1")
        api.publish("medrxiv", "10.1101/2026.01.02.26300001", "10.1182/blood.2026001234", "Blood", date)
        api.throttle(1)      # the next request gets 429 (Retry-After: 0)
        api.fail(2, 503)     # the next 2 get 503
        api.base             # the `url` of a feed of kind biorxiv / medrxiv

- ``/details/{server}/{from}/{to}/{cursor}[?category=…]`` lists every posted version
  whose `date` lies in the interval, oldest first, 30 a page from `cursor`;
  ``/pubs/{server}/{from}/{to}/{cursor}`` the journal versions whose
  `published_date` lies in it. `messages[0]` carries `cursor` and `count` as numbers
  and `total` as a string, as the real answers do; an empty interval answers 200 with
  ``{"messages":[{"status":"no posts found"}],"collection":[]}``.
- `category` (spaces as ``_`` or ``%20``) filters; one the server does not know is
  ignored, and every category is answered, like the real server.
- `per_second`: a request arriving when that many others arrived in the `second` before
  it gets 429 with Retry-After (counted in `refused`); `throttle` and `fail` queue refusals.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote_plus

from .server import LocalServer

PAGE = 30
KNOWN = {
    "biorxiv": {"cancer biology", "immunology", "cell biology", "neuroscience", "bioinformatics", "genetics"},
    "medrxiv": {"oncology", "hematology", "infectious diseases", "epidemiology", "cardiovascular medicine"},
}
_PATH = re.compile(r"^/(details|pubs)/(biorxiv|medrxiv)/(\d{4}-\d\d-\d\d)/(\d{4}-\d\d-\d\d)/(\d+)(?:/json)?$")
EMPTY = {"messages": [{"status": "no posts found"}], "collection": []}


@dataclass(frozen=True)
class Request:
    at: float
    path: str
    query: str
    headers: dict[str, str]


class FakeBiorxiv(LocalServer):
    def __init__(self, per_second: int | None = None, second: float = 1.0) -> None:
        self.details: dict[str, list[dict[str, Any]]] = {"biorxiv": [], "medrxiv": []}
        self.pubs: dict[str, list[dict[str, Any]]] = {"biorxiv": [], "medrxiv": []}
        self.requests: list[Request] = []
        self.per_second = per_second
        self.second = second  # the pace's "second": longer makes a refusal certain on a loaded machine
        self.refused = 0
        self._canned: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._serve(_handler(self), name="fake-biorxiv")

    # --- control --------------------------------------------------------------------

    def post(
        self,
        server: str,
        *,
        doi: str,
        title: str,
        date: date,
        version: str = "1",
        category: str = "oncology",
        abstract: str = "",
        authors: str = "Smith, J.; Doe, A.",
        type: str = "new results",  # noqa: A002 - the API's field
        published: str = "NA",
    ) -> dict[str, Any]:
        """Post a version, as the server lists it in `details`."""
        item = {
            "doi": doi,
            "title": title,
            "authors": authors,
            "author_corresponding": authors.split(";")[0].strip(),
            "author_corresponding_institution": "Example University",
            "date": date.isoformat(),
            "version": version,
            "type": type,
            "license": "cc_by",
            "category": category,
            "jatsxml": f"https://www.{server}.org/content/early/{date:%Y/%m/%d}/{doi.split('/')[-1]}.source.xml",
            "abstract": abstract,
            "published": published,
            "server": server,
        }
        with self._lock:
            self.details[server].append(item)
        return item

    def withdraw(self, server: str, *, doi: str, title: str, date: date, version: str) -> None:
        """A withdrawal: a new version of type "withdrawn", titled "WITHDRAWN: …"."""
        self.post(
            server,
            doi=doi,
            title=f"WITHDRAWN: {title}",
            date=date,
            version=version,
            type="withdrawn",
            abstract="The authors have withdrawn this manuscript.",
        )

    def publish(self, server: str, preprint_doi: str, published_doi: str, journal: str, when: date) -> None:
        """The journal version of a preprint appears (listed in `pubs`)."""
        with self._lock:
            pre = next((d for d in reversed(self.details[server]) if d["doi"] == preprint_doi), {})
            self.pubs[server].append(
                {
                    "biorxiv_doi": preprint_doi,
                    "published_doi": published_doi,
                    "published_journal": journal,
                    "preprint_platform": server,
                    "preprint_title": pre.get("title", ""),
                    "preprint_authors": pre.get("authors", ""),
                    "preprint_category": pre.get("category", ""),
                    "preprint_date": pre.get("date", ""),
                    "published_date": when.isoformat(),
                    "preprint_author_corresponding": pre.get("author_corresponding", ""),
                    "preprint_author_corresponding_institution": "Example University",
                }
            )

    def throttle(self, times: int = 1, retry_after: str = "0") -> None:
        with self._lock:
            self._canned.extend((429, {"Retry-After": retry_after}) for _ in range(times))

    def fail(self, times: int = 1, status: int = 503) -> None:
        with self._lock:
            self._canned.extend((status, {}) for _ in range(times))

    def count(self, endpoint: str, server: str | None = None) -> int:
        prefix = f"/{endpoint}/" + (f"{server}/" if server else "")
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(prefix))

    # --- answering --------------------------------------------------------------------

    def answer(self, path: str, query: str, at: float) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        with self._lock:
            if self.per_second is not None:
                recent = sum(1 for r in self.requests[:-1] if r.at > at - self.second)
                if recent >= self.per_second:
                    self.refused += 1
                    return 429, b"Too Many Requests", {"Retry-After": f"{self.second:g}"}
            if self._canned:
                status, headers = self._canned.pop(0)
                return status, f"HTTP {status}".encode(), headers
        m = _PATH.match(path)
        if m is None:
            return 404, b"Not found", {}
        endpoint, server, lo, hi, cursor = m.groups()
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        category = " ".join(unquote_plus(params.get("category", "")).replace("_", " ").lower().split())
        with self._lock:
            if endpoint == "details":
                items = [d for d in self.details[server] if lo <= d["date"] <= hi]
                if category in KNOWN[server]:  # an unknown one is ignored: every category
                    items = [d for d in items if d["category"].lower() == category]
            else:
                items = [p for p in self.pubs[server] if lo <= p["published_date"] <= hi]
        start = int(cursor)
        page = items[start : start + PAGE]
        if not page:
            return 200, EMPTY, {}
        head: dict[str, Any] = {"status": "ok", "interval": f"{lo}/{hi}", "cursor": start, "count": len(page)}
        if endpoint == "details":
            head["count_new_papers"] = str(sum(1 for d in page if d["version"] == "1"))
        head["total"] = str(len(items))  # a string, as in the real answers
        return 200, {"messages": [head], "collection": page}, {}


def _handler(fake: FakeBiorxiv) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nginx"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path, _, query = self.path.partition("?")
            at = time.monotonic()
            with fake._lock:
                fake.requests.append(Request(at, path, query, dict(self.headers.items())))
            status, body, headers = fake.answer(path, query, at)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler
