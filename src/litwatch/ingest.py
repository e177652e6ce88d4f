"""Ingest: a source's `Batch` (plain data: what it fetched, which queries matched which
records and why, the progress to record) stored in the caller's one transaction —
versions first, then the events that the pure decider (`events.decide`) says follow,
then the progress. Every source (PubMed queries, the notice search, feeds of every
kind, Crossref) ends here; what differs between them is in polls/.

One event per notice, whatever told us: the notice events `decide` plans (PubMed) and
the notices a Crossref batch carries are reports of a notice about a stored record;
`notices.attribute` decides, against the reports and events stored of that record,
whether each is a new event or another source's report of one already made (then
named in its detail's `sources`), and the reports are kept for `history`.

Rule (ARCHITECTURE.md): a batch's records, hits, events and progress commit together
or not at all — a watermark never moves past what was stored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from . import events as ev
from . import notices as nt
from .records import PUBMED, EventRow, NewEvent, Notice, NoticeReport, Record
from .store.ports import IngestPort
from .store.rows import Current

log = logging.getLogger(__name__)

# ====================================================================== batches


@dataclass(frozen=True)
class Progress:
    """One poll_state row to move: `ok` (values set, error cleared) or failed with `error`
    (values still set: what did run keeps its progress)."""

    query: str
    source: str
    values: dict[str, object] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Batch:
    """What one source's poll found, as plain data.

    - `records`: what it fetched, stored as versions (unchanged ones write nothing);
    - `matches`: {query: {(source, key): terms}} — the records each query matched,
      fetched now or stored before (a PubMed search finds known PMIDs it need not fetch);
      a query matching a record for the first time gets `new` (or `approval`);
    - `approvals`: the records come from a feed marked `approvals: true`;
    - `notices`: PubMed notice records among `records` make events of the records
      they name (errata, retractions, concerns, newer versions);
    - `crossref`: Crossref's notices (`parse.crossref.Notice`) about stored DOIs: each
      becomes a report, and an event of every record with the target DOI for every
      query that matched it, unless another source told of it already;
    - `progress`: poll_state rows to move; `marks`: (query, source, marker) notes of
      which feed answer a query has matched;
    - `bookkeeping`: source-specific writes in the same transaction (missing PMIDs,
      overflowed days, a feed's current entries), given the ids of what was saved."""

    name: str
    source: str
    records: Sequence[Record] = ()
    matches: dict[str, dict[tuple[str, str], tuple[str, ...]]] = field(default_factory=dict)
    approvals: bool = False
    notices: bool = False
    crossref: Sequence[Notice] = ()
    progress: list[Progress] = field(default_factory=list)
    marks: list[tuple[str, str, str]] = field(default_factory=list)
    bookkeeping: list[Callable[[Connection, dict[tuple[str, str], int]], None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ingested:
    new: int
    changed: int
    events: int
    saved: tuple[ev.Saved, ...] = ()


def ingest(store: IngestPort, tx: Connection, batch: Batch, now: datetime) -> Ingested:
    """Store `batch` in `tx`: versions, hits, the events `events.decide` plans, progress."""
    saved = save_records(store, tx, batch.records, now)
    ids = {(s.record.source, s.record.key): s.record_id for s in saved}
    _resolve(store, tx, ids, [k for m in batch.matches.values() for k in m if k not in ids])
    matches = {q: {ids[k]: terms for k, terms in m.items() if k in ids} for q, m in batch.matches.items()}
    # notices: the stored records they name, as they are now and as first seen
    pairs = (
        [
            (kind, pmid, s.record)
            for s in saved
            if s.record.source == PUBMED
            for kind, pmid in ev.notice_targets(s.record)
        ]
        if batch.notices
        else []
    )
    targets = store.records_by_pmid(tx, [pmid for _, pmid, _ in pairs]) if pairs else {}
    changed_ids = [s.record_id for s in saved if s.old is not None]
    matched_ids = {rid for m in matches.values() for rid in m}
    hits = (
        store.hits_for(tx, {*changed_ids, *matched_ids, *targets.values()})
        if (changed_ids or matched_ids or targets)
        else {}
    )
    # what this poll just wrote is the current version of those records: not read back
    fresh = {s.record_id: (s.record, s.n) for s in saved if s.status != "same"}
    first = {rid for q, m in matches.items() for rid in m if q not in hits.get(rid, set())}
    wanted = {rid for rid in first if rid not in fresh} | set(targets.values())
    current = {rid: (c.record, c.n) for rid, c in _current_by_id(store, tx, wanted).items()}
    records = {**current, **fresh}
    plan = ev.decide(
        saved=saved,
        matches=matches,
        hits=hits,
        current=records,
        heard=_heard_as_preprint(store, tx, {rid: records[rid][0].doi for rid in first if rid in records}),
        approvals_source=batch.approvals,
        notices=[(kind, targets[pmid], notice) for kind, pmid, notice in pairs if pmid in targets],
        first_versions=store.first_versions(tx, targets.values()) if targets else {},
    )
    if plan.hits:
        store.add_hits(tx, plan.hits, now)
    rows, patches = attribute_notices(store, tx, plan.events, batch.crossref, hits, now)
    n_events = store.add_events(tx, rows, now) if rows else 0
    for rid, dedup, patch in patches:
        store.patch_event_detail(tx, rid, dedup, patch)
    for book in batch.bookkeeping:
        book(tx, ids)
    for query, source, marker in batch.marks:
        store.note_matched(tx, query, source, marker)
    for p in batch.progress:
        if p.error is None:
            store.poll_ok(tx, p.query, p.source, now, **{"last_error": None, **p.values})
        else:
            store.poll_failed(tx, p.query, p.source, p.error, now, **p.values)
    return Ingested(
        new=sum(1 for s in saved if s.status == "created"),
        changed=sum(1 for s in saved if s.status == "changed"),
        events=n_events,
        saved=tuple(saved),
    )


# events of these dedup prefixes are notices (events.py); "update:" and "first:" are not
_NOTICE_PREFIXES = ("erratum:", "retraction:", "concern:", "version:")
# how PubMed named what it reported (history): on the original, or as the notice record
_ON_ORIGINAL = {"retraction": "RetractionIn", "erratum": "ErratumIn", "concern": "ExpressionOfConcernIn"}
_NOTICE_RECORD = {
    "retraction": "Retraction of Publication",
    "erratum": "Published Erratum",
    "concern": "Expression of Concern",
}


def attribute_notices(
    store: IngestPort,
    tx: Connection,
    planned: Sequence[EventRow],
    crossref: Sequence[Notice],
    hits: dict[int, set[str]],
    now: datetime,
) -> tuple[list[EventRow], list[tuple[int, str, dict[str, object]]]]:
    """One event per notice: the notice events `decide` planned (PubMed's) and the
    batch's Crossref notices, as reports attributed by `notices.attribute` against what
    is stored of each record. Returns the event rows to add and the details to patch
    (record id, dedup, patch). A batch with neither reads nothing."""
    groups: dict[tuple[int, str], list[EventRow]] = {}
    for row in planned:
        if row["dedup"].startswith(_NOTICE_PREFIXES):
            groups.setdefault((row["record_id"], row["dedup"]), []).append(row)
    if not groups and not crossref:
        return list(planned), []
    # Crossref: each notice about every record stored with its target DOI
    by_doi = store.records_by_doi(tx, {n.target_doi for n in crossref}) if crossref else {}
    targets = {rid for ids in by_doi.values() for rid in ids}
    current = _current_by_id(store, tx, targets)
    first = store.first_versions(tx, targets) if targets else {}
    if targets:
        hits = {**hits, **store.hits_for(tx, targets - set(hits))}
    new: dict[int, list[tuple[NoticeReport, NewEvent | None]]] = {}
    planned_as: dict[int, list[str]] = {}  # per record, parallel to `new`: the key decide() gave ("" Crossref)
    for (rid, dedup), rows in groups.items():
        new.setdefault(rid, []).append(_pubmed_report(rows[0], now))
        planned_as.setdefault(rid, []).append(dedup)
    for notice in crossref:
        for rid in by_doi.get(notice.target_doi, []):
            if rid not in current:
                continue
            event = nt.crossref_event(notice, current[rid].record)
            if event is not None and nt.shown_at_first_sight(first[rid], event.kind, notice.type):
                event = None  # the record was new with it: recorded, not news
            new.setdefault(rid, []).append((nt.crossref_report(notice, rid, now), event))
            planned_as.setdefault(rid, []).append("")
    reports = store.notice_reports_for(tx, new)
    stored = store.notice_events_for(tx, new, nt.NOTICE_KINDS)
    decided = [
        (rid, dedup, a)
        for rid, items in new.items()
        for dedup, a in zip(
            planned_as[rid], nt.attribute(items, reports.get(rid, []), stored.get(rid, [])), strict=True
        )
    ]
    store.add_notice_reports(tx, [a.report for _, _, a in decided], now)
    keep: dict[tuple[int, str], dict[str, Any] | None] = {}  # planned notice events kept (a new detail)
    added: list[EventRow] = []
    patches: list[tuple[int, str, dict[str, object]]] = []
    for rid, planned_key, a in decided:
        if a.patch:
            patches.append((rid, a.report.dedup, a.patch))
        if planned_key:  # PubMed's
            if a.event is not None:  # news: as planned, its detail naming every source of this batch
                keep[(rid, planned_key)] = a.event.detail
            elif a.report.dedup == planned_key:
                keep[(rid, planned_key)] = None  # the stored event's own key: a query lacking it gets it
            # else: another source's report of an event stored under another key: not again
        elif a.event is not None:
            n = current[rid].n
            added += [
                {
                    "record_id": rid,
                    "query": q,
                    "kind": a.event.kind,
                    "version_n": n,
                    "dedup": a.event.dedup,
                    "detail": a.event.detail,
                }
                for q in sorted(hits.get(rid, set()))
            ]
    out: list[EventRow] = []
    for row in planned:
        key = (row["record_id"], row["dedup"])
        if key not in groups:
            out.append(row)
        elif key in keep:
            detail = keep[key]
            out.append(row if detail is None else {**row, "detail": detail})
    return out + added, patches


def _pubmed_report(row: EventRow, now: datetime) -> tuple[NoticeReport, NewEvent]:
    """PubMed's report of the notice a planned event tells of (`events.classify_change`
    on the original's CommentsCorrections, or `events.notice_event` for the notice record)."""
    kind, dedup = row["kind"], row["dedup"]
    detail = row.get("detail", {})
    notice = detail.get("notice") or {}
    newer = (detail.get("newer") or [{}])[0]
    listed = [str(p) for p in detail.get("notices", []) if p]
    if kind == "retraction":
        key = str(notice.get("pmid") or (listed[0] if listed else ""))
    else:
        key = dedup.split(":", 3)[3] if dedup.count(":") >= 3 else ""
    doi = str(notice.get("doi") or newer.get("doi") or "")
    ref_type = (
        ("UpdateOf" if newer.get("pmid") == key and "changes" not in detail else "UpdateIn")
        if kind == "update"
        else (_NOTICE_RECORD if notice else _ON_ORIGINAL)[kind]
    )
    report = nt.pubmed_report(kind, row["record_id"], now, notice_pmid=key, notice_doi=doi, ref_type=ref_type)
    return report, NewEvent(kind, dedup, detail)


def _heard_as_preprint(store: IngestPort, tx: Connection, dois: dict[int, str]) -> dict[int, set[str]]:
    """{record id: queries} for records that are the journal version of a preprint a
    preprint server told us of (issue 27): the queries that matched that preprint."""
    wanted = {rid: doi.lower() for rid, doi in dois.items() if doi}
    if not wanted:
        return {}
    preprints = store.reported_versions(tx, set(wanted.values()), sorted(nt.PREPRINT_SOURCES))
    if not preprints:
        return {}
    hits = store.hits_for(tx, {p for ids in preprints.values() for p in ids})
    out: dict[int, set[str]] = {}
    for rid, doi in wanted.items():
        for p in preprints.get(doi, []):
            if p != rid:
                out.setdefault(rid, set()).update(hits.get(p, set()))
    return out


def _resolve(
    store: IngestPort, tx: Connection, ids: dict[tuple[str, str], int], keys: Iterable[tuple[str, str]]
) -> None:
    """Ids of stored records matched but not fetched now (keys only for PubMed)."""
    by_source: dict[str, list[str]] = {}
    for source, key in keys:
        by_source.setdefault(source, []).append(key)
    for source, wanted in by_source.items():
        if source == PUBMED:
            found = store.records_by_pmid(tx, wanted)
        else:
            found = {k: c.record_id for k, c in store.current(tx, source, wanted).items()}
        ids.update({(source, k): rid for k, rid in found.items()})


def _current_by_id(store: IngestPort, tx: Connection, record_ids: set[int]) -> dict[int, Current]:
    return store.current_by_id(tx, record_ids) if record_ids else {}


def save_records(store: IngestPort, tx: Connection, records: Iterable[Record], now: datetime) -> list[ev.Saved]:
    """Store what is new or changed; an unchanged record writes nothing."""
    by_source: dict[str, dict[str, Record]] = {}
    for r in records:
        by_source.setdefault(r.source, {})[r.key] = r  # the last parse of a key wins
    saved: list[ev.Saved] = []
    for source, recs in by_source.items():
        current = store.current(tx, source, recs)
        new: list[tuple[Record, str]] = []
        changed: list[tuple[Current, Record, str, list[list[Any]]]] = []
        for key, rec in recs.items():
            h = ev.fingerprint(rec)
            cur = current.get(key)
            if cur is None:
                new.append((rec, h))
            elif cur.hash != h:
                changes = ev.diff(cur.record, rec)
                changed.append((cur, rec, h, [[c.field, c.old, c.new] for c in changes]))
                saved.append(ev.Saved(rec, cur.record_id, cur.n + 1, cur.record, changes, status="changed"))
            else:
                saved.append(ev.Saved(rec, cur.record_id, cur.n, None, [], status="same"))
        ids = store.insert_records(tx, new, now)
        store.add_versions(tx, changed, now)
        saved += [ev.Saved(rec, ids[rec.key], 1, None, [], status="created") for rec, _ in new]
    return saved


def record_failure(store: IngestPort, query: str, source: str, error: str, now: datetime) -> None:
    """A source's failure, in its own transaction (what it fetched stored nothing)."""
    try:
        with store.transaction() as tx:
            store.poll_failed(tx, query, source, error, now)
    except Exception:  # noqa: BLE001 - the failure is reported anyway; don't mask it
        log.exception("could not record the failure of %s/%s", query, source)


__all__ = [
    "attribute_notices",
    "Batch",
    "Ingested",
    "Progress",
    "ingest",
    "record_failure",
    "save_records",
]
