"""notice_reports (0007) on SQLite and PostgreSQL: one row per record, source, kind and
notice (DOI, else PMID), re-reports skipped and named, long DOIs, and the notice events
a new report is matched against (one per dedup key whatever the queries)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from litwatch import events as ev
from litwatch import notices as nt
from litwatch.digest import group
from litwatch.records import PUBMED, EventRow, Link, NewEvent, Notice, NoticeReport, Record
from litwatch.store import Store

NOW = datetime(2026, 11, 25, 12, 0, 0)


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    s = Store(store_url)
    yield s
    s.close()


def _record(store: Store, key: str = "1") -> int:
    r = Record(source=PUBMED, key=key, title="T", doi=f"10.1/{key}")
    with store.transaction() as tx:
        return store.insert_records(tx, [(r, ev.fingerprint(r))], NOW)[key]


def test_reports_are_kept_once_per_source_kind_and_notice(store: Store) -> None:
    rid = _record(store)
    crossref = NoticeReport(rid, "retraction", "retraction", "retraction-watch", "10.9/RN", "", "2026-11-20", None, "d")
    pubmed = NoticeReport(rid, "retraction", "RetractionIn", "pubmed", "", "999", "", NOW + timedelta(days=7), "d")
    with store.transaction() as tx:
        assert store.add_notice_reports(tx, [crossref], NOW) == [crossref]
    with store.transaction() as tx:
        # the same report again is skipped; PubMed's report of it is another row
        assert store.add_notice_reports(tx, [crossref, pubmed], NOW + timedelta(days=7)) == [pubmed]
        # PubMed later learns the notice's DOI too: a report keyed by DOI, not the PMID
        again = NoticeReport(rid, "retraction", "Retraction of Publication", "pubmed", "10.9/rn", "999", "", None, "d")
        assert store.add_notice_reports(tx, [again, again], NOW + timedelta(days=8)) == [again]
    with store.transaction() as tx:
        got = store.notice_reports_for(tx, [rid, rid + 1000])
    assert list(got) == [rid]
    assert [(r.source, r.notice_doi, r.notice_key, r.reported_at) for r in got[rid]] == [
        ("retraction-watch", "10.9/rn", "", NOW),  # DOIs are stored in lower case
        ("pubmed", "", "999", NOW + timedelta(days=7)),
        ("pubmed", "10.9/rn", "999", NOW + timedelta(days=8)),
    ]
    assert {r.dedup for r in got[rid]} == {"d"}


def test_a_notice_without_a_dedup_or_identifiers_and_a_long_doi(store: Store) -> None:
    rid = _record(store)
    long_doi = "10.1/" + "x" * 3000  # over PostgreSQL's btree limit: kept whole, indexed by its hash
    other = NoticeReport(rid, "other", "retraction_of_a_figure", "publisher", long_doi, "", "2026", None, "")
    blank = NoticeReport(rid, "erratum", "ErratumIn", "pubmed")
    with store.transaction() as tx:
        assert store.add_notice_reports(tx, [other, blank], NOW) == [other, blank]
        assert store.add_notice_reports(tx, [other, blank], NOW) == []
        got = store.notice_reports_for(tx, [rid])[rid]
    assert got[0].notice_doi == long_doi and got[0].dedup == "" and got[0].kind == "other"
    assert got[1].ident == ""


def test_notice_events_one_per_dedup_whatever_the_query(store: Store) -> None:
    rid = _record(store)
    rows = [
        {"record_id": rid, "query": q, "kind": k, "version_n": 1, "dedup": d, "detail": {"notices": ["5"]}}
        for q in ("a", "b")
        for k, d in (("erratum", "erratum:pubmed:1:5"), ("new", "first:pubmed:1"))
    ]
    with store.transaction() as tx:
        store.add_events(tx, rows[:2], NOW)
        store.add_events(tx, rows[2:], NOW + timedelta(hours=1))
    with store.transaction() as tx:
        got = store.notice_events_for(tx, [rid], ["erratum", "retraction", "concern"])
    assert [(e.kind, e.dedup, e.created_at, e.detail) for e in got[rid]] == [
        ("erratum", "erratum:pubmed:1:5", NOW, {"notices": ["5"]})
    ]


def test_patch_event_detail_names_a_later_source_on_every_query_s_event(store: Store) -> None:
    rid = _record(store)
    detail = {"sources": ["Retraction Watch"], "notice": {"doi": "10.9/rn"}}
    rows = [
        {
            "record_id": rid,
            "query": q,
            "kind": "retraction",
            "version_n": 1,
            "dedup": "retraction:pubmed:1",
            "detail": detail,
        }
        for q in ("a", "b")
    ]
    with store.transaction() as tx:
        store.add_events(tx, rows, NOW)
        patch = {"sources": ["Retraction Watch", "PubMed"]}
        assert store.patch_event_detail(tx, rid, "retraction:pubmed:1", patch) == 2
        assert store.patch_event_detail(tx, rid, "retraction:pubmed:1", patch) == 0
        assert store.patch_event_detail(tx, rid, "retraction:pubmed:404", patch) == 0
        (event,) = store.notice_events_for(tx, [rid], ["retraction"])[rid]
    assert event.detail == {**detail, "sources": ["Retraction Watch", "PubMed"]}


def _take(store: Store, rid: int, new: list[tuple[NoticeReport, NewEvent | None]], now: datetime) -> None:
    """What the poll wiring does with reports of notices about one record, in one transaction."""
    with store.transaction() as tx:
        reports = store.notice_reports_for(tx, [rid]).get(rid, [])
        events = store.notice_events_for(tx, [rid], nt.NOTICE_KINDS).get(rid, [])
        decided = nt.attribute(new, reports, events)
        store.add_notice_reports(tx, [a.report for a in decided], now)
        queries = sorted(store.hits_for(tx, [rid]).get(rid, set()))
        rows: list[EventRow] = [
            {
                "record_id": rid,
                "query": q,
                "kind": a.event.kind,
                "version_n": 1,
                "dedup": a.event.dedup,
                "detail": a.event.detail,
            }
            for a in decided
            if a.event is not None
            for q in queries
        ]
        store.add_events(tx, rows, now)
        for a in decided:
            if a.patch:
                store.patch_event_detail(tx, rid, a.report.dedup, a.patch)


def test_crossref_first_then_pubmed_is_one_event_per_query_naming_both(store: Store) -> None:
    original = Record(source=PUBMED, key="22334455", title="Retracted paper", doi="10.1021/am300292v")
    with store.transaction() as tx:
        rid = store.insert_records(tx, [(original, ev.fingerprint(original))], NOW)["22334455"]
        store.add_hits(tx, [(rid, "trail", ()), (rid, "myeloma", ())], NOW)
    rw = Notice("retraction", "retraction", original.doi, "10.1021/acsami.9b11759", "retraction-watch", "2019-07-26")
    _take(store, rid, [(nt.crossref_report(rw, rid, NOW), nt.crossref_event(rw, original))], NOW)
    week = NOW + timedelta(days=7)
    retracted = Record(
        source=PUBMED, key="22334455", title="Retracted paper", links=(Link("RetractionIn", "31350000"),)
    )
    (pubmed_event,) = ev.classify_change(original, retracted, [], 2)
    report = nt.pubmed_report("retraction", rid, week, notice_pmid="31350000", ref_type="RetractionIn")
    _take(store, rid, [(report, pubmed_event)], week)
    _take(store, rid, [(report, pubmed_event)], week + timedelta(days=1))  # the next poll: nothing new
    with store.transaction() as tx:
        pending = store.pending_events(
            tx, queries=["trail", "myeloma"], kinds=["retraction"], digest="d", recipient="a@example.org"
        )
        reports = store.notice_reports_for(tx, [rid])[rid]
    assert sorted(e.query for e in pending) == ["myeloma", "trail"]  # one event per query
    assert {e.detail["sources"] == ["Retraction Watch", "PubMed"] for e in pending} == {True}
    assert [(r.source, r.dedup) for r in reports] == [
        ("retraction-watch", "retraction:pubmed:22334455"),
        ("pubmed", "retraction:pubmed:22334455"),
    ]
    (item,) = [i for s in group("d", pending, max_items=10, now=week).sections for i in s.items]
    assert item.label == "Retraction — Retraction Watch, PubMed"
