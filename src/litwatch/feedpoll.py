"""Polling RSS/Atom feeds: each feed is fetched once (conditionally) for all the
queries that scan it; matching entries become `new`/`approval` events, and changes to
an entry that once matched become `update` events even if it no longer matches.
Records, events and the feed's validators (ETag, Last-Modified) commit together."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

from .config import FeedSettings, QuerySettings
from .errors import SourceError
from .parse.feeds import parse_feed
from .sources.feeds import FeedFetcher, FeedGoneError, FeedResponse
from .sources.http import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .service import PollResult, Service

log = logging.getLogger(__name__)


def poll_feeds(service: Service, queries: Sequence[QuerySettings]) -> list[PollResult]:
    names = list(dict.fromkeys(f for q in queries for f in q.feeds))
    return [poll_feed(service, service.settings.feed(n), queries) for n in names]


def poll_feed(service: Service, feed: FeedSettings, queries: Sequence[QuerySettings]) -> PollResult:
    from .service import SHARED, PollResult

    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    store = service.store
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
            with store.transaction() as tx:
                store.poll_ok(tx, SHARED, source, now, last_error=None, **_validators(resp, feed))
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
            for q in queries:
                if feed.name not in q.feeds or q.matcher is None:
                    continue
                matched: dict[str, int] = {}
                terms: dict[str, tuple[str, ...]] = {}
                for rec in parsed.records:
                    hit = q.matcher.hits(rec.title, rec.abstract)
                    if hit is not None:
                        matched[rec.key] = ids[rec.key]
                        terms[rec.key] = hit
                result.events += service.emit_for_matches(
                    tx, q.name, matched, now, approvals_source=feed.approvals, terms=terms
                )
            store.poll_ok(tx, SHARED, source, now, last_error=None, **_validators(resp, feed))

        store.write(apply, what=f"feed {feed.name}")
    except FeedGoneError as e:
        result.error = str(e)
        with store.transaction() as tx:
            store.poll_failed(tx, SHARED, source, str(e), now, disabled=True)
    except SourceError as e:
        result.error = str(e)
        service._record_failure(SHARED, source, str(e), now)
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
