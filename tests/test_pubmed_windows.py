"""PubMed windows against the clock: NCBI's EDAT/MDAT and `mindate`/`maxdate` are US
Eastern calendar days, so every window is computed in America/New_York (DST included)
and overlaps the previous one by a day. The Service runs on an injected clock; the fake
E-utilities server files records under the New York day they were entered/modified."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import basic_config
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.service import Service

NOTICE_TERM = (
    '"published erratum"[pt] OR "retraction of publication"[pt] OR "retraction notice"[pt]'
    ' OR "expression of concern"[pt]'
)
ONE_QUERY = "queries:\n  - name: trail\n    pubmed: TRAIL\n"


class Clock:
    """The Service's `now`: naive UTC, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def make_service(
    tmp_path: Path, eutils: FakeEutils, store_url: str, clock: Clock, queries: str = ONE_QUERY, digest: str = ""
) -> Service:
    """A Service on `clock`; with `digest`, a digest `d` of that query to a@example.org."""
    digests = f"digests:\n  - name: d\n    to: [a@example.org]\n    queries: [{digest}]\n" if digest else ""
    cfg = basic_config(tmp_path, eutils.url, db=store_url, queries=queries, digests=digests)
    # 10 requests/s instead of 3: these tests make many small polls
    cfg.write_text(cfg.read_text().replace("  email: test@example.org\n", "  email: test@example.org\n  api_key: k\n"))
    return Service(load(cfg), now=clock)


def stored_events(store_url: str) -> Counter[tuple[str, str]]:
    eng = sa.create_engine(store_url)
    with eng.connect() as c:
        rows = c.execute(
            sa.text("SELECT r.key, e.kind FROM events e JOIN records r ON r.id = e.record_id WHERE r.source = 'pubmed'")
        ).all()
    eng.dispose()
    return Counter((str(k), str(kind)) for k, kind in rows)


def table_count(store_url: str, table: str) -> int:
    eng = sa.create_engine(store_url)
    with eng.connect() as c:
        n = c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    eng.dispose()
    return int(n)


def searches(
    eutils: FakeEutils, since: int, datetype: str, term: str = "TRAIL", until: int | None = None
) -> list[tuple[str, str]]:
    """The (mindate, maxdate) of each search of `datetype` since request `since`: a
    search of that type alone, or its range in a search ORing the entered and the
    modified windows (`(TRAIL) AND (A:B[edat] OR C:D[mdat])`)."""
    out = []
    for r in eutils.requests[since:until]:
        if r.utility != "esearch":
            continue
        if r.params.get("term") == term and r.params.get("datetype") == datetype:
            out.append((r.params["mindate"], r.params["maxdate"]))
        elif r.params.get("term", "").startswith(f"({term}) AND ("):
            m = re.search(r"(\d{4}/\d\d/\d\d):(\d{4}/\d\d/\d\d)\[" + datetype + r"\]", r.params["term"])
            if m:
                out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize(
    ("first_poll", "late_entry", "eastern_day"),
    [
        # the case: 02:00 UTC on 10 March is 22:00 on 9 March in New York (EDT)
        (datetime(2026, 3, 10, 2, 0), datetime(2026, 3, 9, 23, 30), date(2026, 3, 9)),
        # the evening DST began (8 March 2026): 03:30 UTC is 23:30 EDT, UTC-4 already
        (datetime(2026, 3, 9, 3, 30), datetime(2026, 3, 8, 23, 50), date(2026, 3, 8)),
        # the evening DST ended (1 November 2026): 04:30 UTC is 23:30 EST, UTC-5 again
        (datetime(2026, 11, 2, 4, 30), datetime(2026, 11, 1, 23, 50), date(2026, 11, 1)),
        # year end: 02:00 UTC on 1 January is 21:00 on 31 December in New York
        (datetime(2027, 1, 1, 2, 0), datetime(2026, 12, 31, 23, 30), date(2026, 12, 31)),
    ],
    ids=["issue-10-march", "dst-start", "dst-end", "year-end"],
)
def test_records_entered_late_in_the_new_york_evening_are_found(
    tmp_path: Path,
    eutils: FakeEutils,
    store_url: str,
    first_poll: datetime,
    late_entry: datetime,
    eastern_day: date,
) -> None:
    eutils.add("1", terms="TRAIL", edat=eastern_day - timedelta(days=5), title="TRAIL agonist trial")
    clock = Clock(first_poll)
    svc = make_service(tmp_path, eutils, store_url, clock)
    try:
        svc.poll()
        # later that evening in New York, after the first poll: a new record, an erratum
        # on the stored one (its MDAT moves) and the erratum notice itself
        eutils.add("2", terms="TRAIL", edat=late_entry, title="Entered late in the evening")
        eutils.change(
            "1", mdat=late_entry + timedelta(minutes=5), title="TRAIL agonist trial", links=(("ErratumIn", "901"),)
        )
        eutils.add(
            "901",
            terms=NOTICE_TERM,
            edat=late_entry + timedelta(minutes=6),
            title="Erratum: TRAIL agonist trial",
            pubtypes=("Published Erratum",),
            links=(("ErratumFor", "1"),),
        )
        clock.at = first_poll + timedelta(hours=6)
        second_from = len(eutils.requests)
        second = svc.poll()
        after_second = (table_count(store_url, "versions"), table_count(store_url, "events"))
        clock.at = first_poll + timedelta(hours=30)
        third_from = len(eutils.requests)
        third = svc.poll()
    finally:
        svc.close()
    events = stored_events(store_url)
    print(f"\n{first_poll:%Y-%m-%d %H:%M} UTC (New York day {eastern_day}): events {sorted(events.items())}")
    print("  " + "\n  ".join(r.line() for r in (*second, *third)))
    assert events == Counter({("1", "new"): 1, ("2", "new"): 1, ("1", "erratum"): 1})
    # the first window ends on New York's day, not UTC's
    first_edat = searches(eutils, 0, "edat")[0]
    assert first_edat[1] == f"{eastern_day:%Y/%m/%d}"
    # each later window reaches back one day before the watermark, edat and mdat alike
    # (6 h and 30 h after the first poll it is the next day and the one after in New York)
    polls = ((second_from, third_from, eastern_day), (third_from, None, eastern_day + timedelta(days=1)))
    for since, until, wm in polls:
        window = [(f"{wm - timedelta(days=1):%Y/%m/%d}", f"{wm + timedelta(days=1):%Y/%m/%d}")]
        assert searches(eutils, since, "edat", until=until) == window
        assert searches(eutils, since, "mdat", until=until) == window
    # the third poll finds the same records again in the overlap: no version, no event
    assert third[0].found == 2
    assert (table_count(store_url, "versions"), table_count(store_url, "events")) == after_second
    assert all(r.ok for r in (*second, *third))


@pytest.mark.parametrize(
    ("utc", "new_york_day"),
    [
        (datetime(2026, 3, 10, 2, 0), date(2026, 3, 9)),
        (datetime(2026, 3, 10, 4, 0), date(2026, 3, 10)),  # EDT: midnight is 04:00 UTC
        (datetime(2026, 3, 8, 4, 59), date(2026, 3, 7)),  # EST: midnight is 05:00 UTC
        (datetime(2026, 3, 8, 5, 0), date(2026, 3, 8)),
        (datetime(2026, 3, 9, 4, 30), date(2026, 3, 9)),  # a fixed UTC-5 would say 8 March
        (datetime(2026, 11, 1, 4, 30), date(2026, 11, 1)),  # still EDT: 00:30
        (datetime(2026, 11, 2, 4, 30), date(2026, 11, 1)),  # EST since 06:00 UTC on 1 Nov: 23:30
        (datetime(2027, 1, 1, 4, 59), date(2026, 12, 31)),
        (datetime(2027, 1, 1, 5, 0), date(2027, 1, 1)),
    ],
)
def test_pubmed_day_is_the_day_in_new_york(utc: datetime, new_york_day: date) -> None:
    from litwatch.sources.eutils import pubmed_day

    assert pubmed_day(utc) == new_york_day


@pytest.mark.parametrize("failing", ["mdat", "edat"])
def test_new_record_and_modification_searches_keep_their_own_progress(
    tmp_path: Path, eutils: FakeEutils, store_url: str, failing: str
) -> None:
    from helpers.fake_eutils import Fault

    day = date(2026, 6, 10)
    eutils.add("1", terms="TRAIL", edat=day - timedelta(days=3), title="TRAIL agonist trial")
    clock = Clock(datetime(2026, 6, 10, 16, 0))
    svc = make_service(tmp_path, eutils, store_url, clock)
    try:
        svc.poll()
        # the next two days one of the two searches is refused; the other goes on
        # (each day: the OR'd search, then the failing one of the two it falls back to)
        eutils.faults.append(Fault("esearch", 400, body=b"refused", term="TRAIL", datetype=failing, times=4))
        eutils.add("2", terms="TRAIL", edat=datetime(2026, 6, 11, 9, 0), title="A new TRAIL paper")
        eutils.change("1", mdat=datetime(2026, 6, 11, 9, 0), title="TRAIL agonist trial", links=(("ErratumIn", "9"),))
        lines = []
        for n in (1, 2, 3):
            clock.at = datetime(2026, 6, 10, 16, 0) + timedelta(days=n)
            since = len(eutils.requests)
            (res, _) = svc.poll()
            lines.append(res.line())
            if n == 1:
                first_events = stored_events(store_url)
        st = {q["name"]: q for q in svc.status()["queries"]}["trail"]
    finally:
        svc.close()
    print("\n" + "\n".join(lines))
    working = "edat" if failing == "mdat" else "mdat"
    # what the working search brings is stored at once, despite the other's failure
    # (a new record is also a modified one: the modification search finds it too)
    assert first_events[("2", "new")] == 1
    assert first_events[("1", "erratum")] == (1 if working == "mdat" else 0)
    label = "(modifications)" if failing == "mdat" else "(new records)"
    assert f"errors 1: query trail {label}: HTTP 400" in lines[0] and "errors 1" in lines[1]
    assert "errors 0" in lines[2] and st["last_error"] is None
    # the failed search starts again where it stopped; the working one went on
    assert searches(eutils, since, failing) == [("2026/06/09", "2026/06/13")]
    assert searches(eutils, since, working) == [("2026/06/11", "2026/06/13")]
    assert stored_events(store_url) == Counter({("1", "new"): 1, ("2", "new"): 1, ("1", "erratum"): 1})


@pytest.mark.skipif(shutil.which("faketime") is None, reason="Debian's faketime is not installed")
def test_litwatch_poll_late_in_the_new_york_evening_whole_process(tmp_path: Path, eutils: FakeEutils) -> None:
    """The issue's case through `litwatch poll` itself, the host clock faked (libfaketime)."""
    eutils.add("1", terms="TRAIL", edat=date(2026, 3, 5), title="TRAIL agonist trial")
    cfg = basic_config(tmp_path, eutils.url, queries=ONE_QUERY, digests="")

    def poll_at(when: str) -> str:
        r = subprocess.run(
            ["faketime", when, sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "poll"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return f"[{when} UTC] " + r.stdout.splitlines()[0]

    lines = [poll_at("2026-03-10 02:00:00")]  # 22:00 on 9 March in New York
    eutils.add("2", terms="TRAIL", edat=datetime(2026, 3, 9, 23, 30), title="Entered late in the evening")
    eutils.change("1", mdat=datetime(2026, 3, 9, 23, 35), title="TRAIL agonist trial", links=(("ErratumIn", "9"),))
    lines += [poll_at("2026-03-10 08:00:00"), poll_at("2026-03-11 08:00:00")]
    print("\n" + "\n".join(lines))
    url = f"sqlite:///{tmp_path / 'litwatch.db'}"
    assert stored_events(url) == Counter({("1", "new"): 1, ("2", "new"): 1, ("1", "erratum"): 1})
    assert searches(eutils, 0, "edat")[0][1] == "2026/03/09"
