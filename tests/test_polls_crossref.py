"""The Crossref source end to end (issue 16): `Service.poll()` against the fake
E-utilities (tests/fake_eutils.py), a feed host (tests/feedhost.py) and the fake
Crossref REST API (tests/fake_crossref.py, real works from tests/data/crossref), then
`Service.digest()` to the file transport, on SQLite and PostgreSQL, with an injected
clock: one event per notice whatever told us, for every query that matched the record."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers import TODAY, basic_config, wait_for
from helpers.budget import peak, recorded_slots
from helpers.fake_crossref import FakeCrossref, Fault, real_works
from helpers.fake_eutils import FakeEutils
from helpers.feedhost import FeedHost
from litwatch import events as ev
from litwatch.config import load
from litwatch.records import Record
from litwatch.report import format_status
from litwatch.scheduler import build_tasks
from litwatch.service import Service
from litwatch.tasks import CROSSREF_TASK, plan_of
from test_changes import NOTICE_TERM, messages, section
from test_daemon import Run as DaemonRun

RETRACTED = "10.1021/am300292v"  # retracted 2019, Retraction Watch's entry (tests/data/crossref/MANIFEST)
RETRACTION = "10.1021/acsami.9b11759"
CORRECTED = "10.1088/1361-6595/aaebdb"  # corrected by 10.1088/1361-6595/ab245f (publisher)
CONCERNED = "10.1016/j.lungcan.2003.10.006"  # expression of concern 10.1016/j.lungcan.2026.109332
WORKS = real_works()
QUERIES = """
queries:
  - name: trail
    pubmed: TRAIL
  - name: chitosan
    pubmed: chitosan
"""
DIGESTS = """
digests:
  - name: d
    to: [a@example.org]
    queries: [trail, chitosan]
"""


class Clock:
    def __init__(self) -> None:
        self.at = datetime.combine(TODAY, time(17))  # noon in US Eastern: PubMed's day and UTC's agree

    def __call__(self) -> datetime:
        return self.at

    def day(self, n: int) -> date:
        return (datetime.combine(TODAY, time(17)) + timedelta(days=n)).date()

    def to_day(self, n: int) -> None:
        self.at = datetime.combine(TODAY, time(17)) + timedelta(days=n)


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    fake = FakeCrossref().start()
    yield fake
    fake.stop()


def config(tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, db: str, **kw: str) -> Path:
    block = f"crossref:\n  email: test@example.org\n  base_url: {crossref.url}\n  backoff: 0.05\n"
    kw.setdefault("queries", QUERIES)
    kw.setdefault("digests", DIGESTS)
    kw["extra"] = kw.get("extra", "") + block
    return basic_config(tmp_path, eutils.url, db=db, **kw)


class Run:
    """One litwatch on one database, polled and digested at the clock's time."""

    def __init__(self, cfg: Path, tmp_path: Path) -> None:
        self.clock = Clock()
        self.svc = Service(load(cfg), now=self.clock)
        self.outbox = tmp_path / "outbox"
        self.seen: set[Path] = set()

    def poll(self, day: int) -> dict[str, object]:
        self.clock.to_day(day)
        results = self.svc.poll()
        assert all(r.ok for r in results), [r.line() for r in results]
        return {r.name: r for r in results}

    def mail(self) -> list[tuple[str, str]]:
        self.svc.digest()
        return messages(self.outbox, self.seen)

    def close(self) -> None:
        self.svc.close()


@pytest.fixture
def run(tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, store_url: str) -> Iterator[Run]:
    r = Run(config(tmp_path, eutils, crossref, store_url), tmp_path)
    yield r
    r.close()


def retracted_paper(eutils: FakeEutils, edat: date, **fields: object) -> None:
    base: dict[str, object] = {"title": "Chitosan hydrogel bandages with TRAIL", "doi": "10.1021/AM300292V"}
    eutils.add("22334455", terms={"TRAIL", "chitosan"}, edat=edat, **{**base, **fields})


def pubmed_retracts(eutils: FakeEutils, day: date) -> None:
    """PubMed links the retraction: the original gains RetractionIn and the notice appears."""
    eutils.change(
        "22334455",
        mdat=day,
        title="RETRACTED: Chitosan hydrogel bandages with TRAIL",
        doi="10.1021/AM300292V",
        pubtypes=("Journal Article", "Retracted Publication"),
        links=(("RetractionIn", "31350000"),),
    )
    eutils.records["22334455"].terms = {"TRAIL", "chitosan"}
    eutils.add(
        "31350000",
        terms=NOTICE_TERM,
        edat=day,
        title="Retraction of Chitosan hydrogel bandages",
        doi=RETRACTION,
        pubtypes=("Retraction of Publication",),
        links=(("RetractionOf", "22334455"),),
    )


def notices_text(mail: list[tuple[str, str]]) -> str:
    (msg,) = mail
    return " ".join(section(msg[1], "Errata, retractions and concerns").split())


def history(run: Run, ident: str) -> list[tuple[str, str, str]]:
    """(kind, source, dedup) of every notice report stored about `ident`."""
    return [(r.kind, r.source, r.dedup) for rec in run.svc.history(ident) for r in rec["notices"]]


# ------------------------------------------------------------------------ one event per notice


def test_retraction_watch_first_then_pubmed_a_week_later_is_one_event_mailed_once(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    (first,) = run.mail()
    assert first[0] == "d: 1 new paper"

    # the next day Crossref indexes Retraction Watch's entry (both sides of it)
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(1))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(1))
    res = run.poll(1)
    assert res["crossref"].events == 2  # one per query that matched the paper  # type: ignore[attr-defined]
    mail = run.mail()
    assert mail[0][0] == "d: 1 retraction"
    text = notices_text(mail)
    assert "[Retraction — Retraction Watch] Chitosan hydrogel bandages with TRAIL" in text
    assert f"https://doi.org/{RETRACTION}" in text

    # a week later PubMed links it: the same retraction, not news again
    pubmed_retracts(eutils, run.clock.day(8))
    run.poll(8)
    assert run.mail() == []
    key = "retraction:pubmed:22334455"
    # Retraction Watch's report, then PubMed's: RetractionIn (by PMID) and the notice record (by DOI)
    assert history(run, "22334455") == [
        ("retraction", "retraction-watch", key),
        ("retraction", "pubmed", key),
        ("retraction", "pubmed", key),
    ]
    with run.svc.store.transaction() as tx:
        ((rid, _, _),) = run.svc.store.find_records(tx, "22334455")
        (event,) = run.svc.store.notice_events_for(tx, [rid], ["retraction"])[rid]
    assert event.detail["sources"] == ["Retraction Watch", "PubMed"]


def test_pubmed_first_then_crossref_is_one_event_naming_both(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    run.mail()
    pubmed_retracts(eutils, run.clock.day(1))
    run.poll(1)
    mail = run.mail()
    assert mail[0][0] == "d: 1 retraction"
    assert "[Retraction — PubMed]" in notices_text(mail)
    # Crossref learns of it a week later (the daily re-check reads `updated-by`)
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(8))
    res = run.poll(8)
    assert res["crossref"].found == 1 and res["crossref"].events == 0  # type: ignore[attr-defined]
    assert run.mail() == []
    reports = history(run, "10.1021/am300292v")
    assert [s for _, s, _ in reports] == ["pubmed", "pubmed", "retraction-watch"]
    assert {d for _, _, d in reports} == {"retraction:pubmed:22334455"}
    with run.svc.store.transaction() as tx:
        ((rid, _, _),) = run.svc.store.find_records(tx, "22334455")
        (event,) = run.svc.store.notice_events_for(tx, [rid], ["retraction"])[rid]
    assert event.detail["sources"] == ["PubMed", "Retraction Watch"]


# ------------------------------------------------------------------------ feeds, kinds, strangers


def rss_with_doi(doi: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">'
        "<channel><title>Plasma letters</title><link>https://example.org/</link><description>x</description>"
        "<item><title>Fast breakdown in a TRAIL of chitosan discharge</title>"
        f"<link>https://example.org/a/1</link><guid>plasma-1</guid><prism:doi>{doi}</prism:doi>"
        "<description>An atmospheric discharge.</description><pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate>"
        "</item></channel></rss>"
    ).encode()


def test_a_feed_only_item_corrected_in_crossref_is_an_erratum_for_every_query_that_matched_it(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, store_url: str
) -> None:
    with FeedHost() as host:
        host.feed("/plasma.xml", rss_with_doi(CORRECTED.upper()))
        queries = (
            "queries:\n  - name: trail\n    feeds: [plasma]\n    match: TRAIL\n"
            "  - name: chitosan\n    feeds: [plasma]\n    match: chitosan\n"
        )
        extra = f"feeds:\n  - name: plasma\n    url: {host.url('/plasma.xml')}\n"
        run = Run(config(tmp_path, eutils, crossref, store_url, queries=queries, extra=extra), tmp_path)
        try:
            run.poll(0)
            assert run.mail()[0][0] == "d: 1 new paper"
            crossref.add(WORKS["10.1088/1361-6595/ab245f"], indexed=run.clock.day(1))
            res = run.poll(1)
            assert res["crossref"].events == 2  # type: ignore[attr-defined]
            mail = run.mail()
            assert mail[0][0] == "d: 1 erratum"
            text = notices_text(mail)
            assert "[Correction — publisher notice] Fast breakdown in a TRAIL of chitosan discharge" in text
            assert "https://doi.org/10.1088/1361-6595/ab245f" in text
            run.poll(2)  # seen again (overlap, re-check): nothing new
            assert run.mail() == []
        finally:
            run.close()


def test_an_unknown_update_type_is_history_only(run: Run, eutils: FakeEutils, crossref: FakeCrossref) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    run.mail()
    work = copy.deepcopy(WORKS[RETRACTED])
    work["updated-by"][0]["type"] = "retraction_of_a_figure"  # a type Crossref adds one day
    work["updated-by"][0]["source"] = "publisher"
    crossref.add(work, indexed=run.clock.day(1))
    res = run.poll(1)
    assert res["crossref"].found == 1 and res["crossref"].events == 0  # type: ignore[attr-defined]
    assert run.mail() == []
    assert history(run, "22334455") == [("other", "publisher", "")]


def test_an_expression_of_concern(run: Run, eutils: FakeEutils, crossref: FakeCrossref) -> None:
    eutils.add("15000001", terms="TRAIL", edat=run.clock.day(0), title="Recoverin and TRAIL", doi=CONCERNED)
    run.poll(0)
    run.mail()
    crossref.add(WORKS["10.1016/j.lungcan.2026.109332"], indexed=run.clock.day(1))
    run.poll(1)
    mail = run.mail()
    assert mail[0][0] == "d: 1 expression of concern"
    assert "[Expression of concern — publisher notice] Recoverin and TRAIL" in notices_text(mail)


def test_notices_for_dois_never_stored_are_ignored_without_a_request_each(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    run.mail()
    before = len(crossref.requests)
    # 500 corrections of works litwatch never stored, and the real notices of others
    for i in range(500):
        crossref.add(
            {
                "DOI": f"10.5555/notice{i}",
                "type": "journal-article",
                "title": [f"Correction {i}"],
                "update-to": [{"DOI": f"10.5555/stranger{i}", "type": "correction", "source": "publisher"}],
            },
            indexed=run.clock.day(1),
        )
    for doi in ("10.1088/1361-6595/ab245f", "10.1016/j.lungcan.2026.109332"):
        crossref.add(WORKS[doi], indexed=run.clock.day(1))
    res = run.poll(1)
    assert res["crossref"].found == 0 and res["crossref"].events == 0  # type: ignore[attr-defined]
    # one page of new notices (rows=1000) and one re-check batch: no request per notice
    asked = crossref.requests[before:]
    assert res["crossref"].requests == len(asked) == 2  # type: ignore[attr-defined]
    assert all(r.path.rstrip("/") == "/works" for r in asked)
    assert run.mail() == []
    assert history(run, "22334455") == []


def test_an_erratum_from_pubmed_then_crossref_meets_by_the_notice_doi(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    base = {"title": "TRAIL in an atmospheric discharge", "doi": CORRECTED}
    eutils.add("16000001", terms="TRAIL", edat=run.clock.day(0), **base)
    run.poll(0)
    run.mail()
    # PubMed: ErratumIn on the original and the erratum's own record, which carries its DOI
    eutils.change("16000001", mdat=run.clock.day(1), links=(("ErratumIn", "16000002"),), **base)
    eutils.add(
        "16000002",
        terms=NOTICE_TERM,
        edat=run.clock.day(1),
        title="Erratum: TRAIL in an atmospheric discharge",
        doi="10.1088/1361-6595/ab245f",
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "16000001"),),
    )
    run.poll(1)
    assert run.mail()[0][0] == "d: 1 erratum"
    # Crossref's correction notice, indexed three weeks later: PubMed's erratum, not another
    crossref.add(WORKS["10.1088/1361-6595/ab245f"], indexed=run.clock.day(22))
    res = run.poll(22)
    assert res["crossref"].found == 1 and res["crossref"].events == 0  # type: ignore[attr-defined]
    assert run.mail() == []
    assert [s for _, s, _ in history(run, "16000001")] == ["pubmed", "pubmed", "publisher"]


def test_a_retraction_the_first_version_showed_is_no_news(run: Run, eutils: FakeEutils, crossref: FakeCrossref) -> None:
    retracted_paper(
        eutils,
        run.clock.day(0),
        title="RETRACTED: Chitosan hydrogel bandages with TRAIL",
        pubtypes=("Journal Article", "Retracted Publication"),
        links=(("RetractionIn", "31350000"),),
    )
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(0))
    res = run.poll(0)  # new with its retraction shown; Crossref's re-check finds it: recorded only
    assert res["crossref"].found == 1 and res["crossref"].events == 0  # type: ignore[attr-defined]
    (first,) = run.mail()
    assert first[0] == "d: 1 new paper"
    assert history(run, "22334455") == [("retraction", "retraction-watch", "")]


# ------------------------------------------------------------------------ status, run, cost


def crossref_status(run: Run) -> dict[str, Any]:
    """`status`'s entry of the Crossref source (the notice search has one too)."""
    return next(s for s in run.svc.status()["sources"] if s["name"] == "crossref")


def test_status_shows_the_source_and_a_failure_stores_nothing(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    run.mail()
    src = crossref_status(run)
    assert src["name"] == "crossref" and src["last_success"] and src["last_recheck"] and not src["last_error"]
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(1))
    crossref.faults += [Fault(route="works", status=500) for _ in range(10)]  # past both halves' retries
    run.clock.to_day(1)
    results = {r.name: r for r in run.svc.poll()}
    assert results["trail"].ok and results["chitosan"].ok  # the other sources went on
    assert not results["crossref"].ok and "HTTP 500" in (results["crossref"].error or "")
    src = crossref_status(run)
    assert src["failing_since"] and "HTTP 500" in src["last_error"]
    assert "Sources:\n  crossref: last success" in format_status(run.svc.status())
    assert run.mail() == []  # nothing stored, the watermarks stayed
    crossref.faults.clear()
    assert run.poll(1)["crossref"].events == 2  # type: ignore[attr-defined]
    assert crossref_status(run)["last_error"] is None


def test_run_has_its_own_crossref_task_and_a_shared_budget(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    tasks = build_tasks(run.svc.settings, run.clock())
    assert tasks[CROSSREF_TASK].kind == "crossref" and tasks[CROSSREF_TASK].plan == plan_of(run.svc.settings.queries[0])
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    with run.svc.store.transaction() as tx:
        _, starts = run.svc.store.budget_starts(tx, f"crossref:{urlsplit(crossref.url).netloc}")
    assert starts  # every process on the database paces Crossref's list route together


@pytest.mark.slow
@pytest.mark.parametrize("limit", [10, 3], ids=["10-per-s", "polite-3-per-s"])
def test_cost_of_a_daily_recheck_of_ten_thousand_stored_dois(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, limit: int
) -> None:
    """The figure for README: requests and time of one cycle re-checking 10,000 stored
    DOIs, the fake advertising `limit` requests a second (x-rate-limit-interval 1s,
    3 at once), through `Service.poll_crossref` (its shared budget included).

    The pace is checked where litwatch decides it, on the shared budget's reserved
    slots (at most `limit` in any second), not by the fake's refusals: a request sent
    on time can reach the fake late when the machine is loaded, and a refusal (429,
    retried after its Retry-After) is then one more request, not a lost check."""
    crossref.limits["polite-array"] = (limit, 1.0, 3)
    run = Run(config(tmp_path, eutils, crossref, f"sqlite:///{tmp_path / 'db.sqlite'}"), tmp_path)
    try:
        rows = [Record(source="feed:x", key=str(i), title="t", doi=f"10.5555/stored.{i}") for i in range(10_000)]
        with run.svc.store.transaction() as tx:
            run.svc.store.insert_records(tx, [(r, ev.fingerprint(r)) for r in rows], run.clock())
        with recorded_slots(run.svc.store) as slots:
            started = monotonic()
            res = run.svc.poll_crossref()
            took = monotonic() - started
    finally:
        run.close()
    (reserved,) = slots.values()  # one budget: Crossref's, shared by every process on the database
    computed = (res.requests - 1) / limit
    print(
        f"10,000 stored DOIs at {limit}/1s: {res.requests} requests, {took:.1f}s measured, "
        f"{computed:.1f}s at the advertised rate, {crossref.rejected} refused (retried), "
        f"max {crossref.max_in_flight} at once, at most {peak(reserved)} slots reserved in one second"
    )
    assert res.ok
    assert res.requests == len(crossref.requests) == 200 + crossref.rejected  # 200 batches of 50, each 429 retried once
    # every request took a slot; one that reached its slot too late (a loaded host) took another
    assert len(reserved) >= res.requests and peak(reserved) <= limit
    assert crossref.max_in_flight <= 3


def test_run_polls_crossref_as_its_own_task(tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref) -> None:
    """`litwatch run`: the Crossref task runs as often as the queries; the notice that
    Crossref indexed today about a paper the queries stored is mailed once."""
    retracted_paper(eutils, TODAY)
    crossref.add(WORKS[RETRACTION], indexed=TODAY)
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: 2s\n"
    digests = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n    every: 2s\n"
    cfg = config(tmp_path, eutils, crossref, f"sqlite:///{tmp_path / 'litwatch.db'}", queries=queries, digests=digests)
    daemon = DaemonRun(cfg, tmp_path / "run.log")
    try:
        daemon.wait_log(r"source=crossref found=1 new=0 events=1", timeout=30)
        # in a mail of its own, or in the paper's first mail when the Crossref task ran
        # before the first digest: either way once
        wait_for(
            lambda: any("Retraction — Retraction Watch" in t for _, t in messages(tmp_path / "outbox", set())),
            30,
            "the retraction mailed",
        )
        daemon.wait_log(r"source=crossref found=1 new=0 events=0", timeout=30)  # seen again: no news
        rc, _ = daemon.stop()
    finally:
        daemon.kill()
    assert rc == 0
    texts = [t for _, t in messages(tmp_path / "outbox", set())]
    assert sum("[Retraction — Retraction Watch]" in t for t in texts) == 1


# ------------------------------------------------------------------------ one bad DOI never blocks the rest (issue 24)

COMMA = "10.1000/ab,cd"  # legal in a DOI, and no Crossref filter value can carry it


def store_dois(run: Run, *dois: str) -> None:
    rows = [Record(source="feed:x", key=f"odd-{i}", title="t", doi=d) for i, d in enumerate(dois)]
    with run.svc.store.transaction() as tx:
        run.svc.store.insert_records(tx, [(r, ev.fingerprint(r)) for r in rows], run.clock())


def test_a_doi_with_a_comma_is_checked_alone_and_every_other_doi_still_is(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    store_dois(run, COMMA)
    run.poll(0)
    run.mail()
    # Retraction Watch's entry is indexed: the search finds it, the re-check reads it too
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(1))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(1))
    res = run.poll(1)  # asserts every source ok
    assert res["crossref"].events == 2  # type: ignore[attr-defined]
    assert run.mail()[0][0] == "d: 1 retraction"
    alone = [r.path for r in crossref.requests if r.path.startswith("/works/")]
    assert alone and all("ab%2Ccd" in p or "ab,cd" in p for p in alone)  # one works/{doi} request
    assert not any(COMMA in ",".join(r.params.get("filter", [])) for r in crossref.lists())
    print(f"comma DOI: {len(alone)} works/{{doi}} requests in 2 re-checks, crossref {res['crossref'].line()}")  # type: ignore[attr-defined]


def test_a_refused_batch_is_split_to_the_culprit_and_reported_once_in_status(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    bad = "10.5555/refused"
    retracted_paper(eutils, run.clock.day(0))
    store_dois(run, *(f"10.5555/ok.{i}" for i in range(20)), bad)
    crossref.refuse.add(bad)
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(-30))  # older than the watermark: the re-check's
    res = run.poll(0)
    assert res["crossref"].ok and res["crossref"].events == 2  # type: ignore[attr-defined]  # one per query
    src = crossref_status(run)
    assert src["last_error"] is None and src["recheck_note"] == f"1 stored DOI Crossref refused to check: {bad}"
    text = format_status(run.svc.status())
    assert text.count(bad) == 1, text
    refused = sum(1 for r in crossref.requests if bad in ",".join(r.params.get("filter", [])) or bad in r.path)
    print(f"refused batch of 22: {len(crossref.requests)} requests, {refused} naming the culprit")


def test_a_refused_recheck_never_stops_the_new_notice_search_and_vice_versa(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    retracted_paper(eutils, run.clock.day(0))
    run.poll(0)
    run.mail()
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(1))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(1))
    # the re-check is refused for good (every try); the search still finds the retraction
    crossref.faults += [Fault(route="works", status=503, filter_has="doi:") for _ in range(20)]
    run.clock.to_day(1)
    res = {r.name: r for r in run.svc.poll()}
    assert res["crossref"].events == 2 and "re-check" in (res["crossref"].error or "")
    assert run.mail()[0][0] == "d: 1 retraction"
    src = crossref_status(run)
    assert src["failing_since"] and "HTTP 503" in src["last_error"]
    crossref.faults.clear()
    # the other way: the search is refused, the (due) re-check still reads a retraction
    eutils.add("22334466", terms={"TRAIL"}, edat=run.clock.day(2), title="Lung TRAIL", doi="10.5555/lung")
    run.poll(2)
    run.mail()
    work = copy.deepcopy(WORKS[RETRACTED])
    work["DOI"] = "10.5555/lung"
    work["updated-by"][0].update({"DOI": "10.5555/lung-retraction", "record-id": "99999"})
    crossref.add(work, indexed=run.clock.day(-40))  # indexed long ago: only the re-check reads it
    crossref.faults += [Fault(route="works", status=503, filter_has="is-update") for _ in range(20)]
    run.clock.to_day(3)
    res = {r.name: r for r in run.svc.poll()}
    assert "new notices" in (res["crossref"].error or "") and res["crossref"].events == 1
    assert run.mail()[0][0] == "d: 1 retraction"
