"""Quiet polls cost what is new (issue 28): the day of overlap brings back every record
entered or modified since the day before the watermark; those stored already, fetched
after their last modification day had ended, are not fetched again, and none is fetched
twice the same day. PubMed's dates are whole US Eastern days: a known record modified
on the day a poll fetched it is fetched once more, the next day. The fake E-utilities
server's request log says which records each poll fetched (by id, or from the history
server)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from helpers.fake_eutils import FakeEutils
from test_pubmed_windows import Clock, make_service

QUERY = "queries:\n  - name: onc\n    pubmed: cancer\n"
DAY = date(2026, 11, 20)  # "today", in New York
TEN_AM = timedelta(hours=15)  # 10:00 in New York (EST) is 15:00 UTC


def at(day: date, hours: float = 0) -> datetime:
    return datetime(day.year, day.month, day.day) + TEN_AM + timedelta(hours=hours)


def fetched(eutils: FakeEutils, since: int) -> list[str]:
    """The PMIDs every efetch since request `since` asked for, each time it did."""
    out: list[str] = []
    for r in eutils.requests[since:]:
        if r.utility != "efetch":
            continue
        if "WebEnv" in r.params:
            start, n = int(r.params.get("retstart", "0")), int(r.params.get("retmax", "20"))
            out += eutils.histories[r.params["WebEnv"]][start : start + n]
        else:
            out += [i for i in r.params.get("id", "").split(",") if i]
    return out


def mdat_searches(eutils: FakeEutils, since: int) -> int:
    return sum(1 for r in eutils.requests[since:] if r.utility == "esearch" and r.params.get("datetype") == "mdat")


def versions_of(store_url: str, pmid: str) -> int:
    eng = sa.create_engine(store_url)
    with eng.connect() as c:
        n = c.execute(
            sa.text("SELECT count(*) FROM versions v JOIN records r ON r.id = v.record_id WHERE r.key = :k"),
            {"k": pmid},
        ).scalar_one()
    eng.dispose()
    return int(n)


def test_a_quiet_poll_after_9000_records_entered_today_fetches_none_of_them_again(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    old = [str(30_000_000 + i) for i in range(5)]
    for pmid in old:
        eutils.add(pmid, terms="cancer", edat=DAY - timedelta(days=7), title=f"Old {pmid}")
    clock = Clock(at(DAY - timedelta(days=1)))
    svc = make_service(tmp_path, eutils, store_url, clock, queries=QUERY)
    try:
        first = svc.poll()[0]
        assert first.ok and first.new == 5

        # 9,000 records entered today; the next poll fetches them
        today = [str(40_000_000 + i) for i in range(9_000)]
        for pmid in today:
            eutils.add(pmid, terms="cancer", edat=DAY, title=f"Today {pmid}")
        clock.at = at(DAY)
        big = svc.poll()[0]
        assert big.ok and big.new == 9_000

        # an hour later: one more record entered, an old record modified (fetched
        # yesterday: fetched now), one of today's modified (fetched today: tomorrow)
        new, changed_old, changed_today = "40100000", old[0], today[17]
        eutils.add(new, terms="cancer", edat=DAY, title="One more")
        eutils.change(changed_old, mdat=DAY, title="Old, corrected")
        eutils.change(changed_today, mdat=DAY, title="Today, corrected")
        clock.at = at(DAY, hours=1)
        since = len(eutils.requests)
        quiet = svc.poll()[0]
        same_day = fetched(eutils, since)
        print(f"\nquiet poll the same day: found {quiet.found}, fetched {len(same_day)}: {sorted(same_day)[:5]}")
        assert quiet.ok and quiet.found == 9_002
        assert sorted(same_day) == sorted([new, changed_old])
        assert (quiet.new, quiet.changed) == (1, 1)
        assert versions_of(store_url, changed_today) == 1

        # the next day: what was fetched on its modification day (today's records,
        # the corrected ones) is fetched once more, now that the day has ended
        clock.at = at(DAY + timedelta(days=1))
        since = len(eutils.requests)
        next_day = svc.poll()[0]
        again = fetched(eutils, since)
        assert next_day.ok
        assert sorted(again) == sorted([*today, new, changed_old])
        assert versions_of(store_url, changed_today) == 2  # the change later that day is caught
        assert next_day.changed == 1

        # the same next day, an hour later: nothing
        clock.at = at(DAY + timedelta(days=1), hours=1)
        since = len(eutils.requests)
        assert svc.poll()[0].ok
        assert fetched(eutils, since) == []

        # the day after: today's records are still in the overlap, but were fetched
        # after their modification day; one modification search tells them apart
        modified = today[42]
        eutils.change(modified, mdat=DAY + timedelta(days=1), title="Modified the next day")
        clock.at = at(DAY + timedelta(days=2))
        since = len(eutils.requests)
        later = svc.poll()[0]
        assert later.ok and later.found == 9_002
        assert fetched(eutils, since) == [modified]
        assert mdat_searches(eutils, since) == 1
        assert versions_of(store_url, modified) == 2
    finally:
        svc.close()
