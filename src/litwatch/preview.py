"""`litwatch check --online`: what each query would find, asked of the real sources
before the first poll, so a query can be tuned before its first digest goes out.

Reads PubMed, the feeds and Crossref (when `crossref:` is configured) and stores
nothing: no database is opened (or created), no watermark or validator is kept.
PubMed windows are the ones a poll of a new query uses (`Service.poll_pubmed`: entry
date, `first_lookback_days` back to today)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .config import CrossrefSettings, FeedSettings, QuerySettings, Settings
from .errors import SourceError
from .parse.pubmed import parse_pubmed
from .sources.eutils import EutilsClient, SearchResult, pubmed_day

RECENT_DAYS = 7
TITLES = 3


@dataclass
class QueryPreview:
    name: str
    total: int = 0  # in all of PubMed
    translation: str = ""
    warnings: list[str] = field(default_factory=list)
    lookback_days: int = 0
    in_lookback: int = 0  # what the first poll would find
    recent: int = 0  # entered in the last RECENT_DAYS days
    titles: list[tuple[str, str, str]] = field(default_factory=list)  # (pmid, entry date, title)
    error: str | None = None

    def lines(self) -> list[str]:
        if self.error:
            return [f"{self.name}: PubMed did not answer: {_unprefixed(self.error, f'query {self.name}: ')}"]
        out = [
            f"{self.name}: {self.total} records; PubMed reads it as: {self.translation or '(no translation)'}",
            f"{self.name}: the first poll would find {self.in_lookback} (first_lookback_days: {self.lookback_days}); "
            f"{self.recent} entered in the last {RECENT_DAYS} days" + ("; recent:" if self.titles else ""),
        ]
        out += [f"  {day or '(no date)'} PMID {pmid}: {title}" for pmid, day, title in self.titles]
        return out


@dataclass
class FeedPreview:
    name: str
    items: int = 0
    matches: dict[str, int] = field(default_factory=dict)  # query name -> items its `match` selects
    error: str | None = None
    window: str = ""  # what "now" means for a preprint feed: "preprints of the last 7 days"
    titles: dict[str, list[str]] = field(default_factory=dict)  # query name -> up to TITLES titles it selects

    def lines(self) -> list[str]:
        if self.error:
            return [f"feed {self.name}: does not answer: {_unprefixed(self.error, f'feed {self.name}: ')}"]
        used = ", ".join(f"{q} matches {n}" for q, n in self.matches.items()) or "no query scans it"
        out = [f"feed {self.name}: answers, {self.items} {self.window or 'items now'}; {used}"]
        for q, titles in self.titles.items():
            out += [f"  {q}: {t}" for t in titles]
        return out


def _unprefixed(message: str, prefix: str) -> str:
    """A source's error without the name this line already starts with."""
    return message.removeprefix(prefix)


def preview_pubmed(client: EutilsClient, q: QuerySettings, lookback_days: int, today: date) -> QueryPreview:
    """Four requests: the whole count and PubMed's translation (and warnings), the
    counts over the first poll's window and the last week, and three of the most
    recently entered records (efetch, the parser a poll uses)."""
    assert q.pubmed
    what = f"query {q.name}"
    out = QueryPreview(q.name, lookback_days=lookback_days)
    try:
        whole = client.esearch(q.pubmed, what=what, retmax=0, usehistory=False)
        out.total, out.translation, out.warnings = whole.count, whole.translation, whole.warnings
        window = _entered(client, q.pubmed, what, lookback_days, today)
        week = _entered(client, q.pubmed, what, RECENT_DAYS, today)
        out.in_lookback, out.recent = window.count, week.count
        # Ids from the week's window when it has any, else from the first poll's: all of
        # them entered in it, so recent whatever order PubMed lists them in.
        ids = (week.ids or window.ids)[:TITLES]
        if ids:
            records = [r for chunk in client.efetch_ids(ids, what=what) for r in parse_pubmed(chunk, what=what)]
            records.sort(key=lambda r: (r.entrez_date, r.key), reverse=True)
            out.titles = [(r.key, r.entrez_date, r.title) for r in records]
    except SourceError as e:
        out.error = str(e)
    return out


def _entered(client: EutilsClient, term: str, what: str, days: int, today: date) -> SearchResult:
    """Records entered (edat) in the last `days` days up to today: count and a few ids."""
    start = today - timedelta(days=days)
    return client.esearch(
        term, what=what, datetype="edat", mindate=start, maxdate=today, retmax=TITLES, usehistory=False
    )


def preview_feed(feed: FeedSettings, queries: Sequence[QuerySettings], now: datetime) -> FeedPreview:
    """One fetch of the feed as a first poll makes it (polls/feedkinds.py: an RSS feed
    unconditionally, an openfda feed its first window of `lookback_days`, the EMA file
    whole), and for each query that scans it how many of its items that query's `match`
    selects."""
    from .polls.feedkinds import fetch

    out = FeedPreview(feed.name)
    if feed.kind in ("biorxiv", "medrxiv"):
        return _preview_preprints(feed, queries, now, out)
    try:
        records = fetch(feed, None, now).records or ()
    except SourceError as e:
        out.error = str(e)
        return out
    out.items = len(records)
    for q in queries:
        if feed.name in q.feeds and q.matcher is not None:
            matcher = q.matcher
            out.matches[q.name] = sum(1 for r in records if matcher.hits(r.title, r.abstract) is not None)
    return out


def _preview_preprints(
    feed: FeedSettings, queries: Sequence[QuerySettings], now: datetime, out: FeedPreview
) -> FeedPreview:
    """A biorxiv or medrxiv feed (issue 27): the preprints posted in the last
    `RECENT_DAYS` days in its categories (`details` only), each query's count and its
    three most recent titles."""
    from .polls.clients import feed_max_bytes, feed_policy
    from .sources import biorxiv

    try:
        records = biorxiv.poll_preprints(
            name=feed.name,
            server=feed.kind,
            last_until=None,
            now=now,
            url=feed.url,
            categories=feed.categories,
            lookback_days=RECENT_DAYS,
            policy=feed_policy(feed),
            max_bytes=feed_max_bytes(feed, biorxiv.DEFAULT_MAX_BYTES),
            pubs=False,
        ).records
    except SourceError as e:
        out.error = str(e)
        return out
    out.items = len(records)
    out.window = f"preprints in the last {RECENT_DAYS} days"
    newest = sorted(records, key=lambda r: (r.pub_date, r.key), reverse=True)
    for q in queries:
        if feed.name in q.feeds and q.matcher is not None:
            matcher = q.matcher
            picked = [r for r in newest if matcher.hits(r.title, r.abstract) is not None]
            out.matches[q.name] = len(picked)
            out.titles[q.name] = [f"{r.pub_date} {r.title}" for r in picked[:TITLES]]
    return out


@dataclass
class CrossrefPreview:
    """Whether Crossref answers, the pool it put litwatch in (`x-api-pool`: "polite"
    with the configured `email`), that pool's limits, and the notices of the last week."""

    pool: str = ""
    limit: int = 0
    interval: float = 0.0
    concurrency: int = 0
    recent: int | None = None
    error: str | None = None

    def lines(self) -> list[str]:
        if self.error:
            return [f"crossref: does not answer: {_unprefixed(self.error, 'Crossref: ')}"]
        pool = self.pool or "not said (no x-api-pool header)"
        pace = f"{self.limit} request(s) per {self.interval:g}s, {self.concurrency} at once"
        out = [f"crossref: answers; pool {pool}: {pace}"]
        if self.pool and not self.pool.startswith("polite"):
            out.append("crossref: not in the polite pool: check crossref.email")
        if self.recent is not None:
            out.append(f"crossref: {self.recent} update notices indexed in the last {RECENT_DAYS} days")
        return out


def preview_crossref(cfg: CrossrefSettings, today: date) -> CrossrefPreview:
    """One request to Crossref's list route (the one polls use), `rows=0`."""
    from .polls.clients import crossref_client

    client = crossref_client(cfg, deadline=min(cfg.deadline, 120))
    try:
        probe = client.probe(today - timedelta(days=RECENT_DAYS))
    except SourceError as e:
        return CrossrefPreview(error=str(e))
    finally:
        client.close()
    return CrossrefPreview(probe.pool, probe.limit, probe.interval, probe.concurrency, probe.total)


class _NoSearchWarnings(logging.Filter):
    """The client logs PubMed's warnings once per esearch, three times per query here;
    the preview reports each once itself (QueryPreview.warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return ": PubMed says: " not in record.getMessage()


def preview(settings: Settings, now: datetime) -> tuple[list[QueryPreview], list[FeedPreview]]:
    """Every PubMed query, then every feed. `now` is naive or aware UTC; PubMed's window
    ends on today's US Eastern day, as a first poll's does."""
    queries: list[QueryPreview] = []
    if any(q.pubmed for q in settings.queries):
        from .polls.clients import eutils_client

        client = eutils_client(settings.pubmed)
        quiet = _NoSearchWarnings()
        eutils_log = logging.getLogger(EutilsClient.__module__)
        eutils_log.addFilter(quiet)
        try:
            for q in settings.queries:
                if q.pubmed:
                    queries.append(preview_pubmed(client, q, settings.pubmed.first_lookback_days, pubmed_day(now)))
        finally:
            eutils_log.removeFilter(quiet)
            client.close()
    feeds = [preview_feed(f, settings.queries, now) for f in settings.feeds]
    return queries, feeds
