"""What a PubMed poll cannot store is never passed silently: records an efetch answer
leaves out are asked for again, kept on the query's list and retried by later polls
(given up after a few days, shown in `status`); a day with more modifications than
PubMed's 10,000-id cap is reported (summary line, `status`, digest footer) and skipped
while new records keep arriving and the notice search still brings that day's errata."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from helpers.fake_eutils import FakeEutils
from test_pubmed_windows import NOTICE_TERM, Clock, make_service, stored_events, table_count

DAY = date(2026, 6, 10)
NOON = datetime(2026, 6, 10, 16, 0)  # 12:00 in New York


def stored_pmids(store_url: str) -> set[str]:
    eng = sa.create_engine(store_url)
    with eng.connect() as c:
        keys = c.execute(sa.text("SELECT key FROM records WHERE source = 'pubmed'")).scalars().all()
    eng.dispose()
    return {str(k) for k in keys}


def efetched(eutils: FakeEutils, since: int = 0) -> list[str]:
    """PMIDs asked for by id since request number `since`."""
    return [i for r in eutils.requests[since:] if r.utility == "efetch" for i in r.params.get("id", "").split(",") if i]


def test_records_left_out_of_an_answer_are_fetched_again(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    for i in range(5):
        eutils.add(str(100 + i), terms="TRAIL", edat=DAY - timedelta(days=3), title=f"TRAIL paper {i}")
    # efetch answers 200 without 101 once (the second request brings it) and without 102
    # twice (only a later poll gets it)
    eutils.withhold = {"101": 1, "102": 2}
    clock = Clock(NOON)
    svc = make_service(tmp_path, eutils, store_url, clock)
    try:
        (first, _) = svc.poll()
        after_first = stored_pmids(store_url)
        status = {q["name"]: q for q in svc.status()["queries"]}["trail"]
        clock.at = NOON + timedelta(days=1)  # 102 was entered 3 days earlier: outside this window
        second_from = len(eutils.requests)
        (second, _) = svc.poll()
    finally:
        svc.close()
    print(f"\n{first.line()}\n{second.line()}")
    assert stored_pmids(store_url) == {"100", "101", "102", "103", "104"}
    assert after_first == {"100", "101", "103", "104"}
    assert "missing 1 (fetched again at the next poll)" in first.line() and first.ok
    assert status["missing"] == ["102"] and status["missing_since"] == "2026-06-10T16:00:00Z"
    # the second poll asked for 102 by id although no window found it again
    assert "102" in efetched(eutils, second_from) and second.missing == 0
    assert stored_events(store_url)[("102", "new")] == 1
    assert "missing" not in second.line()


def test_a_record_never_answered_is_given_up_after_days_and_shown(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    for i in range(3):
        eutils.add(str(200 + i), terms="TRAIL", edat=DAY - timedelta(days=3), title=f"TRAIL paper {i}")
    eutils.withhold = {"201": 1_000}  # deleted from PubMed: the search still knows it, efetch never answers
    clock = Clock(NOON)
    svc = make_service(tmp_path, eutils, store_url, clock)
    lines = []
    try:
        for day in range(5):
            clock.at = NOON + timedelta(days=day)
            (res, _) = svc.poll()
            lines.append(res.line())
            if day == 2:
                asked_until_day_2 = efetched(eutils).count("201")
        status = {q["name"]: q for q in svc.status()["queries"]}["trail"]
        asked_until_day_4 = efetched(eutils).count("201")
        # a search brings it back (its MDAT moves): asked for, still given up, not "missing"
        eutils.records["201"].mdat = DAY + timedelta(days=5)
        clock.at = NOON + timedelta(days=5)
        (back, _) = svc.poll()
        lines.append(back.line())
    finally:
        svc.close()
    print("\n" + "\n".join(lines))
    assert "missing 1" in lines[0] and "missing 1" in lines[2]
    assert "gave up on 1 missing for 3 days (201)" in lines[5] and back.missing == 0
    # by id: once after the first poll's history-server answer, then twice a poll (the
    # retry and the second ask)
    assert asked_until_day_2 == 5
    assert "gave up on 1 missing for 3 days (201)" in lines[3]
    assert "201" not in lines[4] and asked_until_day_4 == 7  # day 3's two asks, then no more
    assert status["missing"] == [] and [g["pmid"] for g in status["gave_up"]] == ["201"]
    from litwatch.report import format_status

    text = format_status({"queries": [status], "feeds": [], "digests": [], "outbox": _EMPTY_OUTBOX})
    print(text)
    assert "gave up on 1 record(s) PubMed never answered" in text and "201" in text
    assert stored_pmids(store_url) == {"200", "202"}


_EMPTY_OUTBOX = {"queued": 0, "oldest_queued": None, "failed": 0}


def test_a_day_of_modifications_over_the_cap_is_reported_and_skipped(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    from litwatch.sources import eutils as eu

    old_cap = eu.ESEARCH_CAP
    eu.ESEARCH_CAP = 40  # the same logic as 10,000, on a small corpus
    try:
        _overflow_scenario(tmp_path, eutils, store_url)
    finally:
        eu.ESEARCH_CAP = old_cap


def _overflow_scenario(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    eutils.add("1", terms="TRAIL", edat=date(2026, 12, 20), title="TRAIL agonist trial")
    for i in range(45):
        eutils.add(str(1000 + i), terms="TRAIL", edat=date(2026, 12, 1) + timedelta(days=i % 10), title=f"p{i}")
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n"
    clock = Clock(datetime(2026, 12, 30, 17, 0))
    svc = make_service(tmp_path, eutils, store_url, clock, queries=queries, digest="trail")
    try:
        svc.poll()
        # NLM's year-end reprocessing modifies every record on 31 December; one of them
        # also gains an erratum (and its notice appears), and a new paper is entered
        for i in range(45):
            eutils.change(str(1000 + i), mdat=datetime(2026, 12, 31, 9, 0), title=f"p{i}", mesh=("Humans",))
        eutils.change("1", mdat=datetime(2026, 12, 31, 10, 0), title="TRAIL agonist trial", links=(("ErratumIn", "9"),))
        eutils.add(
            "9",
            terms=NOTICE_TERM,
            edat=datetime(2026, 12, 31, 10, 0),
            title="Erratum: TRAIL agonist trial",
            pubtypes=("Published Erratum",),
            links=(("ErratumFor", "1"),),
        )
        eutils.add("2", terms="TRAIL", edat=datetime(2026, 12, 31, 11, 0), title="A new TRAIL paper")
        clock.at = datetime(2027, 1, 1, 17, 0)
        results = svc.poll()
        lines = [r.line() for r in results]
        status = {q["name"]: q for q in svc.status()["queries"]}["trail"]
        (preview,) = svc.digest(dry_run=True)
        clock.at = datetime(2027, 1, 2, 17, 0)  # the overlap meets that day again: no second report
        again = svc.poll()
    finally:
        svc.close()
    print("\n" + "\n".join(lines) + "\n" + preview.text[preview.text.find("Sources failing") :])
    events = stored_events(store_url)
    assert events[("2", "new")] == 1, "new papers stopped behind the modifications"
    assert events[("1", "erratum")] == 1, "the notice search did not bring the erratum"
    trail = results[0]
    assert trail.ok and trail.new == 1
    assert "modifications of 2026-12-31 skipped (47 records" in lines[0]
    (skipped,) = status["skipped_modifications"]
    assert skipped["day"] == "2026-12-31" and skipped["records"] == 47
    assert "trail (pubmed modifications)" in preview.text and "modified on 2026-12-31" in preview.text
    assert again[0].ok and table_count(store_url, "pubmed_overflow") == 1
