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
from functools import partial
from typing import TYPE_CHECKING

from .config import FeedSettings, QuerySettings
from .errors import SourceError, StoreError, first_line
from .parse.feeds import parse_feed
from .sources.feeds import FeedFetcher, FeedGoneError, FeedResponse
from .sources.http import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .records import Record
    from .service import PollResult, Service
    from .store.ports import IngestPort

log = logging.getLogger(__name__)


def poll_feeds(service: Service, queries: Sequence[QuerySettings]) -> list[PollResult]:
    """Poll each feed the `queries` scan; one feed's failure, whatever it is, is that
    feed's reported failure and the others still run."""
    from .service import SHARED

    names = list(dict.fromkeys(f for q in queries for f in q.feeds))
    return [
        service.isolated(SHARED, f"feed:{n}", n, partial(poll_feed, service, service.settings.feed(n), queries))
        for n in names
    ]


def poll_feed(service: Service, feed: FeedSettings, queries: Sequence[QuerySettings]) -> PollResult:
    from .service import SHARED, PollResult

    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    store: IngestPort = service.store
    now = service.now()
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
    users = [q for q in service.settings.queries if feed.name in q.feeds and q.matcher is not None]
    try:
        resp = fetcher.fetch(
            url,
            etag=state.etag if state is not None and url == (state.url or feed.url) else None,
            last_modified=state.last_modified if state is not None and url == (state.url or feed.url) else None,
            not_before=state.fresh_until if state is not None else None,
            now=now,
        )
        result.requests = 0 if resp.skipped else 1
        if resp.skipped or resp.status == 304:

            def unchanged(tx: Connection) -> None:
                result.events = _catch_up(service, tx, feed, users, now)
                store.poll_ok(tx, SHARED, source, now, last_error=None, **_validators(resp, feed))

            store.write(unchanged, what=f"feed {feed.name}")
            return result
        parsed = parse_feed(
            resp.content, feed_name=feed.name, base_url=resp.final_url or url, content_type=resp.content_type
        )
        result.warnings += list(parsed.warnings)
        result.found = len(parsed.records)

        def apply(tx: Connection) -> None:
            saved = service.save_records(tx, parsed.records, now)
            result.new = sum(1 for s in saved if s.status == "created")
            result.changed = sum(1 for s in saved if s.status == "changed")
            result.events = service.emit_for_changes(tx, saved, now)
            ids = {s.record.key: s.record_id for s in saved}
            store.set_feed_entries(tx, source, ids.values(), now)
            result.events += _match(service, tx, feed, users, parsed.records, ids, generation=now, now=now)
            store.poll_ok(tx, SHARED, source, now, last_error=None, **_validators(resp, feed))

        store.write(apply, what=f"feed {feed.name}")
    except FeedGoneError as e:
        result.error = str(e)
        with store.transaction() as tx:
            store.poll_failed(tx, SHARED, source, str(e), now, disabled=True)
    except SourceError as e:
        result.error = str(e)
        service._record_failure(SHARED, source, str(e), now)
        _catch_up_alone(service, feed, users, now, result)
    except StoreError as e:
        # what this feed sent, the database refused: this feed's failure, not the cycle's
        result.error = f"feed {feed.name}: could not store its entries: {first_line(e)}"
        log.warning("poll feed=%s: %s", feed.name, result.error)
        result.new = result.changed = result.events = 0
        service._record_failure(SHARED, source, result.error, now)
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


def _match(
    service: Service,
    tx: Connection,
    feed: FeedSettings,
    queries: Sequence[QuerySettings],
    entries: Sequence[Record],
    ids: dict[str, int],
    *,
    generation: datetime,
    now: datetime,
) -> int:
    """Match `entries` (the feed's answer of `generation`) against `queries`; each notes
    that it has. Returns how many events that made."""
    source = f"feed:{feed.name}"
    events = 0
    for q in queries:
        assert q.matcher is not None
        matched: dict[str, int] = {}
        terms: dict[str, tuple[str, ...]] = {}
        for rec in entries:
            hit = q.matcher.hits(rec.title, rec.abstract)
            if hit is not None and rec.key in ids:
                matched[rec.key] = ids[rec.key]
                terms[rec.key] = hit
        events += service.emit_for_matches(tx, q.name, matched, now, approvals_source=feed.approvals, terms=terms)
        service.store.note_matched(tx, q.name, source, _marker(generation, q))
    return events


def _catch_up(
    service: Service, tx: Connection, feed: FeedSettings, queries: Sequence[QuerySettings], now: datetime
) -> int:
    """Match the feed's stored current entries against the queries that have not yet."""
    source = f"feed:{feed.name}"
    generation, record_ids = service.store.feed_entries(tx, source)
    if generation is None:
        return 0
    behind = []
    for q in queries:
        row = service.store.poll_state(tx, q.name, source)
        if row is None or row.watermark != _marker(generation, q):
            behind.append(q)
    if not behind:
        return 0
    current = service.store.current_by_id(tx, record_ids)
    entries = [current[rid].record for rid in record_ids if rid in current]
    ids = {current[rid].record.key: rid for rid in record_ids if rid in current}
    return _match(service, tx, feed, behind, entries, ids, generation=generation, now=now)


def _catch_up_alone(
    service: Service, feed: FeedSettings, queries: Sequence[QuerySettings], now: datetime, result: PollResult
) -> None:
    """After a failed fetch: queries that have not matched the stored entries still do."""
    try:
        result.events = service.store.write(
            lambda tx: _catch_up(service, tx, feed, queries, now), what=f"feed {feed.name}"
        )
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
