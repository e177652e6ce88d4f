"""Polling the preprint servers (issue 27): feeds of kind `biorxiv` and `medrxiv`
(api.biorxiv.org, sources/biorxiv.py), on the poll pipeline like the regulatory feeds
(feedkinds.py): fetched on every poll cycle, matched locally with each query's `match`,
the answer kept as the feed's entries so a query added later matches them too.

- Window: from the last day of the last one (asked again: it was not over then) (the feed's
  `poll_state.watermark`, an ISO day) to today, on the posting date; the first poll
  reaches back `lookback_days`. One `details` request per page (30 preprints) and
  category, one `pubs` request per page of journal versions: 2-4 a day for a feed with
  a category or two. Requests keep to 1 a second per API host across every process on
  the database (`coordination.RequestBudget`).
- A preprint is one record keyed by its DOI; each version is a version of it. What a
  query has not matched before is `new` when it matches; a new version of one it did is
  an `update` ("new version vN", the diff in `history`); a withdrawal (a version of type
  "withdrawn") a `retraction` shown as "Withdrawn". A withdrawn preprint no query had is
  not news.
- A journal version (`pubs`, or `details`' `published`) is stored on the record
  (`published_doi`, `published_journal`) and reported as a notice from the server
  (`parse.crossref.Notice` of type new_version, source "biorxiv"/"medrxiv"), so the
  pipeline's notice attribution makes it one `update` per preprint ("Newer version:
  published in JOURNAL", with the journal DOI), recorded in `notice_reports` and met
  by Crossref's or PubMed's report of the same version. That report is also how the
  journal article, reaching litwatch later through PubMed or a feed, is known to be
  the same work: it is not `new` for the queries that had the preprint
  (`pipeline._heard_as_preprint`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING

from .config import FeedSettings, QuerySettings, Settings
from .coordination import RequestBudget
from .errors import SourceError, StoreError, first_line
from .events import is_withdrawn
from .feedpoll import _catch_up_alone, _marker, _matched
from .parse.biorxiv import Published
from .parse.crossref import Notice
from .pipeline import SHARED, Batch, Ingested, PollResult, Progress, ingest, record_failure
from .records import Record
from .sources import biorxiv
from .sources.http import Limiter, RetryPolicy
from .store.ports import ClaimsPort, IngestPort

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

__all__ = ["fetch_preprints", "poll_preprint_feed"]


def poll_preprint_feed(
    settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime, *, claims: ClaimsPort | None = None
) -> PollResult:
    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, source)
    users = _users(settings, feed)
    limiter = None
    if claims is not None:
        host = biorxiv.host(feed.url)
        limiter = RequestBudget(claims, f"preprints:{host}", biorxiv.PER_SECOND)
    try:
        got = fetch_preprints(
            settings, feed, now, _day(state.watermark) if state is not None else None, limiter=limiter
        )
    except SourceError as e:
        _failed(store, feed, users, now, result, str(e))
        return result
    result.requests = got.requests
    _warn(feed, result, got.warnings)
    result.found = len(got.records)
    progress = [Progress(SHARED, source, {"watermark": got.window.until.isoformat()})]

    def write(tx: Connection) -> Ingested:
        return ingest(store, tx, _batch(store, tx, feed, users, got, progress, now), now)

    try:
        done = store.write(write, what=f"feed {feed.name}")
    except StoreError as e:
        _store_failed(store, feed, now, result, e)
    else:
        result.new, result.changed, result.events = done.new, done.changed, done.events
    _log(feed, result, f"window={got.window.since}..{got.window.until} posted={got.posted}")
    return result


def fetch_preprints(
    settings: Settings,
    feed: FeedSettings,
    now: datetime,
    last_until: date | None,
    *,
    limiter: Limiter | None = None,
    pubs: bool = True,
) -> biorxiv.PreprintBatch:
    """The window after `last_until` (None: `lookback_days` back), fetched and parsed
    with the feed's settings (polls, and `check --online`)."""
    return biorxiv.poll_preprints(
        name=feed.name,
        server=feed.kind,
        last_until=last_until,
        now=now,
        url=feed.url,
        categories=feed.categories,
        lookback_days=feed.first_lookback_days,
        contact=contact(settings),
        policy=source_policy(feed),
        max_bytes=max_bytes_for(feed, biorxiv.DEFAULT_MAX_BYTES),
        limiter=limiter,
        pubs=pubs,
    )


def contact(settings: Settings) -> str | None:
    """The address for the User-Agent: Crossref's polite-pool address, else PubMed's."""
    if settings.crossref is not None and settings.crossref.email:
        return settings.crossref.email
    return settings.pubmed.email or None


def _batch(
    store: IngestPort,
    tx: Connection,
    feed: FeedSettings,
    users: Sequence[QuerySettings],
    got: biorxiv.PreprintBatch,
    progress: list[Progress],
    now: datetime,
) -> Batch:
    """The poll's batch: the answer's preprints merged with what is stored of them, the
    stored preprints whose journal version was announced, every query's matches, the
    journal versions as the server's notices."""
    source = f"feed:{feed.name}"
    links = {p.preprint_doi: p for p in got.published}
    answer = list(got.records)
    stored = store.current(tx, source, {r.key for r in answer} | set(links))
    records: list[Record] = []
    for rec in answer:
        cur = stored.get(rec.key)
        if cur is not None and _version(cur.record) > _version(rec):
            continue  # an older version than the one stored (a window that reaches back): nothing new
        records.append(_merged(rec, cur.record if cur is not None else None, links.get(rec.key)))
    in_answer = {r.key for r in answer}
    for doi, link in links.items():
        cur = stored.get(doi)
        if doi in in_answer or cur is None:
            continue
        merged = _merged(cur.record, cur.record, link)
        if merged != cur.record:
            records.append(merged)
    # a withdrawn preprint is news only to a query that had it (a change of a known record)
    fresh = [r for r in records if r.key in in_answer and not is_withdrawn(r)]
    batch = _matched(feed, users, fresh, generation=now)
    _behind(store, tx, feed, users, batch)
    entries_of = [r for r in records if r.key in in_answer]

    def entries(tx: Connection, ids: dict[tuple[str, str], int]) -> None:
        store.set_feed_entries(tx, source, list(dict.fromkeys(ids[(r.source, r.key)] for r in entries_of)), now)

    batch.records, batch.progress, batch.bookkeeping = records, progress, [entries]
    batch.crossref = [_notice(feed, r, links.get(r.key)) for r in records if r.published_doi]
    return batch


def _merged(rec: Record, stored: Record | None, link: Published | None) -> Record:
    """`rec` with the journal version the stored record or `pubs` knows (`details` says
    only the DOI, `pubs` the journal too): what is known of it is never lost."""
    doi = rec.published_doi or (stored.published_doi if stored is not None else "")
    journal = ""
    if link is not None:
        doi = link.published_doi
        journal = link.journal
    if not journal and stored is not None and stored.published_doi == doi:
        journal = stored.published_journal
    return replace(rec, published_doi=doi, published_journal=journal if doi else "")


def _notice(feed: FeedSettings, r: Record, link: Published | None) -> Notice:
    """The server's report that preprint `r` has a journal version (`link`: as `pubs`
    announced it this poll, with its date)."""
    where = f"published in {r.published_journal}" if r.published_journal else "published in a journal"
    return Notice(
        kind="update",
        type="new_version",
        target_doi=r.doi.lower(),
        notice_doi=r.published_doi,
        source=feed.kind,
        date=link.date if link is not None and link.published_doi == r.published_doi else "",
        label="Published",
        notice_title=where,
    )


def _behind(
    store: IngestPort, tx: Connection, feed: FeedSettings, users: Sequence[QuerySettings], batch: Batch
) -> None:
    """The stored entries, for the queries that have not matched them (added later, or
    `match` edited); withdrawn preprints left out."""
    source = f"feed:{feed.name}"
    generation, record_ids = store.feed_entries(tx, source)
    if generation is None:
        return
    behind = []
    for q in users:
        row = store.poll_state(tx, q.name, source)
        if row is None or row.watermark != _marker(generation, q):
            behind.append(q)
    if not behind:
        return
    current = store.current_by_id(tx, set(record_ids))
    stored = [current[rid].record for rid in record_ids if rid in current and not is_withdrawn(current[rid].record)]
    for q in behind:
        assert q.matcher is not None
        matched = batch.matches.setdefault(q.name, {})
        for rec in stored:
            hit = q.matcher.hits(rec.title, rec.abstract)
            if hit is not None:
                matched.setdefault((rec.source, rec.key), hit)


def _version(r: Record) -> int:
    return int(r.preprint_version) if r.preprint_version.isdigit() else 0


# --------------------------------------------------------------------------- as feedkinds.py
# (feedkinds.py dispatches to this module, so these few are its own, not imported back)


def _users(settings: Settings, feed: FeedSettings) -> list[QuerySettings]:
    return [q for q in settings.queries if feed.name in q.feeds and q.matcher is not None]


def _day(value: str | None) -> date | None:
    """The ISO day kept in `watermark`; anything else starts over with the look-back."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _failed(
    store: IngestPort, feed: FeedSettings, users: Sequence[QuerySettings], now: datetime, result: PollResult, error: str
) -> None:
    """A fetch or parse that failed: recorded, nothing stored, the watermark kept; the
    queries behind on the stored entries still match them."""
    result.error = error
    log.warning("poll feed=%s: %s", feed.name, error)
    record_failure(store, SHARED, f"feed:{feed.name}", error, now)
    _catch_up_alone(store, feed, users, now, result)


def _store_failed(store: IngestPort, feed: FeedSettings, now: datetime, result: PollResult, e: StoreError) -> None:
    result.error = f"feed {feed.name}: could not store its entries: {first_line(e)}"
    log.warning("poll feed=%s: %s", feed.name, result.error)
    result.new = result.changed = result.events = 0
    record_failure(store, SHARED, f"feed:{feed.name}", result.error, now)


def _warn(feed: FeedSettings, result: PollResult, warnings: Sequence[str]) -> None:
    for w in warnings:
        log.warning("poll feed=%s: %s", feed.name, w)
        result.warnings.append(w)


def _log(feed: FeedSettings, result: PollResult, what: str) -> None:
    log.info(
        "poll feed=%s kind=%s %s found=%d new=%d changed=%d events=%d requests=%d error=%s",
        feed.name,
        feed.kind,
        what,
        result.found,
        result.new,
        result.changed,
        result.events,
        result.requests,
        result.error or "-",
    )


def source_policy(feed: FeedSettings) -> RetryPolicy | None:
    """The feed's own retries and time-out when the config sets them, else the source's."""
    if not {"timeout", "retries", "backoff"} & feed.model_fields_set:
        return None
    return RetryPolicy(
        retries=feed.retries, backoff=feed.backoff, timeout=feed.timeout, deadline=max(120.0, 4 * feed.timeout)
    )


def max_bytes_for(feed: FeedSettings, default: int) -> int:
    return feed.max_mb * 1_000_000 if "max_mb" in feed.model_fields_set else default
