"""Notices by modification date too (issue 24): the PubMed notice search asks for
notices entered OR modified since its watermark, in one search; a notice whose
RetractionOf link PubMed adds days after it was entered is found then, and mailed
once, though the original no longer matches its query."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

from helpers import TODAY, basic_config
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.service import Service
from test_changes import NOTICE_TERM


class Clock:
    def __init__(self) -> None:
        self.at = datetime.combine(TODAY, time(17))  # noon in US Eastern: PubMed's day and UTC's agree

    def __call__(self) -> datetime:
        return self.at

    def day(self, n: int) -> date:
        return TODAY + timedelta(days=n)


def test_a_notice_linked_after_its_entry_is_found_by_its_modification(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    clock = Clock()
    eutils.add("11", terms="TRAIL", edat=clock.day(0), title="TRAIL in bandages", doi="10.5555/t")
    cfg = basic_config(
        tmp_path,
        eutils.url,
        db=store_url,
        queries="queries:\n  - name: t\n    pubmed: TRAIL\n",
        digests="digests:\n  - name: d\n    to: [a@example.org]\n    queries: [t]\n",
    )
    svc = Service(load(cfg), now=clock)
    try:

        def poll(day: int) -> dict[str, object]:
            clock.at = datetime.combine(clock.day(day), time(17))
            results = svc.poll()
            assert all(r.ok for r in results), [r.line() for r in results]
            return {r.name: r for r in results}

        poll(0)  # the paper; the notice search sets its watermark
        svc.digest()
        # the retraction notice is entered the next day, its link to the paper not yet made
        eutils.add(
            "950",
            terms=NOTICE_TERM,
            edat=clock.day(1),
            title="Retraction notice",
            pubtypes=("Retraction of Publication",),
        )
        for day in (1, 2, 3, 4):
            poll(day)
        # PubMed links it on day 5 (its mdat moves); the paper no longer matches the query
        eutils.change(
            "950",
            mdat=clock.day(5),
            title="Retraction notice",
            pubtypes=("Retraction of Publication",),
            links=(("RetractionOf", "11"),),
        )
        eutils.records["950"].terms = {NOTICE_TERM}
        eutils.records["11"].terms = set()
        found = poll(5)["notices"]
        print(f"notice linked 4 days after entry: {found.line()}")  # type: ignore[attr-defined]
        assert found.events == 1  # type: ignore[attr-defined]
        sent = [r for r in svc.digest() if r.sent]
        assert [r.subject for r in sent] == ["d: 1 retraction"]
        notice_searches = [
            r for r in eutils.requests if r.utility == "esearch" and "erratum" in r.params.get("term", "")
        ]
        assert all("[mdat]" in r.params["term"] and "[edat]" in r.params["term"] for r in notice_searches[-5:])
        poll(6)
        assert [r for r in svc.digest() if r.sent] == []  # once
    finally:
        svc.close()
