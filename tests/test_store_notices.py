"""notice_reports (0007) on SQLite and PostgreSQL: one row per record, source, kind and
notice (DOI, else PMID), re-reports skipped and named, long DOIs, and the notice events
a new report is matched against (one per dedup key whatever the queries)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from litwatch import events as ev
from litwatch.records import PUBMED, NoticeReport, Record
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
