"""Fetching one RSS/Atom feed over HTTP. Owns the feed-specific HTTP rules; retries,
backoff, Retry-After, the size cap, time-outs and the User-Agent come from
`sources.http.HttpClient`. Returns bytes and validators; never looks inside the XML.

* Conditional GET (RFC 9110 §13.1.1 If-None-Match, §13.1.3 If-Modified-Since) with the
  validators of the last 200; a 304 (RFC 9110 §15.4.5) carries no body and costs nothing.
* Redirects are followed (at most 10, then `SourceError`); when every hop was 301 or 308
  (RFC 9110 §15.4.2, §15.4.9: "permanent") the caller is told so it can note the new URL.
* ``Cache-Control: max-age`` (RFC 9111 §5.2.2.1, less ``Age``, §4.2.3) gives
  `FeedResponse.fresh_until`; the caller passes it back as `not_before` and no request is
  made before then. It is capped at `MAX_FRESHNESS` so a server cannot silence a feed.
* 410 Gone (RFC 9110 §15.5.11: "likely to be permanent") is `FeedGoneError`; any other
  4xx is a `SourceError`; 5xx and 429 are retried by HttpClient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from ..errors import SourceError
from .http import HttpClient, RetryPolicy, redact

__all__ = ["FeedFetcher", "FeedGoneError", "FeedResponse", "MAX_FRESHNESS"]

DEFAULT_MAX_BYTES = 20_000_000
MAX_FRESHNESS = timedelta(days=1)
PERMANENT_REDIRECTS = frozenset({301, 308})
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-cache|no-store)\b", re.IGNORECASE)


class FeedGoneError(SourceError):
    """The server says the feed is gone for good (HTTP 410): stop polling it."""


@dataclass(frozen=True)
class FeedResponse:
    status: int  # 200, 304, or 0 when skipped
    content: bytes = b""
    final_url: str = ""  # after redirects
    permanent_redirect: bool = False  # every redirect hop was 301/308: note final_url
    etag: str | None = None
    last_modified: str | None = None
    fresh_until: datetime | None = None  # do not fetch again before this (Cache-Control)
    content_type: str | None = None
    skipped: bool = False  # not fetched: `now` was before `not_before`


class FeedFetcher:
    """One fetcher per poll (it holds one `requests.Session`); `close()` when done."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        policy: RetryPolicy | None = None,
        name: str = "",
    ) -> None:
        self.policy = policy or RetryPolicy(retries=3, backoff=1.0, max_delay=60.0, timeout=timeout, deadline=120.0)
        self.name = name
        self.client = HttpClient(policy=self.policy, max_bytes=max_bytes)
        self._hops: list[tuple[int, str]] = []
        # Session hooks see every response, the intermediate redirects included, which
        # is the only place their status codes (301 vs 302) are visible.
        self.client.session.hooks["response"].append(self._note_hop)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> FeedFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _note_hop(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.is_redirect:
            self._hops.append((response.status_code, response.url))

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        not_before: datetime | None = None,
        now: datetime,
    ) -> FeedResponse:
        """GET the feed, conditionally; raise `SourceError` (or `FeedGoneError`) when
        it cannot be had. A naive `now` or `not_before` is taken as UTC (SQLite hands
        back naive datetimes)."""
        if not_before is not None and _utc(now) < _utc(not_before):
            return FeedResponse(status=0, final_url=url, skipped=True, fresh_until=not_before)
        headers = {"Accept": ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        what = f"feed {self.name}" if self.name else "feed"
        self._hops = []
        try:
            fetched = self.client.request("GET", url, what=what, headers=headers, ok=frozenset({200, 304}))
        except SourceError as e:
            if e.status == 410:
                raise FeedGoneError(
                    f"feed {self.name or redact(url)} is gone (HTTP 410 from {redact(url)}); disable or remove it",
                    url=e.url,
                    status=410,
                ) from e
            raise
        hops = [status for status, _ in self._hops]
        return FeedResponse(
            status=fetched.status,
            content=fetched.content if fetched.status == 200 else b"",
            final_url=fetched.url,
            permanent_redirect=bool(hops) and all(s in PERMANENT_REDIRECTS for s in hops),
            etag=fetched.headers.get("etag") or etag,
            last_modified=fetched.headers.get("last-modified") or last_modified,
            fresh_until=fresh_until(fetched.headers, now),
            content_type=fetched.headers.get("content-type"),
        )


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def fresh_until(headers: dict[str, str], now: datetime) -> datetime | None:
    """`now` + Cache-Control max-age − Age, capped at MAX_FRESHNESS; None if the
    response may not be reused (no-cache, no-store) or says nothing."""
    cache_control = headers.get("cache-control", "")
    if not cache_control or _NO_CACHE.search(cache_control):
        return None
    m = _MAX_AGE.search(cache_control)
    if m is None:
        return None
    age = headers.get("age", "0").strip()
    seconds = int(m.group(1)) - (int(age) if age.isdigit() else 0)
    if seconds <= 0:
        return None
    return now + min(timedelta(seconds=seconds), MAX_FRESHNESS)
