"""Fetching EMA's medicines data file (one JSON document, updated about daily). I/O only:
returns bytes and validators; `parse.ema` reads them. Retries, backoff, Retry-After,
time-outs, the size cap, redirects and the User-Agent come from
`sources.http.HttpClient`.

A conditional GET (RFC 9110 §13.1.1 If-None-Match, §13.1.3 If-Modified-Since) with the
validators of the last 200: on the days the file has not changed, a poll costs one
request and a 304 with no body. One request per cycle either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ..errors import SourceError
from ..parse.ema import parse_ema, staleness
from ..records import Record
from .http import HttpClient, RetryPolicy, redact

__all__ = ["DEFAULT_URL", "EmaBatch", "EmaFetcher", "EmaResponse", "plan_since", "poll_ema"]

DEFAULT_URL = "https://www.ema.europa.eu/en/documents/report/medicines-output-medicines_json-report_en.json"
DEFAULT_MAX_BYTES = 100_000_000  # the report is some 10 MB today
OVERLAP = timedelta(days=14)  # EMA publishes opinions and decisions days after they are taken
ACCEPT = "application/json, */*;q=0.5"


@dataclass(frozen=True)
class EmaResponse:
    status: int  # 200, or 304: unchanged since the validators given
    content: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    final_url: str = ""
    requests: int = 0  # HTTP requests made, retries included


class EmaFetcher:
    """One fetcher per poll (it holds one `requests.Session`); `close()` when done."""

    def __init__(
        self,
        *,
        name: str = "ema",
        max_bytes: int = DEFAULT_MAX_BYTES,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.client = HttpClient(
            policy=policy or RetryPolicy(retries=3, backoff=2.0, max_delay=120.0, timeout=120.0, deadline=900.0),
            max_bytes=max_bytes,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> EmaFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> EmaResponse:
        """GET the file, conditionally; raise `SourceError` when it cannot be had."""
        headers = {"Accept": ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        before = self.client.requests_made
        fetched = self.client.request("GET", url, what=f"feed {self.name}", headers=headers, ok=frozenset({200, 304}))
        made = self.client.requests_made - before
        if fetched.status == 200 and not fetched.content.strip():
            raise SourceError(f"feed {self.name}: empty response from {redact(url)}", url=redact(url), status=200)
        return EmaResponse(
            status=fetched.status,
            content=fetched.content if fetched.status == 200 else b"",
            etag=fetched.headers.get("etag") or etag,
            last_modified=fetched.headers.get("last-modified") or last_modified,
            final_url=fetched.url,
            requests=made,
        )


def plan_since(last_ok: date | None, today: date, *, lookback_days: int = 30, overlap: timedelta = OVERLAP) -> date:
    """The earliest event date a poll reports: two weeks before the last successful poll,
    or `lookback_days` back on the first one."""
    return last_ok - overlap if last_ok else today - timedelta(days=lookback_days)


@dataclass(frozen=True)
class EmaBatch:
    """What one poll of an ema feed found: plain data for the poll pipeline. On a 304
    there are no records and `newest_update` is the one passed in."""

    status: int  # 200 or 304
    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    requests: int
    etag: str | None
    last_modified: str | None
    newest_update: date | None  # keep it: staleness is judged on it after a 304 too
    stale: str | None  # a message when the file has not moved for stale_days
    since: date


def poll_ema(
    *,
    name: str,
    now: datetime,
    url: str = DEFAULT_URL,
    etag: str | None = None,
    last_modified: str | None = None,
    last_ok: date | None = None,
    last_newest_update: date | None = None,
    stale_days: int = 14,
    lookback_days: int = 30,
    max_bytes: int = DEFAULT_MAX_BYTES,
    policy: RetryPolicy | None = None,
) -> EmaBatch:
    """One poll: conditional GET, then parse; `SourceError` (or `ParseError`) if it fails."""
    since = plan_since(last_ok, now.date(), lookback_days=lookback_days)
    with EmaFetcher(name=name, max_bytes=max_bytes, policy=policy) as fetcher:
        resp = fetcher.fetch(url, etag=etag, last_modified=last_modified)
    if resp.status == 304:
        return EmaBatch(
            304,
            (),
            (),
            resp.requests,
            resp.etag,
            resp.last_modified,
            last_newest_update,
            staleness(last_newest_update, now, stale_days) if last_newest_update else None,
            since,
        )
    parsed = parse_ema(resp.content, feed_name=name, since=since)
    return EmaBatch(
        200,
        parsed.records,
        parsed.warnings,
        resp.requests,
        resp.etag,
        resp.last_modified,
        parsed.newest_update,
        staleness(parsed.newest_update, now, stale_days),
        since,
    )
