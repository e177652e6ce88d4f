"""The bioRxiv/medRxiv API client (https://api.biorxiv.org, help pages at
``/details/help`` and ``/pubs/help``; issue 27). I/O only: fetches the pages of one
window of `details` and of `pubs` for one server and hands each to `parse.biorxiv`.

- ``{base}/details/{server}/{from}/{to}/{cursor}`` and ``{base}/pubs/{server}/{from}/{to}/{cursor}``,
  dates YYYY-MM-DD (the posting date; the day the journal version appeared), an
  optional ``?category=`` with spaces as ``_``. The server ignores a category it does
  not know and answers every category: config.py checks them against `CATEGORIES`.
- Paging by cursor, by what `messages[0]` reports (30 items a page in answers of 2026,
  100 in the help page), at most `max_pages` pages a window.
- No key and no published rate limit: litwatch asks at most `PER_SECOND` request a
  second per server host across every process on the database (the poll passes a
  `coordination.RequestBudget`), with a contact address in the User-Agent, and backs
  off on 429 and 5xx (Retry-After obeyed; `sources.http.HttpClient`).
- Windows: from the last day of the last successful window (asked again: it was not
  over then; `OVERLAP` more days before it) to today (the first poll:
  `lookback_days` back, and `details` only: a preprint already published says so in
  its `published` field) to today, in UTC days; a preprint seen twice is one record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote

from .. import __version__
from ..errors import SourceError
from ..parse.biorxiv import CATEGORIES, DetailsPage, Published, PubsPage, normal_category, parse_details, parse_pubs
from ..records import Record
from .http import HttpClient, Limiter, RetryPolicy, redact, shared_limiter

__all__ = [
    "CATEGORIES",
    "DEFAULT_URL",
    "PER_SECOND",
    "PreprintBatch",
    "PreprintClient",
    "Window",
    "plan_window",
    "poll_preprints",
]

DEFAULT_URL = "https://api.biorxiv.org"
PER_SECOND = 1
OVERLAP = timedelta(days=0)  # the last window's last day is asked again: it was not over then
DEFAULT_MAX_BYTES = 16_000_000  # a page of 30-100 preprints with abstracts is ~100-300 kB
MAX_PAGES = 200


@dataclass(frozen=True)
class Window:
    since: date
    until: date

    @property
    def path(self) -> str:
        return f"{self.since.isoformat()}/{self.until.isoformat()}"


def plan_window(last_until: date | None, now: datetime, *, lookback_days: int = 30) -> Window:
    """From the last window's last day (less `OVERLAP`; or `lookback_days` back) to today."""
    today = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(UTC).date()
    since = last_until - OVERLAP if last_until else today - timedelta(days=lookback_days)
    return Window(min(since, today), today)


def user_agent(contact: str | None) -> str:
    """The API's operators ask nothing, but a polite client says who to write to."""
    mail = f"; mailto:{contact}" if contact else ""
    return f"litwatch/{__version__} (+https://github.com/litwatch/litwatch{mail})"


class PreprintClient:
    """One client per poll of one server; `close()` when done."""

    def __init__(
        self,
        *,
        server: str,
        url: str = DEFAULT_URL,
        name: str = "preprints",
        contact: str | None = None,
        policy: RetryPolicy | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        limiter: Limiter | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.server = server
        self.url = url.rstrip("/")
        self.name = name
        self.max_pages = max_pages
        self.client = HttpClient(
            policy=policy or RetryPolicy(retries=4, backoff=2.0, max_delay=120.0, timeout=60.0, deadline=600.0),
            max_bytes=max_bytes,
            limiter=limiter or shared_limiter(host(self.url), PER_SECOND),
            user_agent=user_agent(contact),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> PreprintClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def details(self, window: Window, category: str | None = None) -> list[DetailsPage]:
        pages: list[DetailsPage] = []
        cursor: int | None = 0
        while cursor is not None:
            body = self._get("details", window, cursor, category)
            page = parse_details(body, feed_name=self.name, server=self.server)
            pages.append(page)
            cursor = self._next(page.paging.next_cursor(), cursor, window, "details")
        return pages

    def pubs(self, window: Window) -> list[PubsPage]:
        pages: list[PubsPage] = []
        cursor: int | None = 0
        while cursor is not None:
            body = self._get("pubs", window, cursor, None)
            page = parse_pubs(body, feed_name=self.name)
            pages.append(page)
            cursor = self._next(page.paging.next_cursor(), cursor, window, "pubs")
        return pages

    def _next(self, nxt: int | None, cursor: int, window: Window, endpoint: str) -> int | None:
        if nxt is None:
            return None
        if nxt <= cursor:  # a server that does not move on would be asked for ever
            raise SourceError(
                f"feed {self.name}: {endpoint} paging did not advance at cursor {cursor}", url=redact(self.url)
            )
        if nxt // max(1, nxt - cursor) >= self.max_pages:
            raise SourceError(
                f"feed {self.name}: more than {self.max_pages} pages of {endpoint} for {window.path}; giving up",
                url=redact(self.url),
            )
        return nxt

    def _get(self, endpoint: str, window: Window, cursor: int, category: str | None) -> bytes:
        url = f"{self.url}/{endpoint}/{self.server}/{window.path}/{cursor}"
        if category:
            url += f"?category={quote(normal_category(category).replace(' ', '_'), safe='')}"
        fetched = self.client.request("GET", url, what=f"feed {self.name}", headers={"Accept": "application/json"})
        return fetched.content


@dataclass(frozen=True)
class PreprintBatch:
    """What one poll of a preprint feed found: the newest version of each preprint posted
    in the window, the journal versions announced in it, and the window's end."""

    records: tuple[Record, ...]
    published: tuple[Published, ...]
    warnings: tuple[str, ...]
    window: Window
    requests: int
    posted: int  # versions the details answers listed


def poll_preprints(
    *,
    name: str,
    server: str,
    last_until: date | None,
    now: datetime,
    url: str = DEFAULT_URL,
    categories: tuple[str, ...] = (),
    lookback_days: int = 30,
    contact: str | None = None,
    policy: RetryPolicy | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    limiter: Limiter | None = None,
    pubs: bool = True,
) -> PreprintBatch:
    """One poll: the window's `details` (per category, or all) and `pubs`; `SourceError`
    if any of it fails (nothing of the window is returned then)."""
    window = plan_window(last_until, now, lookback_days=lookback_days)
    records: dict[str, Record] = {}
    published: dict[str, Published] = {}
    warnings: list[str] = []
    posted = 0
    with PreprintClient(
        server=server, url=url, name=name, contact=contact, policy=policy, max_bytes=max_bytes, limiter=limiter
    ) as c:
        for category in categories or (None,):
            for page in c.details(window, category):
                warnings.extend(page.warnings)
                posted += page.items
                for rec in page.records:
                    have = records.get(rec.key)
                    if have is None or _v(have) <= _v(rec):
                        records[rec.key] = rec
        # the first poll stores no preprint yet but the window's, whose `published` says it
        if pubs and last_until is not None:
            for p in c.pubs(window):
                warnings.extend(p.warnings)
                for link in p.links:
                    published[link.preprint_doi] = link
        requests = c.requests_made
    if categories:  # the server ignores a category it does not know: keep only what was asked for
        wanted = {normal_category(cat) for cat in categories}
        records = {k: r for k, r in records.items() if not r.keywords or normal_category(r.keywords[0]) in wanted}
    return PreprintBatch(tuple(records.values()), tuple(published.values()), tuple(warnings), window, requests, posted)


def _v(r: Record) -> int:
    return int(r.preprint_version) if r.preprint_version.isdigit() else 0


def host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]
