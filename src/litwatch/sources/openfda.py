"""The openFDA Drugs@FDA client (``https://api.fda.gov/drug/drugsfda.json``). I/O only:
returns the raw response pages of one date window; `parse.openfda` reads them.
Retries, backoff, Retry-After (429 included), time-outs, the size cap and the
User-Agent come from `sources.http.HttpClient`.

openFDA's rules (https://open.fda.gov/apis/ and FDA's API code, cited in
tests/data/openfda/MANIFEST):

* Search by ``submissions.submission_status_date:[YYYYMMDD+TO+YYYYMMDD]``. The query
  string is form-encoded, so the ``+`` must reach the server as ``+`` (a space); sent
  as ``%2B`` it is a literal "+" that Elasticsearch cannot parse. `search_query` builds
  the query string itself for that reason (requests' ``params`` would send ``%2B``).
* ``limit`` ≤ 1000 per request; paging follows the ``Link: <…>; rel="next"`` header
  (``search_after``, or the next ``skip``); an API without Link is paged by ``skip``,
  which may not exceed 25,000.
* 404 ``{"error": {"code": "NOT_FOUND"}}`` means no matches: not a failure.
* 240 requests a minute and 1,000 a day per IP without an API key; a key allows
  120,000 a day (https://open.fda.gov/apis/authentication/). The minute limit is
  a process-wide `RateLimiter` (4 a second) unless the caller passes a `limiter`; the
  day limit is `DailyBudget`, or any `DayBudget`. The poll pipeline (feedkinds.py)
  passes the database's: `coordination.RequestBudget` and `coordination.DailyRequests`,
  shared by every process on the database (ARCHITECTURE.md rule 6).
* Windows: Drugs@FDA learns of a decision days or weeks after it is made, and offers
  no date of when a submission was added (only the dataset's `meta.last_updated`), so
  each window starts 60 days before the end of the last one (`plan_window`): an
  approval listed up to 60 days after its `submission_status_date` is caught, once
  (identities make the overlap free: a stored, unchanged record is no news). Days are
  US Eastern calendar days, the FDA's.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

import ijson
from requests.utils import parse_header_links

from ..errors import ParseError, SourceError
from ..parse.jsonguard import guarded, loads
from ..parse.openfda import parse_drugsfda
from ..records import Record
from .http import Fetched, HttpClient, Limiter, RetryPolicy, redact, shared_limiter

__all__ = [
    "DEFAULT_URL",
    "DailyBudget",
    "DayBudget",
    "OpenFdaBatch",
    "OpenFdaClient",
    "OpenFdaResult",
    "Window",
    "plan_window",
    "poll_openfda",
    "requests_per_cycle",
    "search_query",
]

DEFAULT_URL = "https://api.fda.gov/drug/drugsfda.json"
PAGE_LIMIT = 1000
MAX_SKIP = 25_000
PER_SECOND = 4  # 240 a minute
PER_DAY_WITHOUT_KEY = 1_000
PER_DAY_WITH_KEY = 120_000
OVERLAP = timedelta(days=60)  # how late Drugs@FDA may list a decision and still be caught
FDA_TIME = ZoneInfo("America/New_York")
DEFAULT_MAX_BYTES = 64_000_000  # a page of 1,000 applications is a few MB


@dataclass(frozen=True)
class Window:
    since: date
    until: date

    @property
    def search(self) -> str:
        """The openFDA search, with ``+`` where openFDA's syntax has a space."""
        return f"submissions.submission_status_date:[{self.since:%Y%m%d}+TO+{self.until:%Y%m%d}]"


def plan_window(
    last_until: date | None, now: datetime, *, lookback_days: int = 30, overlap: timedelta = OVERLAP
) -> Window:
    """The window of one poll: from `overlap` (60 days) before the end of the last successful
    window (or `lookback_days` back on the first poll) to today, in US Eastern days."""
    today = (now if now.tzinfo else now.replace(tzinfo=ZoneInfo("UTC"))).astimezone(FDA_TIME).date()
    since = last_until - overlap if last_until else today - timedelta(days=lookback_days)
    return Window(min(since, today), today)


def search_query(window: Window, *, limit: int = PAGE_LIMIT, skip: int = 0, api_key: str | None = None) -> str:
    """The query string of a search request, ``+`` kept literal."""
    parts = [f"search={quote(window.search, safe=':[]+')}", f"limit={limit}"]
    if skip:
        parts.append(f"skip={skip}")
    if api_key:
        parts.append(f"api_key={quote(api_key, safe='')}")
    return "&".join(parts)


def requests_per_cycle(applications_in_window: int) -> int:
    """Requests one poll makes: one page per 1,000 applications, at least one (a 404)."""
    return max(1, math.ceil(applications_in_window / PAGE_LIMIT))


class DayBudget(Protocol):
    """A daily request budget: `DailyBudget` in one process, or one kept in the database."""

    per_day: int

    def take(self, now: datetime) -> bool:
        """Reserve one request if the day has one left, in one step (so two processes
        cannot both take the last); False if it is used up."""
        ...

    def spend(self, n: int, now: datetime) -> None:
        """Count `n` more requests (retries beyond the one taken); negative gives back."""
        ...


class DailyBudget:
    """At most `per_day` requests per UTC day, counted in this process; `now` is given."""

    def __init__(self, per_day: int) -> None:
        self.per_day = per_day
        self._day: date | None = None
        self._used = 0
        self._lock = threading.Lock()

    def remaining(self, now: datetime) -> int:
        with self._lock:
            return self.per_day - self._used_on(now)

    def take(self, now: datetime) -> bool:
        with self._lock:
            if self._used_on(now) >= self.per_day:
                return False
            self._used += 1
            return True

    def spend(self, n: int, now: datetime) -> None:
        with self._lock:
            self._used = max(0, self._used_on(now) + n)

    def _used_on(self, now: datetime) -> int:
        day = now.date()
        if day != self._day:
            self._day, self._used = day, 0
        return self._used


_budgets: dict[int, DailyBudget] = {}
_budgets_lock = threading.Lock()


def shared_budget(per_day: int) -> DailyBudget:
    with _budgets_lock:
        return _budgets.setdefault(per_day, DailyBudget(per_day))


@dataclass(frozen=True)
class OpenFdaResult:
    window: Window
    pages: tuple[bytes, ...]  # raw JSON responses, for parse.openfda
    requests: int  # HTTP requests made, retries included
    no_matches: bool  # openFDA said NOT_FOUND


class OpenFdaClient:
    """One client per poll (it holds one `requests.Session`); `close()` when done."""

    def __init__(
        self,
        *,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        name: str = "openfda",
        policy: RetryPolicy | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        per_second: int = PER_SECOND,
        budget: DayBudget | None = None,
        max_pages: int = 50,
        limiter: Limiter | None = None,
    ) -> None:
        self.url = url
        self.api_key = api_key or None
        self.name = name
        self.max_pages = max_pages
        self.budget: DayBudget = budget or shared_budget(PER_DAY_WITH_KEY if self.api_key else PER_DAY_WITHOUT_KEY)
        self.client = HttpClient(
            policy=policy or RetryPolicy(retries=4, backoff=1.0, max_delay=120.0, timeout=60.0, deadline=600.0),
            max_bytes=max_bytes,
            limiter=limiter or shared_limiter(_host(url), per_second),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenFdaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def fetch(self, window: Window, *, now: datetime) -> OpenFdaResult:
        """Every page of the window's search; raise `SourceError` when openFDA refuses
        or cannot be reached (nothing of the window is returned then)."""
        start = self.client.requests_made
        pages: list[bytes] = []
        next_url: str | None = f"{self.url}?{search_query(window, api_key=self.api_key)}"
        skip = 0
        while next_url is not None:
            if len(pages) >= self.max_pages:
                raise SourceError(
                    f"feed {self.name}: more than {self.max_pages} pages of openFDA results for "
                    f"{window.since}..{window.until}; giving up",
                    url=redact(self.url),
                )
            fetched = self._get(next_url, now)
            if fetched.status == 404:
                return OpenFdaResult(window, tuple(pages), self.client.requests_made - start, not pages)
            pages.append(fetched.content)
            next_url = self._next(fetched, window, skip)
            skip += PAGE_LIMIT
        return OpenFdaResult(window, tuple(pages), self.client.requests_made - start, False)

    def _get(self, url: str, now: datetime) -> Fetched:
        if not self.budget.take(now):  # the slot is reserved before the request is sent
            key = "" if self.api_key else "; an api_key raises it to 120,000"
            raise SourceError(
                f"feed {self.name}: openFDA's daily limit of {self.budget.per_day:,} requests is used up{key}",
                url=redact(self.url),
            )
        before = self.client.requests_made
        try:
            fetched = self.client.request(
                "GET",
                url,
                what=f"feed {self.name}",
                headers={"Accept": "application/json"},
                ok=frozenset({200, 400, 404}),
            )
        finally:  # retries count too; a request never sent gives its slot back
            self.budget.spend(self.client.requests_made - before - 1, now)
        if fetched.status == 400:
            raise SourceError(
                f"feed {self.name}: openFDA refused the request: {_message(fetched.content)}",
                url=redact(url),
                status=400,
            )
        if fetched.status == 404 and _code(fetched.content) != "NOT_FOUND":
            raise SourceError(f"feed {self.name}: HTTP 404 from {redact(url)}", url=redact(url), status=404)
        return fetched

    def _next(self, fetched: Fetched, window: Window, skip: int) -> str | None:
        link = fetched.headers.get("link", "")
        if link:
            for entry in parse_header_links(link):
                if entry.get("rel", "").lower() == "next" and entry.get("url"):
                    return self._with_key(entry["url"])
            return None
        # No Link header (an older API): page by skip while the total says there is more.
        total = _total(fetched.content)
        if total is None or skip + PAGE_LIMIT >= total:
            return None
        if skip + PAGE_LIMIT > MAX_SKIP:
            raise SourceError(
                f"feed {self.name}: {total:,} openFDA results for {window.since}..{window.until} is more than "
                f"skip paging reaches ({MAX_SKIP:,}); giving up",
                url=redact(self.url),
            )
        return f"{self.url}?{search_query(window, skip=skip + PAGE_LIMIT, api_key=self.api_key)}"

    def _with_key(self, url: str) -> str:
        """The api.data.gov gateway takes api_key off the request, so a Link never has it."""
        if self.api_key and "api_key=" not in url:
            return f"{url}{'&' if '?' in url else '?'}api_key={quote(self.api_key, safe='')}"
        return url


@dataclass(frozen=True)
class OpenFdaBatch:
    """What one poll of an openfda feed found: plain data for the poll pipeline, which
    stores the records and `watermark` (the window's last day) in one transaction."""

    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    window: Window
    requests: int
    watermark: date


def poll_openfda(
    *,
    name: str,
    last_until: date | None,
    now: datetime,
    url: str = DEFAULT_URL,
    api_key: str | None = None,
    lookback_days: int = 30,
    policy: RetryPolicy | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    budget: DayBudget | None = None,
    limiter: Limiter | None = None,
) -> OpenFdaBatch:
    """One poll: plan the window, fetch every page, parse; `SourceError` if any of it fails."""
    window = plan_window(last_until, now, lookback_days=lookback_days)
    with OpenFdaClient(
        url=url, api_key=api_key, name=name, policy=policy, max_bytes=max_bytes, budget=budget, limiter=limiter
    ) as c:
        result = c.fetch(window, now=now)
    records: dict[str, Record] = {}
    warnings: list[str] = []
    for page in result.pages:
        parsed = parse_drugsfda(page, feed_name=name, since=window.since, until=window.until)
        warnings.extend(parsed.warnings)
        for rec in parsed.records:
            records.setdefault(rec.key, rec)  # an application on two pages is one record
    return OpenFdaBatch(tuple(records.values()), tuple(warnings), window, result.requests, window.until)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _error(content: bytes) -> dict[str, object]:
    try:
        body = loads(content, what="openFDA's error answer")
    except (ValueError, ParseError):
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _code(content: bytes) -> str:
    return str(_error(content).get("code", ""))


def _message(content: bytes) -> str:
    return str(_error(content).get("message", "")) or "(no message)"


def _total(content: bytes) -> int | None:
    try:
        for value in ijson.items(io.BytesIO(guarded(content, what="openFDA")), "meta.results.total"):
            return int(value)
    except (ijson.JSONError, ValueError, TypeError, ParseError):
        return None
    return None
