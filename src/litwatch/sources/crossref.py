"""The Crossref REST API client (https://api.crossref.org/swagger-ui/index.html): I/O
only; answers are parsed by `parse.crossref` and returned as plain data.

- New notices: `/works?filter=is-update:true,from-index-date:D`, `rows=1000`, cursor
  paging (`cursor=*`, then each answer's `next-cursor`, until a short page), keeping
  the notices whose target is a DOI the caller has stored.
- Stored DOIs re-checked: `/works?filter=doi:A,doi:B,…` (a repeated filter means OR),
  about 50 a request, reading each work's `updated-by` (Retraction Watch's entries).
  A DOI the filter syntax cannot carry (a comma: filters are comma-separated, with no
  escape) is asked alone as `/works/{doi}`; a batch Crossref refuses (HTTP 400) is
  split in halves until the DOI it refuses is found, which is then asked alone; a DOI
  refused alone too is returned as `unchecked`, and the rest are checked all the same.

Politeness (Crossref, "REST API: access and authentication", rate limits from
1 December 2025): `mailto=` on every request and a User-Agent naming litwatch and the
address, for the polite pool; the pace and the number of connections follow the
`x-rate-limit-limit`/`x-rate-limit-interval` and `x-concurrency-limit` of the last
answer (list and single-work routes are limited apart); one connection until an answer
allows more; 429 and Retry-After through the shared `HttpClient` retries, deadline and
size cap.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Container, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol
from urllib.parse import quote

from .. import __version__
from ..errors import SourceError
from ..parse.crossref import WorksPage, error_message, normalize_doi, parse_works
from ..records import Notice
from .http import Fetched, HttpClient, RateLimiter, RetryPolicy, redact

log = logging.getLogger(__name__)

DEFAULT_CROSSREF = "https://api.crossref.org/"
ROWS_MAX = 1000  # Crossref refuses more: "must be a positive integer less than or equal to 1000"
BATCH = 50  # DOIs per filter request: the URL stays near 2 kB
SELECT = "DOI,title,type,update-to,updated-by"
MAX_PAGES = 10_000  # 10 million notices a day: a server that never ends its cursor
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


class SharedBudget(Protocol):
    """The request budget every process on one database shares (`coordination.RequestBudget`):
    at most `per_second` request starts in any second, across processes."""

    per_second: int

    def wait(self) -> None: ...


class PoolLimiter(RateLimiter):
    """The pace and the connections one of Crossref's pools allows, as its last answer
    said: at most `limit` request starts in any `interval` seconds, at most
    `concurrency` requests at once. Until an answer says otherwise: 1, 1 s, 1. With a
    `budget`, each start also takes one from the budget shared by every process on the
    database, kept at the pace the pool's answers state (so processes together keep
    to one pool's rate)."""

    def __init__(
        self,
        limit: int = 1,
        interval: float = 1.0,
        concurrency: int = 1,
        margin: float = 0.1,
        budget: SharedBudget | None = None,
    ) -> None:
        # `margin` is a share of the interval: Crossref counts arrivals, and a start
        # reserved here reaches the wire a little later (threads, a loaded host)
        super().__init__(limit, margin)
        self.interval = interval
        self.concurrency = concurrency
        self.pool = ""
        self._in_flight = 0
        self._gate = threading.Condition()
        self._starts: deque[float] = deque()
        self._pace = threading.Lock()
        self.budget = budget
        if budget is not None:
            budget.per_second = self._budget_rate()

    def _budget_rate(self) -> int:
        return max(1, int(self.per_second / self.interval))

    def wait(self) -> None:
        with self._pace:
            now = time.monotonic()
            while len(self._starts) >= self.per_second:
                ready = self._starts[0] + self.interval * (1 + self.margin)
                if ready > now:
                    time.sleep(ready - now)
                    now = time.monotonic()
                self._starts.popleft()
            self._starts.append(now)
        if self.budget is not None:
            self.budget.wait()  # and the other processes' starts

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `concurrency` connections for the length of a request."""
        with self._gate:
            while self._in_flight >= self.concurrency:
                self._gate.wait()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._gate:
                self._in_flight -= 1
                self._gate.notify_all()

    def learn(self, headers: dict[str, str]) -> None:
        """Adopt the limits an answer states (headers are authoritative)."""
        limit = _int(headers.get("x-rate-limit-limit"))
        interval = _seconds(headers.get("x-rate-limit-interval"))
        concurrency = _int(headers.get("x-concurrency-limit"))
        with self._pace:
            if limit:
                self.per_second = limit
            if interval:
                self.interval = interval
            if self.budget is not None:
                self.budget.per_second = self._budget_rate()
        with self._gate:
            if concurrency:
                self.concurrency = concurrency
                self._gate.notify_all()
        self.pool = headers.get("x-api-pool", self.pool)

    @property
    def rate(self) -> float:
        """Requests per second allowed (as advertised; the pace kept is `margin` slower)."""
        return self.per_second / self.interval


@dataclass(frozen=True)
class CrossrefBatch:
    """What one call learnt: notices, the progress to store with them, and its cost."""

    notices: tuple[Notice, ...]
    progress: str  # the new watermark (ISO date): from-index-date of the next cycle, or the day checked
    requests: int
    checked: frozenset[str] = frozenset()  # DOIs Crossref answered for
    missing: frozenset[str] = frozenset()  # DOIs asked about that Crossref does not hold
    unchecked: frozenset[str] = frozenset()  # DOIs Crossref refused to be asked about, even alone
    pool: str = ""  # x-api-pool of the last answer: polite-array, public-array, ...


@dataclass(frozen=True)
class CrossrefProbe:
    """What `CrossrefClient.probe` learnt: Crossref answers, in which pool, how fast."""

    total: int | None  # update notices indexed since the day asked
    pool: str  # x-api-pool: polite-array, public-array, ... ("" when not said)
    limit: int  # requests per `interval` seconds
    interval: float
    concurrency: int
    requests: int


class CrossrefClient:
    def __init__(
        self,
        *,
        email: str,
        base_url: str = DEFAULT_CROSSREF,
        batch_size: int = BATCH,
        policy: RetryPolicy | None = None,
        max_bytes: int = 64_000_000,
        max_connections: int = 3,
        budget: SharedBudget | None = None,
    ) -> None:
        """`budget`: the list route's request budget shared with every process on the
        database (`coordination.RequestBudget`, keyed "crossref:<host>"); by default
        this process's pace only."""
        self.email = email
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.batch_size = max(1, min(batch_size, ROWS_MAX))
        self.policy = policy or RetryPolicy()
        self.max_bytes = max_bytes
        self.max_connections = max(1, max_connections)
        # Crossref's own advice: name the tool and a contact in the User-Agent
        self.user_agent = f"litwatch/{__version__} (+https://github.com/litwatch/litwatch; mailto:{email})"
        self.lists = PoolLimiter(budget=budget)  # /works?filter=…: the "array" pools
        self.single = PoolLimiter()  # /works/{doi}: the "single" pools
        self._clients: list[HttpClient] = []
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self._requests = 0

    # ------------------------------------------------------------------ public

    @property
    def requests_made(self) -> int:
        return self._requests

    def close(self) -> None:
        for c in self._clients:
            c.close()

    def new_notices(self, since: date, *, today: date, stored: Container[str] | None = None) -> CrossrefBatch:
        """Update notices Crossref indexed since `since` (inclusive: windows overlap by a
        day, identity makes that free), keeping those whose target DOI is in `stored`."""
        before = self._requests
        keep = None if stored is None else (lambda n: n.target_doi in stored)
        params: dict[str, Any] = {
            "filter": f"is-update:true,from-index-date:{since.isoformat()}",
            "rows": ROWS_MAX,
            "select": SELECT,
            "cursor": "*",
        }
        notices: dict[Notice, None] = {}
        for _ in range(MAX_PAGES):
            page = self._list(params, what="Crossref new notices", keep=keep)
            notices.update(dict.fromkeys(page.notices))
            if page.items < ROWS_MAX or not page.next_cursor:
                break
            params["cursor"] = page.next_cursor
        else:
            raise SourceError(f"Crossref new notices: more than {MAX_PAGES} pages; giving up")
        return CrossrefBatch(tuple(notices), today.isoformat(), self._requests - before, pool=self.lists.pool)

    def recheck(self, dois: Sequence[str], *, today: date) -> CrossrefBatch:
        """Each stored DOI's notices (`updated-by`), `batch_size` DOIs a request; after
        the first answer, as many connections at once as Crossref allows (at most
        `max_connections`)."""
        before = self._requests
        wanted = list(dict.fromkeys(d for d in (normalize_doi(x) for x in dois) if d))
        listed = [d for d in wanted if filter_can_carry(d)]
        batches = [listed[i : i + self.batch_size] for i in range(0, len(listed), self.batch_size)]
        done: list[tuple[list[WorksPage], set[str]]] = []
        if batches:
            done.append(self._checked(batches[0]))  # alone: its headers say how many may follow at once
        rest = batches[1:]
        workers = min(self.lists.concurrency, self.max_connections, len(rest))
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crossref") as pool:
                done += list(pool.map(self._checked, rest))
        else:
            done += [self._checked(b) for b in rest]
        done += [self._alone(d) for d in wanted if not filter_can_carry(d)]
        notices: dict[Notice, None] = {}
        checked: set[str] = set()
        unchecked: set[str] = set()
        for pages, refused in done:
            unchecked |= refused
            for page in pages:
                notices.update(dict.fromkeys(page.notices))
                checked |= page.dois
        asked = set(wanted)
        return CrossrefBatch(
            notices=tuple(n for n in notices if n.target_doi in asked),
            progress=today.isoformat(),
            requests=self._requests - before,
            checked=frozenset(checked & asked),
            missing=frozenset(asked - checked - unchecked),
            unchecked=frozenset(unchecked),
            pool=self.lists.pool,
        )

    def probe(self, since: date) -> CrossrefProbe:
        """One cheap request (`rows=0`): how many update notices Crossref indexed since
        `since`, and which pool it put litwatch in, with that pool's limits
        (`litwatch check --online`)."""
        before = self._requests
        params = {"filter": f"is-update:true,from-index-date:{since.isoformat()}", "rows": 0}
        page = self._list(params, what="Crossref")
        return CrossrefProbe(
            total=page.total,
            pool=self.lists.pool,
            limit=self.lists.per_second,
            interval=self.lists.interval,
            concurrency=self.lists.concurrency,
            requests=self._requests - before,
        )

    def work(self, doi: str) -> WorksPage | None:
        """One work by DOI; None when Crossref does not know it (404)."""
        norm = normalize_doi(doi)
        if not norm:
            raise SourceError(f"Crossref: {doi!r} is not a DOI")
        url = self.base_url + "works/" + quote(norm, safe="")
        fetched = self._get(url, {}, self.single, what=f"Crossref work {norm}", ok=frozenset({200, 400, 404}))
        if fetched.status == 404:
            return None
        self._refused(fetched, f"Crossref work {norm}")
        return parse_works(fetched.content, what=f"Crossref work {norm}", url=redact(url))

    # ------------------------------------------------------------------ plumbing

    def _checked(self, dois: list[str]) -> tuple[list[WorksPage], set[str]]:
        """A batch checked whatever Crossref refuses: a refused batch (HTTP 400) is split
        in halves until the DOI it refuses is found, and that one is asked alone."""
        try:
            return [self._batch(dois)], set()
        except SourceError as e:
            if e.status != 400:
                raise
            log.info("crossref: a check of %d DOIs was refused (%s); splitting it", len(dois), e)
        if len(dois) == 1:
            return self._alone(dois[0])
        half = len(dois) // 2
        left, right = self._checked(dois[:half]), self._checked(dois[half:])
        return left[0] + right[0], left[1] | right[1]

    def _alone(self, doi: str) -> tuple[list[WorksPage], set[str]]:
        """One DOI asked as `/works/{doi}`: ([its page] or [] when Crossref does not
        hold it, set()), or ([], {doi}) when Crossref refuses that too."""
        try:
            page = self.work(doi)
        except SourceError as e:
            if e.status != 400:
                raise
            log.warning("crossref: stored DOI %r cannot be checked: %s", doi, e)
            return [], {doi}
        return ([page] if page is not None else []), set()

    def _batch(self, dois: list[str]) -> WorksPage:
        params = {"filter": ",".join(f"doi:{d}" for d in dois), "rows": len(dois), "select": SELECT}
        return self._list(params, what=f"Crossref check of {len(dois)} DOIs")

    def _list(self, params: dict[str, Any], *, what: str, keep: Any = None) -> WorksPage:
        url = self.base_url + "works"
        fetched = self._get(url, params, self.lists, what=what, ok=frozenset({200, 400, 404}))
        self._refused(fetched, what)
        return parse_works(fetched.content, what=what, url=redact(url), keep=keep)

    def _get(self, url: str, params: dict[str, Any], limiter: PoolLimiter, *, what: str, ok: frozenset[int]) -> Fetched:
        http = self._http(limiter)
        before = http.requests_made
        try:
            with limiter.slot():
                fetched = http.request("GET", url, what=what, params={**params, "mailto": self.email}, ok=ok)
        finally:
            with self._count_lock:
                self._requests += http.requests_made - before
        limiter.learn(fetched.headers)
        return fetched

    def _refused(self, fetched: Fetched, what: str) -> None:
        if fetched.status == 200:
            return
        said = error_message(fetched.content)
        raise SourceError(
            f"{what}: Crossref refused the request (HTTP {fetched.status}){': ' + said if said else ''}",
            url=redact(fetched.url),
            status=fetched.status,
        )

    def _http(self, limiter: PoolLimiter) -> HttpClient:
        """One HttpClient (one connection) per thread and route: requests.Session is
        not shared between threads; the limiter is."""
        clients: dict[int, HttpClient] = getattr(self._local, "clients", None) or {}
        self._local.clients = clients
        client = clients.get(id(limiter))
        if client is None:
            client = HttpClient(
                policy=self.policy, max_bytes=self.max_bytes, limiter=limiter, user_agent=self.user_agent
            )
            clients[id(limiter)] = client
            with self._count_lock:
                self._clients.append(client)
        return client


def unchecked_note(found: CrossrefBatch) -> dict[str, object]:
    """The re-check row's note (`last_error`, shown by `status` once, not as a failure):
    the stored DOIs Crossref refused to be asked about, even alone; none: no note."""
    if not found.unchecked:
        return {"last_error": None}
    dois = sorted(found.unchecked)
    some = ", ".join(dois[:5]) + (f" and {len(dois) - 5} more" if len(dois) > 5 else "")
    return {"last_error": f"{len(dois)} stored DOI{'s' if len(dois) != 1 else ''} Crossref refused to check: {some}"}


def filter_can_carry(doi: str) -> bool:
    """Whether `doi:<doi>` fits Crossref's filter syntax: filters are separated by
    commas, with no way to escape one, so a DOI with a comma cannot be a filter value
    (Crossref answers "Filter cd specified but there is no such filter")."""
    return "," not in doi


def _int(value: str | None) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _seconds(value: str | None) -> float | None:
    """`1s`, `60s`, `1m`, `500ms`, `2` → seconds."""
    m = _INTERVAL.match(value or "")
    if not m:
        return None
    n = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return n if n > 0 else None
