"""Polling RSS/Atom feeds: each feed is fetched once (conditionally) for all the
queries that scan it; matching entries become `new`/`approval` events, and changes to
an entry that once matched become `update` events even if it no longer matches.
Records, events and the feed's validators (ETag, Last-Modified) commit together.

A feed is shared: its validators and its Cache-Control wait belong to the feed, not to
a query. So the entries of its last 200 answer are kept (`feed_entries`), and every
query scanning the feed is matched against them once, whichever query's poll fetched
it: at the 200 itself, or, for a query that has not matched them yet (it was added to
the config later, or its `match` changed), at its next poll, when the feed answers 304,
is still fresh, or fails. Each query notes in its own `poll_state` row (query, feed)
which answer it matched; `hits` make each (query, entry) pair one event only."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..config import FeedSettings, QuerySettings, Settings
from ..errors import SourceError, StoreError, first_line
from ..ingest import SHARED, Batch, PollResult, Progress, ingest, record_failure
from ..parse.feeds import parse_feed
from ..records import Record
from ..sources.feeds import FeedFetcher, FeedGoneError, FeedResponse
from ..sources.http import RetryPolicy
from ..store.ports import IngestPort

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)


def poll_feed(settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime) -> PollResult:
    """Fetch `feed` (conditionally) and ingest what it holds for every query scanning it."""
    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, source)
    if state is not None and state.disabled:
        result.error = f"feed {feed.name} is disabled: {state.last_error}"
        return result
    # a permanent redirect noted earlier is followed, unless the config's URL changed since
    url = state.url if state is not None and state.url and state.watermark == feed.url else feed.url
    policy = RetryPolicy(
        retries=feed.retries, backoff=feed.backoff, timeout=feed.timeout, deadline=max(120.0, 4 * feed.timeout)
    )
    fetcher = FeedFetcher(max_bytes=feed.max_mb * 1_000_000, policy=policy, name=feed.name)
    users = [q for q in settings.queries if feed.name in q.feeds and q.matcher is not None]
    try:
        resp = fetcher.fetch(
            url,
            etag=state.etag if state is not None and url == (state.url or feed.url) else None,
            last_modified=state.last_modified if state is not None and url == (state.url or feed.url) else None,
            not_before=state.fresh_until if state is not None else None,
            now=now,
        )
        result.requests = 0 if resp.skipped else 1
        progress = [Progress(SHARED, source, _validators(resp, feed))]
        if resp.skipped or resp.status == 304:
            result.events = store.write(
                lambda tx: _catch_up(store, tx, feed, users, now, progress), what=f"feed {feed.name}"
            )
            return result
        parsed = parse_feed(
            resp.content, feed_name=feed.name, base_url=resp.final_url or url, content_type=resp.content_type
        )
        result.warnings += list(parsed.warnings)
        result.found = len(parsed.records)

        def entries(tx: Connection, ids: dict[tuple[str, str], int]) -> None:
            store.set_feed_entries(tx, source, list(dict.fromkeys(ids[(r.source, r.key)] for r in parsed.records)), now)

        batch = _matched(feed, users, parsed.records, generation=now)
        batch.records, batch.progress, batch.bookkeeping = parsed.records, progress, [entries]
        done = store.write(lambda tx: ingest(store, tx, batch, now), what=f"feed {feed.name}")
        result.new, result.changed, result.events = done.new, done.changed, done.events
    except FeedGoneError as e:
        result.error = str(e)
        with store.transaction() as tx:
            store.poll_failed(tx, SHARED, source, str(e), now, disabled=True)
    except SourceError as e:
        result.error = str(e)
        record_failure(store, SHARED, source, str(e), now)
        _catch_up_alone(store, feed, users, now, result)
    except StoreError as e:
        # what this feed sent, the database refused: this feed's failure, not the cycle's
        result.error = f"feed {feed.name}: could not store its entries: {first_line(e)}"
        log.warning("poll feed=%s: %s", feed.name, result.error)
        result.new = result.changed = result.events = 0
        record_failure(store, SHARED, source, result.error, now)
    finally:
        fetcher.close()
    log.info(
        "poll feed=%s found=%d new=%d changed=%d events=%d error=%s",
        feed.name,
        result.found,
        result.new,
        result.changed,
        result.events,
        result.error or "-",
    )
    return result


def _matched(
    feed: FeedSettings, queries: Sequence[QuerySettings], entries: Sequence[Record], *, generation: datetime
) -> Batch:
    """A batch of what each of `queries` matches among `entries` (the feed's answer of
    `generation`), and the note that each has matched that answer."""
    source = f"feed:{feed.name}"
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


def _catch_up(
    store: IngestPort,
    tx: Connection,
    feed: FeedSettings,
    queries: Sequence[QuerySettings],
    now: datetime,
    progress: Sequence[Progress] = (),
) -> int:
    """Match the feed's stored current entries against the queries that have not yet."""
    source = f"feed:{feed.name}"
    generation, record_ids = store.feed_entries(tx, source)
    behind = []
    if generation is not None:
        for q in queries:
            row = store.poll_state(tx, q.name, source)
            if row is None or row.watermark != _marker(generation, q):
                behind.append(q)
    if not behind:
        batch = Batch(feed.name, source, progress=list(progress))
    else:
        assert generation is not None
        current = store.current_by_id(tx, record_ids)
        entries = [current[rid].record for rid in record_ids if rid in current]
        batch = _matched(feed, behind, entries, generation=generation)
        batch.progress = list(progress)
    return ingest(store, tx, batch, now).events


def _catch_up_alone(
    store: IngestPort, feed: FeedSettings, queries: Sequence[QuerySettings], now: datetime, result: PollResult
) -> None:
    """After a failed fetch: queries that have not matched the stored entries still do."""
    try:
        result.events = store.write(lambda tx: _catch_up(store, tx, feed, queries, now), what=f"feed {feed.name}")
    except StoreError as e:
        log.warning("poll feed=%s: could not match the stored entries: %s", feed.name, first_line(e))


def _marker(generation: datetime, q: QuerySettings) -> str:
    """What a query notes when it has matched a feed's answer: the answer's time and its
    `match` (edit the expression, and the entries are matched again, like a new query)."""
    digest = hashlib.sha256((q.match or "").encode("utf-8")).hexdigest()[:16]
    return f"{generation.replace(microsecond=0).isoformat()} {digest}"


def _validators(resp: FeedResponse, feed: FeedSettings) -> dict[str, object]:
    """What to remember of a response: validators for the next conditional GET, a
    permanent redirect's target, and how long the answer stays fresh. `watermark` holds
    the configured URL the rest belongs to, so editing the URL in the config starts over."""
    out: dict[str, object] = {"watermark": feed.url}
    if resp.skipped:
        return out
    out["etag"] = resp.etag
    out["last_modified"] = resp.last_modified
    if resp.permanent_redirect:
        out["url"] = resp.final_url
    fresh = resp.fresh_until
    out["fresh_until"] = fresh.astimezone(UTC).replace(tzinfo=None) if fresh is not None and fresh.tzinfo else fresh
    return out
