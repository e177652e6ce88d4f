"""What differs between the feed kinds: how each is fetched and what of its answer is
remembered. Each kind's `fetch` turns the feed's stored state into one `FeedAnswer`
(plain data) or raises `SourceError`; polls/feeds.py does the rest alike for every kind
(catch-up, failure, storing). No store access here.

- rss (RSS/Atom): a conditional GET with the validators of the last 200 (ETag,
  Last-Modified) and its Cache-Control freshness; a permanent redirect noted earlier is
  followed unless the config's URL changed since (`watermark` holds that URL).
- openfda (Drugs@FDA, issue 17): the window runs from two weeks before the end of the
  last one (kept in `watermark`, an ISO day) to today; identities
  (application:type:number) make the overlap free. Requests keep to openFDA's rate
  (240 a minute) and day limit (1,000 without a key) across every process on the
  database (polls/clients.py); a 429 is obeyed by the client.
- biorxiv, medrxiv (the preprint servers, issue 27): polls/preprints.py.
- ema (EMA's medicines file): a conditional GET with the validators of the last 200
  (`etag`, `last_modified`, and in `url` the URL they belong to); a 304 parses nothing.
  `watermark` holds the newest `last_updated_date` the file had (ISO day): the file is
  stale when it stops moving for `stale_days` (`stale_note`), and the next 200 reports
  what is dated from two weeks before it — anchored on the file's own dates, so weeks of
  304s from a file that stopped moving lose nothing when it moves again.

A fetch or parse that fails (malformed JSON included) raises: nothing of it is stored
and the watermark stays. Parser warnings (renamed or missing fields) are the answer's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from ..config import FeedSettings
from ..events import is_withdrawn
from ..parse.ema import staleness
from ..parse.feeds import parse_feed
from ..records import Record
from ..sources import ema, openfda
from ..sources.feeds import FeedFetcher, FeedResponse
from ..sources.http import Limiter
from ..store.ports import ClaimsPort
from ..store.rows import PollState
from . import preprints
from .answers import FeedAnswer, day
from .clients import feed_max_bytes, feed_policy, openfda_budgets, retry_policy

__all__ = ["FeedAnswer", "fetch", "fetch_openfda", "matchable", "stale_note"]


Fetch = Callable[[FeedSettings, PollState | None, datetime, ClaimsPort | None, str | None], FeedAnswer]


def fetch(
    feed: FeedSettings,
    state: PollState | None,
    now: datetime,
    claims: ClaimsPort | None = None,
    contact: str | None = None,
) -> FeedAnswer:
    """Fetch `feed` by its kind, after `state` (None: as if never fetched). `claims`: the
    database the request budgets are kept in (None: this process's own limits);
    `contact`: an address for a User-Agent (clients.contact)."""
    return KINDS[feed.kind](feed, state, now, claims, contact)


def matchable(feed: FeedSettings, record: Record) -> bool:
    """Whether a stored entry of `feed` is matched for a query that has not matched it
    yet: a withdrawn preprint is news only to a query that had it."""
    return feed.kind not in PREPRINTS or not is_withdrawn(record)


# ====================================================================== rss


def fetch_rss(
    feed: FeedSettings, state: PollState | None, now: datetime, claims: ClaimsPort | None, contact: str | None
) -> FeedAnswer:
    # a permanent redirect noted earlier is followed, unless the config's URL changed since
    url = state.url if state is not None and state.url and state.watermark == feed.url else feed.url
    same = state is not None and url == (state.url or feed.url)
    fetcher = FeedFetcher(max_bytes=feed_max_bytes(feed, 0), policy=retry_policy(feed), name=feed.name)
    try:
        resp = fetcher.fetch(
            url,
            etag=state.etag if state is not None and same else None,
            last_modified=state.last_modified if state is not None and same else None,
            not_before=state.fresh_until if state is not None else None,
            now=now,
        )
    finally:
        fetcher.close()
    values = _validators(resp, feed)
    requests = 0 if resp.skipped else 1
    if resp.skipped or resp.status == 304:
        return FeedAnswer(None, values, requests, what="fresh" if resp.skipped else "not modified")
    parsed = parse_feed(
        resp.content, feed_name=feed.name, base_url=resp.final_url or url, content_type=resp.content_type
    )
    return FeedAnswer(parsed.records, values, requests, list(parsed.warnings), what=f"status={resp.status}")


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


# ====================================================================== openfda


def fetch_openfda_answer(
    feed: FeedSettings, state: PollState | None, now: datetime, claims: ClaimsPort | None, contact: str | None
) -> FeedAnswer:
    limiter, budget = openfda_budgets(feed, claims)
    got = fetch_openfda(feed, now, day(state.watermark) if state is not None else None, budget=budget, limiter=limiter)
    return FeedAnswer(
        got.records,
        {"watermark": got.watermark.isoformat()},
        got.requests,
        list(got.warnings),
        what=f"window={got.window.since}..{got.window.until}",
    )


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
        policy=feed_policy(feed),
        max_bytes=feed_max_bytes(feed, openfda.DEFAULT_MAX_BYTES),
        budget=budget,
        limiter=limiter,
    )


# ====================================================================== ema


def fetch_ema(
    feed: FeedSettings, state: PollState | None, now: datetime, claims: ClaimsPort | None, contact: str | None
) -> FeedAnswer:
    # the validators and the newest date belong to the URL they came from: a URL edited
    # in the config starts over
    mine = state is not None and state.url == feed.url
    newest = day(state.watermark) if state is not None and mine else None
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
        max_bytes=feed_max_bytes(feed, ema.DEFAULT_MAX_BYTES),
        policy=feed_policy(feed),
    )
    warnings = list(got.warnings) + ([f"feed {feed.name}: {got.stale}"] if got.stale else [])
    values: dict[str, object] = {"etag": got.etag, "last_modified": got.last_modified, "url": feed.url}
    if got.status == 304:
        return FeedAnswer(None, values, got.requests, warnings, what="not modified")
    values["watermark"] = got.newest_update.isoformat() if got.newest_update else None
    return FeedAnswer(got.records, values, got.requests, warnings, what=f"since={got.since} newest={got.newest_update}")


def stale_note(feed: FeedSettings, state: PollState | None, now: datetime) -> str | None:
    """Why an ema feed's data looks stale (its file's newest `last_updated_date` has not
    moved for `stale_days`), or None: fresh, never fetched, or not kind ema."""
    if feed.kind != "ema" or state is None or state.last_ok is None or state.url != feed.url:
        return None
    return staleness(day(state.watermark), now, feed.stale_after_days)


PREPRINTS = ("biorxiv", "medrxiv")
KINDS: dict[str, Fetch] = {
    "rss": fetch_rss,
    "openfda": fetch_openfda_answer,
    "ema": fetch_ema,
    **dict.fromkeys(PREPRINTS, preprints.fetch_answer),  # issue 27
}
