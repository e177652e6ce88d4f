"""notices.py on data alone: which stored event a new report of a notice is, from
Crossref (publisher, Retraction Watch) or PubMed, in either order; the events Crossref
notices make, and keys that meet events.py's PubMed ones. No database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from litwatch import events as ev
from litwatch import notices as nt
from litwatch.records import PUBMED, Link, NewEvent, Notice, NoticeEvent, NoticeReport, Record

T0 = datetime(2026, 10, 1, 8, 0, 0)
RID = 7
ORIGINAL = Record(source=PUBMED, key="1111", title="TRAIL agonist trial", doi="10.1/orig")


def cx(update_type: str, notice_doi: str = "10.9/notice-a", source: str = "publisher", **kw: str) -> Notice:
    return Notice(
        kind=nt.kind_of(update_type),
        type=update_type,
        target_doi=ORIGINAL.doi,
        notice_doi=notice_doi,
        source=source,
        date=kw.get("date", "2026-09-30"),
        notice_title=kw.get("title", ""),
    )


def from_crossref(notice: Notice, when: datetime) -> tuple[NoticeReport, NewEvent | None]:
    return nt.crossref_report(notice, RID, when), nt.crossref_event(notice, ORIGINAL)


def from_pubmed_link(kind: str, ref_type: str, pmid: str, when: datetime) -> tuple[NoticeReport, NewEvent]:
    """PubMed's CommentsCorrections on the original: the event events.py makes, and its report."""
    new = Record(source=PUBMED, key=ORIGINAL.key, title=ORIGINAL.title, links=(Link(ref_type, pmid),))
    (event,) = [e for e in ev.classify_change(ORIGINAL, new, [], 2) if e.kind == kind]
    return nt.pubmed_report(kind, RID, when, notice_pmid=pmid, ref_type=ref_type), event


def from_pubmed_notice(kind: str, pmid: str, doi: str, when: datetime) -> tuple[NoticeReport, NewEvent]:
    """PubMed's notice record (a Published Erratum, a Retraction of Publication): PMID and DOI."""
    notice = Record(source=PUBMED, key=pmid, title=f"{kind} notice", doi=doi)
    event = ev.notice_event(kind, ORIGINAL, notice)
    return nt.pubmed_report(kind, RID, when, notice_pmid=pmid, notice_doi=doi, ref_type="notice"), event


class History:
    """What the store would hold of the record: reports and events, as the wiring would write them."""

    def __init__(self) -> None:
        self.reports: list[NoticeReport] = []
        self.events: list[NoticeEvent] = []

    def take(self, *new: tuple[NoticeReport, NewEvent | None], window: timedelta = nt.WINDOW) -> list[nt.Attribution]:
        out = nt.attribute(list(new), self.reports, self.events, window=window)
        for a in out:
            self.reports.append(a.report)
            if a.event is not None:
                when = a.report.reported_at or T0
                self.events.append(NoticeEvent(RID, a.event.kind, a.event.dedup, when, a.event.detail))
            if a.patch is not None:  # as Store.patch_event_detail does
                self.events = [
                    NoticeEvent(e.record_id, e.kind, e.dedup, e.created_at, {**e.detail, **a.patch})
                    if e.dedup == a.report.dedup
                    else e
                    for e in self.events
                ]
        return out

    def sources(self, dedup: str) -> list[str]:
        (event,) = [e for e in self.events if e.dedup == dedup]
        return list(event.detail.get("sources", []))

    def pubmed_event_only(self, event: NewEvent, when: datetime) -> None:
        """An event stored before reports were kept (or by a PubMed path that keeps none)."""
        self.events.append(NoticeEvent(RID, event.kind, event.dedup, when, event.detail))

    def keys(self, kinds: Sequence[str] = ("erratum", "retraction", "concern", "update")) -> list[str]:
        return [e.dedup for e in self.events if e.kind in kinds]


# ----------------------------------------------------------------- retractions


@pytest.mark.parametrize("update_type", ["retraction", "partial_retraction", "withdrawal", "removal"])
def test_each_retraction_type_is_a_retraction_on_events_py_key(update_type: str) -> None:
    e = nt.crossref_event(cx(update_type, source="retraction-watch"), ORIGINAL)
    assert e is not None and e.kind == "retraction"
    assert e.dedup == "retraction:pubmed:1111"
    # the same key PubMed's RetractionIn and its notice record give: one event by construction
    _, link_event = from_pubmed_link("retraction", "RetractionIn", "2222", T0)
    _, notice_event = from_pubmed_notice("retraction", "2222", "10.9/rn", T0)
    assert e.dedup == link_event.dedup == notice_event.dedup
    assert e.detail["source_label"] == "Retraction Watch" and e.detail["sources"] == ["Retraction Watch"]


def test_retraction_from_crossref_first_then_pubmed_a_week_later_is_one_event() -> None:
    h = History()
    first = h.take(from_crossref(cx("retraction", "10.9/rn", "retraction-watch"), T0))
    assert first[0].event is not None
    later = h.take(from_pubmed_link("retraction", "RetractionIn", "2222", T0 + timedelta(weeks=1)))
    assert later[0].event is None and later[0].report.dedup == "retraction:pubmed:1111"
    assert h.keys() == ["retraction:pubmed:1111"]
    assert nt.sources_of("retraction:pubmed:1111", h.reports) == ["Retraction Watch", "PubMed"]


def test_a_retraction_is_one_event_however_late_its_second_report() -> None:
    h = History()
    h.take(from_pubmed_link("retraction", "RetractionIn", "2222", T0))
    later = h.take(from_crossref(cx("retraction", "10.9/rn"), T0 + timedelta(weeks=30)))
    assert later[0].event is None and h.keys() == ["retraction:pubmed:1111"]


def test_publisher_and_retraction_watch_in_one_batch_are_one_event() -> None:
    h = History()
    out = h.take(
        from_crossref(cx("retraction", "10.9/rn", "publisher"), T0),
        from_crossref(cx("retraction", "10.9/rn", "retraction-watch"), T0),
    )
    assert [a.event is not None for a in out] == [True, False]
    assert {a.report.dedup for a in out} == {"retraction:pubmed:1111"}
    assert nt.sources_of("retraction:pubmed:1111", h.reports) == ["publisher notice", "Retraction Watch"]
    assert out[0].event is not None and out[0].event.detail["sources"] == ["publisher notice", "Retraction Watch"]
    assert [a.patch for a in out] == [None, None]  # nothing stored to patch: the new event names both


# ----------------------------------------------------------------- errata


def test_erratum_from_crossref_first_then_pubmed_link_a_week_later_is_one_event() -> None:
    h = History()
    (a,) = h.take(from_crossref(cx("correction", "10.9/err-1"), T0))
    assert a.event is not None and a.event.dedup == "erratum:pubmed:1111:doi:10.9/err-1"
    assert a.event.detail["label"] == "Correction" and a.event.detail["source_label"] == "publisher notice"
    # PubMed's ErratumIn names the notice by PMID only: matched on (record, kind) in the window
    (b,) = h.take(from_pubmed_link("erratum", "ErratumIn", "3333", T0 + timedelta(weeks=1)))
    assert b.event is None and b.report.dedup == a.event.dedup
    # then PubMed's notice record, with PMID and DOI: matched by identifier
    (c,) = h.take(from_pubmed_notice("erratum", "3333", "10.9/ERR-1", T0 + timedelta(weeks=8)))
    assert c.event is None and c.report.dedup == a.event.dedup
    assert h.keys() == [a.event.dedup]


def test_erratum_from_pubmed_first_then_crossref() -> None:
    h = History()
    report, event = from_pubmed_link("erratum", "ErratumIn", "3333", T0)
    h.pubmed_event_only(event, T0)  # no report kept: matched from the event's own detail
    (a,) = h.take(from_crossref(cx("corrigendum", "10.9/err-1"), T0 + timedelta(days=3)))
    assert a.event is None and a.report.dedup == "erratum:pubmed:1111:3333"
    # and the PubMed notice record naming both afterwards: by PMID, then DOI, the same
    (b,) = h.take(from_pubmed_notice("erratum", "3333", "10.9/err-1", T0 + timedelta(weeks=20)))
    assert b.event is None and b.report.dedup == "erratum:pubmed:1111:3333"
    assert h.keys() == ["erratum:pubmed:1111:3333"]


def test_two_errata_a_day_apart_with_different_dois_are_two_events() -> None:
    h = History()
    h.take(from_crossref(cx("erratum", "10.9/err-1"), T0))
    (b,) = h.take(from_crossref(cx("erratum", "10.9/err-2"), T0 + timedelta(days=1)))
    assert b.event is not None
    assert h.keys() == ["erratum:pubmed:1111:doi:10.9/err-1", "erratum:pubmed:1111:doi:10.9/err-2"]


def test_two_pubmed_errata_with_different_pmids_are_two_events_and_crossref_meets_each() -> None:
    h = History()
    h.take(from_crossref(cx("erratum", "10.9/err-1"), T0))
    h.take(from_pubmed_link("erratum", "ErratumIn", "3333", T0 + timedelta(days=2)))  # the first, by window
    (c,) = h.take(from_crossref(cx("erratum", "10.9/err-2"), T0 + timedelta(days=9)))
    assert c.event is not None
    # a second PMID: not the first erratum (it has a PMID already), so the second one
    (d,) = h.take(from_pubmed_link("erratum", "ErratumIn", "4444", T0 + timedelta(days=12)))
    assert d.report.dedup == c.report.dedup and d.event is None
    assert len(h.keys()) == 2


def test_same_kind_ten_weeks_apart_without_a_common_identifier_is_two_events() -> None:
    h = History()
    h.take(from_crossref(cx("correction", "10.9/err-1"), T0))
    (b,) = h.take(from_pubmed_link("erratum", "ErratumIn", "3333", T0 + timedelta(weeks=10)))
    assert b.event is not None and b.report.dedup == "erratum:pubmed:1111:3333"
    assert len(h.keys()) == 2
    # five weeks would have been the same erratum; the window is a parameter
    h2 = History()
    h2.take(from_crossref(cx("correction", "10.9/err-1"), T0))
    assert h2.take(from_pubmed_link("erratum", "ErratumIn", "3333", T0 + timedelta(weeks=5)))[0].event is None
    h3 = History()
    h3.take(from_crossref(cx("correction", "10.9/err-1"), T0))
    late = h3.take(from_pubmed_link("erratum", "ErratumIn", "3333", T0 + timedelta(weeks=5)), window=timedelta(weeks=4))
    assert late[0].event is not None


def test_an_erratum_citation_without_pmid_is_matched_by_window() -> None:
    h = History()
    h.take(from_crossref(cx("erratum", "10.9/err-1"), T0))
    report = nt.pubmed_report("erratum", RID, T0 + timedelta(days=4), notice_pmid="ref:Blood. 2026;1:2")
    (a,) = h.take((report, NewEvent("erratum", "erratum:pubmed:1111:ref:Blood. 2026;1:2")))
    assert a.event is None and a.report.dedup == "erratum:pubmed:1111:doi:10.9/err-1"


def test_the_same_crossref_notice_seen_twice_is_one_report_key() -> None:
    """`updated-by` on the original and `update-to` on the notice give equal notices."""
    a = nt.crossref_event(cx("correction", "10.9/Err-1"), ORIGINAL)
    b = nt.crossref_event(cx("correction", "10.9/err-1", title="Correction to: TRAIL"), ORIGINAL)
    assert a is not None and b is not None and a.dedup == b.dedup
    h = History()
    out = h.take(from_crossref(cx("correction", "10.9/err-1"), T0), from_crossref(cx("correction", "10.9/err-1"), T0))
    assert [x.event is not None for x in out] == [True, False]


# ----------------------------------------------------------------- concerns, updates, other


def test_expression_of_concern() -> None:
    notice = cx("expression_of_concern", "10.9/eoc", "retraction-watch")
    e = nt.crossref_event(notice, ORIGINAL)
    assert e is not None and e.kind == "concern" and e.dedup == "concern:pubmed:1111:doi:10.9/eoc"
    assert e.detail["label"] == "Expression of concern" and e.detail["notice"]["url"] == "https://doi.org/10.9/eoc"
    h = History()
    h.take(from_crossref(notice, T0))
    (b,) = h.take(from_pubmed_link("concern", "ExpressionOfConcernIn", "5555", T0 + timedelta(days=10)))
    assert b.event is None and h.keys() == ["concern:pubmed:1111:doi:10.9/eoc"]
    # an erratum in the same weeks is not the concern
    (c,) = h.take(from_pubmed_link("erratum", "ErratumIn", "6666", T0 + timedelta(days=10)))
    assert c.event is not None


def test_an_unknown_type_is_recorded_never_an_event_never_a_retraction() -> None:
    notice = cx("retraction_of_a_figure", "10.9/odd")
    assert nt.crossref_event(notice, ORIGINAL) is None
    h = History()
    h.take(from_crossref(cx("retraction", "10.9/rn"), T0))
    (a,) = h.take(from_crossref(notice, T0 + timedelta(days=1)))
    assert a.report.kind == "other" and a.report.type == "retraction_of_a_figure"
    assert a.report.dedup == "" and a.event is None
    assert h.keys() == ["retraction:pubmed:1111"]


@pytest.mark.parametrize("update_type", ["addendum", "clarification", "new_version", "new_edition"])
def test_updates_are_updates(update_type: str) -> None:
    e = nt.crossref_event(cx(update_type, "10.9/upd"), ORIGINAL)
    assert e is not None and e.kind == "update"
    if update_type == "new_version":
        assert e.dedup == "version:pubmed:1111:doi:10.9/upd"
        assert e.detail["newer"][0]["url"] == "https://doi.org/10.9/upd" and "notice" not in e.detail
    else:
        assert e.dedup == "update:pubmed:1111:doi:10.9/upd" and e.detail["notice"]["doi"] == "10.9/upd"


def test_new_version_meets_pubmed_update_in_but_an_addendum_does_not() -> None:
    h = History()
    _, update_in = from_pubmed_link("update", "UpdateIn", "7777", T0)
    h.pubmed_event_only(update_in, T0)
    h.events.append(NoticeEvent(RID, "update", "update:pubmed:1111:v3", T0, {"changes": [["title", "a", "b"]]}))
    (a,) = h.take(from_crossref(cx("addendum", "10.9/add"), T0 + timedelta(days=1)))
    assert a.event is not None  # neither the newer version nor a title change
    (b,) = h.take(from_crossref(cx("new_version", "10.9/published"), T0 + timedelta(days=2)))
    assert b.event is None and b.report.dedup == "version:pubmed:1111:7777"


def test_kinds_and_labels() -> None:
    assert nt.source_label("pubmed") == "PubMed"
    assert nt.source_label("retraction-watch") == "Retraction Watch"
    assert nt.source_label("publisher") == "publisher notice"
    assert nt.source_label("") == "Crossref"
    assert nt.crossref_report(cx("Partial-Retraction"), RID, T0).kind == "retraction"
    assert nt.crossref_report(cx("erratum", "10.9/UPPER"), RID, T0).notice_doi == "10.9/upper"


def test_sources_patch() -> None:
    rw = nt.crossref_event(cx("retraction", "10.9/rn", "retraction-watch"), ORIGINAL)
    assert rw is not None
    event = NoticeEvent(RID, rw.kind, rw.dedup, T0, rw.detail)
    report, _ = from_pubmed_link("retraction", "RetractionIn", "2222", T0 + timedelta(weeks=1))
    patch = nt.sources_patch(event, report)
    assert patch == {"sources": ["Retraction Watch", "PubMed"]}
    again = NoticeEvent(RID, event.kind, event.dedup, event.created_at, {**event.detail, **patch})
    assert nt.sources_patch(again, report) is None
    # PubMed's events name no source: they were PubMed's
    _, pubmed_event = from_pubmed_link("erratum", "ErratumIn", "3333", T0)
    stored = NoticeEvent(RID, "erratum", pubmed_event.dedup, T0, pubmed_event.detail)
    crossref, _ = from_crossref(cx("correction", "10.9/err-1"), T0 + timedelta(days=2))
    assert nt.sources_patch(stored, crossref) == {"sources": ["PubMed", "publisher notice"]}
    assert nt.sources_patch(stored, report) is None


def test_a_later_report_names_its_source_on_the_stored_event_once() -> None:
    h = History()
    h.take(from_crossref(cx("retraction", "10.9/rn", "retraction-watch"), T0))
    later = T0 + timedelta(weeks=1)
    out = h.take(
        from_pubmed_link("retraction", "RetractionIn", "2222", later),
        from_pubmed_notice("retraction", "2222", "10.9/rn", later),
    )
    assert [a.event for a in out] == [None, None]
    assert [a.patch for a in out] == [{"sources": ["Retraction Watch", "PubMed"]}, None]
    assert h.sources("retraction:pubmed:1111") == ["Retraction Watch", "PubMed"]
    # and PubMed first: Crossref's report adds itself after PubMed
    h2 = History()
    _, pubmed_event = from_pubmed_link("erratum", "ErratumIn", "3333", T0)
    h2.pubmed_event_only(pubmed_event, T0)
    (a,) = h2.take(from_crossref(cx("correction", "10.9/err-1"), T0 + timedelta(days=2)))
    assert a.patch == {"sources": ["PubMed", "publisher notice"]}


def test_a_pubmed_update_without_its_link_type_is_still_a_newer_version() -> None:
    h = History()
    h.take(from_crossref(cx("new_version", "10.9/published"), T0))
    report = nt.pubmed_report("update", RID, T0 + timedelta(days=3), notice_pmid="7777")  # UpdateOf on the notice
    (a,) = h.take((report, NewEvent("update", "version:pubmed:1111:7777")))
    assert a.event is None and a.report.dedup == "version:pubmed:1111:doi:10.9/published"
