"""Polling a feed, of every kind (rss, openfda, ema: how each is fetched is in
feedkinds.py): each feed is fetched once for all the queries that scan it; matching
entries become `new`/`approval` events, and changes to an entry that once matched become
`update` events even if it no longer matches. Records, events and the feed's progress
(validators, watermark) commit together.

A feed is shared: its validators and its Cache-Control wait belong to the feed, not to
a query. So the entries of its last answer are kept (`feed_entries`), and every query
scanning the feed is matched against them once, whichever query's poll fetched it: with
a new answer, or, for a query that has not matched them yet (it was added to the config
later, or its `match` changed), at its next poll, when the feed answers 304, is still
fresh, or fails. Each query notes in its own `poll_state` row (query, feed) which answer
it matched; `hits` make each (query, entry) pair one event only.

One failure path for every kind: a fetch or parse that fails is the feed's recorded
failure (nothing of it stored, its watermark kept; a feed gone for good is disabled),
and the queries behind on the stored entries still match them; what the database
refuses of an answer is the feed's failure too, not the cycle's."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ..config import FeedSettings, QuerySettings, Settings
from ..errors import SourceError, StoreError, first_line
from ..ingest import Batch, Ingested, Progress, ingest, record_failure
from ..records import SHARED, Record, feed_source
from ..sources.feeds import FeedGoneError
from ..store.ports import ClaimsPort, IngestPort
from .answers import FeedAnswer, Prepared
from .clients import contact
from .feedkinds import fetch, matchable
from .results import PollResult

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

__all__ = ["poll_feed"]


def poll_feed(
    settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime, *, claims: ClaimsPort | None = None
) -> PollResult:
    """Fetch `feed` (of any kind) and ingest what it holds for every query scanning it.
    `claims`: the database the request budgets are kept in (None: this process's own)."""
    source = feed_source(feed.name)
    result = PollResult(feed.name, source)
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, source)
    if state is not None and state.disabled:
        result.error = f"feed {feed.name} is disabled: {state.last_error}"
        return result
    users = [q for q in settings.queries if feed.name in q.feeds and q.matcher is not None]
    try:
        answer = fetch(feed, state, now, claims, contact(settings))
    except FeedGoneError as e:
        result.error = str(e)
        log.warning("poll feed=%s: %s", feed.name, e)
        with store.transaction() as tx:
            store.poll_failed(tx, SHARED, source, str(e), now, disabled=True)
        return result
    except SourceError as e:
        _failed(store, feed, users, now, result, str(e))
        _log(feed, result, "failed")
        return result
    result.requests = answer.requests
    result.found = len(answer.records or ())
    for w in answer.warnings:
        log.warning("poll feed=%s: %s", feed.name, w)
        result.warnings.append(w)
    try:
        done = store.write(lambda tx: _store(store, tx, feed, users, answer, now), what=f"feed {feed.name}")
    except StoreError as e:
        # what the source sent, the database refused: this feed's failure, not the cycle's
        result.error = f"feed {feed.name}: could not store its entries: {first_line(e)}"
        log.warning("poll feed=%s: %s", feed.name, result.error)
        record_failure(store, SHARED, source, result.error, now)
    else:
        result.new, result.changed, result.events = done.new, done.changed, done.events
    _log(feed, result, answer.what)
    return result


def _store(
    store: IngestPort,
    tx: Connection,
    feed: FeedSettings,
    users: Sequence[QuerySettings],
    answer: FeedAnswer,
    now: datetime,
) -> Ingested:
    """One transaction: a new answer's records and every query's matches in it, the
    answer kept as the feed's entries; for the queries that have not matched the stored
    entries yet, theirs too (with a new answer, or alone after a 304); the progress."""
    source = feed_source(feed.name)
    progress = [Progress(SHARED, source, answer.values)]
    if answer.records is None:
        batch = _behind(store, tx, feed, users) or Batch(feed.name, source)
    else:
        got = (
            answer.prepare(store, tx)
            if answer.prepare is not None
            else Prepared(answer.records, answer.records, answer.records)
        )
        batch = _matched(feed, users, got.fresh, generation=now)
        stored = _behind(store, tx, feed, users)
        for q, matched in stored.matches.items() if stored is not None else ():
            for key, hit in matched.items():
                batch.matches.setdefault(q, {}).setdefault(key, hit)

        def entries(tx: Connection, ids: dict[tuple[str, str], int]) -> None:
            kept = dict.fromkeys(ids[(r.source, r.key)] for r in got.entries)
            store.set_feed_entries(tx, source, list(kept), now)

        batch.records, batch.bookkeeping, batch.crossref = got.records, [entries], got.notices
    batch.progress = progress
    return ingest(store, tx, batch, now)


def _matched(
    feed: FeedSettings, queries: Sequence[QuerySettings], entries: Sequence[Record], *, generation: datetime
) -> Batch:
    """A batch of what each of `queries` matches among `entries` (the feed's answer of
    `generation`), and the note that each has matched that answer."""
    source = feed_source(feed.name)
    batch = Batch(feed.name, source, approvals=feed.approvals)
    for q in queries:
        assert q.matcher is not None
        matched: dict[tuple[str, str], tuple[str, ...]] = {}
        for rec in entries:
            hit = q.matcher.hits(rec.title, rec.abstract)
            if hit is not None:
                matched[(rec.source, rec.key)] = hit
        batch.matches[q.name] = matched
        batch.marks.append((q.name, source, _marker(generation, q)))
    return batch


def _behind(store: IngestPort, tx: Connection, feed: FeedSettings, queries: Sequence[QuerySettings]) -> Batch | None:
    """The one catch-up: what the feed's stored entries give the queries that have not
    matched them yet (None: none is behind, or nothing is stored)."""
    source = feed_source(feed.name)
    generation, record_ids = store.feed_entries(tx, source)
    if generation is None:
        return None
    behind = []
    for q in queries:
        row = store.poll_state(tx, q.name, source)
        if row is None or row.watermark != _marker(generation, q):
            behind.append(q)
    if not behind:
        return None
    current = store.current_by_id(tx, set(record_ids))
    stored = [current[rid].record for rid in record_ids if rid in current and matchable(feed, current[rid].record)]
    return _matched(feed, behind, stored, generation=generation)


def _failed(
    store: IngestPort, feed: FeedSettings, users: Sequence[QuerySettings], now: datetime, result: PollResult, error: str
) -> None:
    """A fetch or parse that failed: recorded, nothing stored, the watermark kept; the
    queries behind on the stored entries still match them."""
    result.error = error
    log.warning("poll feed=%s: %s", feed.name, error)
    record_failure(store, SHARED, feed_source(feed.name), error, now)
    try:
        result.events = store.write(
            lambda tx: ingest(store, tx, _behind(store, tx, feed, users) or Batch(feed.name, ""), now).events,
            what=f"feed {feed.name}",
        )
    except StoreError as e:
        log.warning("poll feed=%s: could not match the stored entries: %s", feed.name, first_line(e))


def _marker(generation: datetime, q: QuerySettings) -> str:
    """What a query notes when it has matched a feed's answer: the answer's time and its
    `match` (edit the expression, and the entries are matched again, like a new query)."""
    digest = hashlib.sha256((q.match or "").encode("utf-8")).hexdigest()[:16]
    return f"{generation.replace(microsecond=0).isoformat()} {digest}"


def _log(feed: FeedSettings, result: PollResult, what: str) -> None:
    log.info(
        "poll feed=%s kind=%s %s found=%d new=%d changed=%d events=%d requests=%d error=%s",
        feed.name,
        feed.kind,
        what or "-",
        result.found,
        result.new,
        result.changed,
        result.events,
        result.requests,
        result.error or "-",
    )
