"""Polling the preprint servers (issue 27): feeds of kind `biorxiv` and `medrxiv`
(api.biorxiv.org, sources/biorxiv.py), polled like every feed (polls/feeds.py): fetched
on every poll cycle, matched locally with each query's `match`, the answer kept as the
feed's entries so a query added later matches them too. What is the preprints' own is
here: the fetch (`fetch_answer`, one of feedkinds.KINDS) and how an answer meets what is
stored of it (`prepare`, in the poll's transaction).

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
  (`ingest._heard_as_preprint`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING

from ..config import FeedSettings
from ..events import is_withdrawn
from ..parse.biorxiv import Published
from ..records import Notice, Record, feed_source
from ..sources import biorxiv
from ..sources.http import Limiter
from ..store.ports import ClaimsPort, IngestPort
from ..store.rows import PollState
from .answers import FeedAnswer, Prepared, day
from .clients import feed_max_bytes, feed_policy, preprint_budget

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["fetch_answer", "fetch_preprints"]


def fetch_answer(
    feed: FeedSettings, state: PollState | None, now: datetime, claims: ClaimsPort | None, contact: str | None
) -> FeedAnswer:
    """The window after the last one (the feed's `watermark`, an ISO day), fetched; its
    records meet what is stored of them in the poll's transaction (`prepare`)."""
    got = fetch_preprints(
        feed,
        now,
        day(state.watermark) if state is not None else None,
        contact=contact,
        limiter=preprint_budget(feed, claims),
    )
    return FeedAnswer(
        got.records,
        {"watermark": got.window.until.isoformat()},
        got.requests,
        list(got.warnings),
        what=f"window={got.window.since}..{got.window.until} posted={got.posted}",
        prepare=lambda store, tx: prepare(store, tx, feed, got),
    )


def fetch_preprints(
    feed: FeedSettings,
    now: datetime,
    last_until: date | None,
    *,
    contact: str | None = None,
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
        contact=contact,
        policy=feed_policy(feed),
        max_bytes=feed_max_bytes(feed, biorxiv.DEFAULT_MAX_BYTES),
        limiter=limiter,
        pubs=pubs,
    )


def prepare(store: IngestPort, tx: Connection, feed: FeedSettings, got: biorxiv.PreprintBatch) -> Prepared:
    """The answer's preprints merged with what is stored of them, the stored preprints
    whose journal version was announced, what is news to match (not withdrawn), the
    feed's entries, and the journal versions as the server's notices."""
    source = feed_source(feed.name)
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
    return Prepared(
        records=records,
        # a withdrawn preprint is news only to a query that had it (a change of a known record)
        fresh=[r for r in records if r.key in in_answer and not is_withdrawn(r)],
        entries=[r for r in records if r.key in in_answer],
        notices=[_notice(feed, r, links.get(r.key)) for r in records if r.published_doi],
    )


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


def _version(r: Record) -> int:
    return int(r.preprint_version) if r.preprint_version.isdigit() else 0
