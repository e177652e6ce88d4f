"""Polling the structured regulatory feeds on the poll pipeline (issue 17): kind
`openfda` (Drugs@FDA through openFDA, sources/openfda.py) and kind `ema` (EMA's
medicines data file, sources/ema.py). Each returns its records as a `Batch`, stored
by `pipeline.ingest` like any feed's.

As with an RSS feed (feedpoll.py), a feed is fetched once for every query scanning it,
each query matches it with its `match` on title and summary, and the records of its
last answer are kept as the feed's entries (`feed_entries`) with a note per query of
the answer it matched: a query added later (or whose `match` changed) is matched
against the stored entries at its next poll — after a 304, after a failure, and, since
a window of openFDA or a day of the EMA file holds only part of what was stored,
together with a new answer too.

- openfda: the window runs from two weeks before the end of the last one (kept in the
  feed's `poll_state.watermark`, an ISO day) to today; identities
  (application:type:number) make the overlap free. Requests keep to openFDA's rate
  (240 a minute) and day limit (1,000 without a key) across every process on the
  database (`coordination.RequestBudget`, `coordination.DailyRequests`); a 429 is
  obeyed by the client.
- ema: a conditional GET with the validators of the last 200 (`etag`, `last_modified`,
  and in `url` the URL they belong to); a 304 parses nothing. `watermark` holds the
  newest `last_updated_date` the file had (ISO day): the file is stale when it stops
  moving for `stale_days` (`stale_note`), and the next 200 reports what is dated from
  two weeks before it — anchored on the file's own dates, so weeks of 304s from a file
  that stopped moving lose nothing when it moves again.

A fetch or parse that fails (malformed JSON included) is the feed's recorded failure:
nothing of it is stored and the watermark stays. Parser warnings (renamed or missing
fields) reach `PollResult.warnings` and the log."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .config import FeedSettings, QuerySettings, Settings
from .coordination import DailyRequests, RequestBudget
from .errors import SourceError, StoreError, first_line
from .feedpoll import _catch_up, _catch_up_alone, _marker, _matched, poll_feed
from .parse.ema import staleness
from .pipeline import SHARED, Batch, Ingested, PollResult, Progress, ingest, record_failure
from .records import Record
from .sources import ema, openfda
from .sources.http import Limiter, RetryPolicy
from .store.ports import ClaimsPort, IngestPort

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .store.rows import PollState

log = logging.getLogger(__name__)

__all__ = ["poll_any_feed", "poll_ema_feed", "poll_openfda_feed", "stale_note"]


def poll_any_feed(
    settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime, *, claims: ClaimsPort | None = None
) -> PollResult:
    """Poll `feed` by its kind. `claims`: the database the request budgets are kept in
    (None: this process's own limits)."""
    if feed.kind == "openfda":
        return poll_openfda_feed(settings, store, feed, now, claims=claims)
    if feed.kind == "ema":
        return poll_ema_feed(settings, store, feed, now)
    if feed.kind in ("biorxiv", "medrxiv"):
        from .preprints import poll_preprint_feed  # issue 27; it builds on this module

        return poll_preprint_feed(settings, store, feed, now, claims=claims)
    return poll_feed(settings, store, feed, now)


# ====================================================================== openfda


def poll_openfda_feed(
    settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime, *, claims: ClaimsPort | None = None
) -> PollResult:
    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, source)
    users = _users(settings, feed)
    key = feed.api_key.get_secret_value() if feed.api_key is not None else ""
    host = urlsplit(feed.url).netloc
    limiter = budget = None
    if claims is not None:
        limiter = RequestBudget(claims, f"openfda:{host}", openfda.PER_SECOND)
        per_day = openfda.PER_DAY_WITH_KEY if key else openfda.PER_DAY_WITHOUT_KEY
        # a key's day belongs to the key, the keyless day to the address (one per host here)
        who = hashlib.sha256(key.encode()).hexdigest()[:12] if key else "no-key"
        budget = DailyRequests(claims, f"openfda-day:{host}:{who}", per_day)
    try:
        got = fetch_openfda(
            feed, now, _day(state.watermark) if state is not None else None, budget=budget, limiter=limiter
        )
    except SourceError as e:
        _failed(store, feed, users, now, result, str(e))
        return result
    result.requests = got.requests
    _warn(feed, result, got.warnings)
    result.found = len(got.records)
    progress = [Progress(SHARED, source, {"watermark": got.watermark.isoformat()})]
    _store_answer(store, feed, users, got.records, progress, now, result)
    _log(feed, result, f"window={got.window.since}..{got.window.until}")
    return result


def fetch_openfda(
    feed: FeedSettings,
    now: datetime,
    last_until: date | None,
    *,
    budget: openfda.DayBudget | None = None,
    limiter: Limiter | None = None,
) -> openfda.OpenFdaBatch:
    """The Drugs@FDA window after `last_until` (the first poll's look-back when None),
    fetched and parsed with the feed's settings (polls, and `check --online`)."""
    key = feed.api_key.get_secret_value() if feed.api_key is not None else ""
    return openfda.poll_openfda(
        name=feed.name,
        last_until=last_until,
        now=now,
        url=feed.url,
        api_key=key or None,
        lookback_days=feed.first_lookback_days,
        policy=source_policy(feed),
        max_bytes=max_bytes_for(feed, openfda.DEFAULT_MAX_BYTES),
        budget=budget,
        limiter=limiter,
    )


# ====================================================================== ema


def poll_ema_feed(settings: Settings, store: IngestPort, feed: FeedSettings, now: datetime) -> PollResult:
    source = f"feed:{feed.name}"
    result = PollResult(feed.name, source)
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, source)
    users = _users(settings, feed)
    # the validators and the newest date belong to the URL they came from: a URL edited
    # in the config starts over
    mine = state is not None and state.url == feed.url
    newest = _day(state.watermark) if state is not None and mine else None
    try:
        got = ema.poll_ema(
            name=feed.name,
            now=now,
            url=feed.url,
            etag=state.etag if state is not None and mine else None,
            last_modified=state.last_modified if state is not None and mine else None,
            last_ok=newest,
            last_newest_update=newest,
            stale_days=feed.stale_after_days,
            lookback_days=feed.first_lookback_days,
            max_bytes=max_bytes_for(feed, ema.DEFAULT_MAX_BYTES),
            policy=source_policy(feed),
        )
    except SourceError as e:
        _failed(store, feed, users, now, result, str(e))
        return result
    result.requests = got.requests
    _warn(feed, result, got.warnings)
    if got.stale:
        _warn(feed, result, [f"feed {feed.name}: {got.stale}"])
    values: dict[str, object] = {"etag": got.etag, "last_modified": got.last_modified, "url": feed.url}
    if got.status == 304:
        progress = [Progress(SHARED, source, values)]
        try:
            result.events = store.write(
                lambda tx: _catch_up(store, tx, feed, users, now, progress), what=f"feed {feed.name}"
            )
        except StoreError as e:
            _store_failed(store, feed, now, result, e)
        _log(feed, result, "not modified")
        return result
    values["watermark"] = got.newest_update.isoformat() if got.newest_update else None
    result.found = len(got.records)
    _store_answer(store, feed, users, got.records, [Progress(SHARED, source, values)], now, result)
    _log(feed, result, f"since={got.since} newest={got.newest_update}")
    return result


def stale_note(feed: FeedSettings, state: PollState | None, now: datetime) -> str | None:
    """Why an ema feed's data looks stale (its file's newest `last_updated_date` has not
    moved for `stale_days`), or None: fresh, never fetched, or not kind ema."""
    if feed.kind != "ema" or state is None or state.last_ok is None or state.url != feed.url:
        return None
    return staleness(_day(state.watermark), now, feed.stale_after_days)


# ====================================================================== shared


def _store_answer(
    store: IngestPort,
    feed: FeedSettings,
    users: Sequence[QuerySettings],
    records: Sequence[Record],
    progress: list[Progress],
    now: datetime,
    result: PollResult,
) -> None:
    """Ingest a new answer in one transaction: its records, every query's matches (and,
    for a query that has not matched the stored entries yet, theirs), the answer as the
    feed's entries, the progress."""
    source = f"feed:{feed.name}"

    def write(tx: Connection) -> Ingested:
        batch = _matched(feed, users, records, generation=now)
        _behind(store, tx, feed, users, batch)

        def entries(tx: Connection, ids: dict[tuple[str, str], int]) -> None:
            store.set_feed_entries(tx, source, list(dict.fromkeys(ids[(r.source, r.key)] for r in records)), now)

        batch.records, batch.progress, batch.bookkeeping = records, progress, [entries]
        return ingest(store, tx, batch, now)

    try:
        done = store.write(write, what=f"feed {feed.name}")
    except StoreError as e:
        _store_failed(store, feed, now, result, e)
        return
    result.new, result.changed, result.events = done.new, done.changed, done.events


def _behind(
    store: IngestPort, tx: Connection, feed: FeedSettings, users: Sequence[QuerySettings], batch: Batch
) -> None:
    """Add to `batch` what the stored entries give the queries that have not matched them."""
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
    stored = [current[rid].record for rid in record_ids if rid in current]
    for q in behind:
        assert q.matcher is not None
        matched = batch.matches.setdefault(q.name, {})
        for rec in stored:
            hit = q.matcher.hits(rec.title, rec.abstract)
            if hit is not None:
                matched.setdefault((rec.source, rec.key), hit)


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
    # what the source sent, the database refused: this feed's failure, not the cycle's
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


def _users(settings: Settings, feed: FeedSettings) -> list[QuerySettings]:
    return [q for q in settings.queries if feed.name in q.feeds and q.matcher is not None]


def _day(value: str | None) -> date | None:
    """An ISO day kept in `watermark`; anything else (a feed that was of another kind
    under this name kept its URL there) is no day: the first poll's lookback applies."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def source_policy(feed: FeedSettings) -> RetryPolicy | None:
    """The feed's own retries and time-out when the config sets them; else the source's
    defaults (made for a large file, or openFDA's paging), not those of an RSS feed."""
    if not {"timeout", "retries", "backoff"} & feed.model_fields_set:
        return None
    return RetryPolicy(
        retries=feed.retries, backoff=feed.backoff, timeout=feed.timeout, deadline=max(120.0, 4 * feed.timeout)
    )


def max_bytes_for(feed: FeedSettings, default: int) -> int:
    return feed.max_mb * 1_000_000 if "max_mb" in feed.model_fields_set else default
