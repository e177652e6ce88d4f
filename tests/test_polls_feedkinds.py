"""Feeds of kind openfda and ema polled through `Service.poll()` (polls/feeds.py,
polls/feedkinds.py), against the local openFDA (tests/fake_openfda.py) and a file host
(tests/feedhost.py) serving EMA's medicines JSON, on SQLite and PostgreSQL.

A record's first match is the event its `reg_kind` says (`events.classify_new`,
`approvals.event_kind`): `approval` for a new application, a new indication, a CHMP
opinion or an EU authorisation; `update` for a withdrawal."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import wait_for
from helpers.fake_openfda import FakeOpenFda
from helpers.feedhost import FeedHost, Reply
from litwatch.config import Settings, loads
from litwatch.coordination import DailyRequests
from litwatch.errors import SourceError
from litwatch.polls.results import PollResult
from litwatch.records import SHARED
from litwatch.report import format_status
from litwatch.service import Service
from litwatch.store import Store

DATA = Path(__file__).parent / "data"
EMA_PATH = "/en/documents/report/medicines-output-medicines_json-report_en.json"
JSON = "application/json"
FDA_NOW = datetime(2026, 1, 27, 12, 0)  # naive UTC, as the service's clock
EMA_NOW = datetime(2026, 10, 5, 8, 0)


# ---------------------------------------------------------------------------- helpers


def _apps() -> dict[str, dict[str, Any]]:
    doc = json.loads((DATA / "openfda" / "applications.json").read_text())
    return {a["application_number"]: a for a in doc["results"]}


def _ema() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "ema" / "medicines-excerpt.json").read_text(encoding="utf-8"))
    return doc


def _medicine(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(m for m in doc["data"] if m["name_of_medicine"] == name)
    return found


def settings(
    tmp_path: Path, store_url: str, feeds: str, queries: str, digest_queries: str, backfill: str = "30d"
) -> Settings:
    return loads(
        f"""
database: "{store_url}"
pubmed:
  email: test@example.org
mail:
  transport: file
  directory: {tmp_path / "outbox"}
  from: "litwatch <litwatch@example.org>"
feeds:
{feeds}
queries:
{queries}
digests:
  - name: d
    to: [a@example.org]
    queries: [{digest_queries}]
    backfill: {backfill}
"""
    )


def fda_feed(fda: FakeOpenFda) -> str:
    return f"""  - name: fda-approvals
    kind: openfda
    url: {fda.search_url}
    retries: 2
    backoff: 0
    timeout: 10
"""


def ema_feed(host: FeedHost, stale_days: int = 14) -> str:
    return f"""  - name: ema-medicines
    kind: ema
    url: {host.url(EMA_PATH)}
    stale_days: {stale_days}
    retries: 2
    backoff: 0
    timeout: 10
"""


def query(name: str, feed: str, match: str) -> str:
    return f"  - name: {name}\n    feeds: [{feed}]\n    match: '{match}'\n"


MYELOMA_FDA = query("myeloma", "fda-approvals", "myeloma OR aponermin OR daratumumab OR pomalidomide")
MYELOMA_EMA = query("myeloma", "ema-medicines", '"multiple myeloma" OR pomalidomide')


def poll(s: Settings, now: datetime) -> PollResult:
    svc = Service(s, now=lambda: now)
    try:
        (result,) = [r for r in svc.poll(wait=0) if r.source.startswith("feed:")]
    finally:
        svc.close()
    return result


def events(store_url: str) -> list[tuple[str, str, str]]:
    """(query, kind, record key) of every event, in order."""
    eng = sa.create_engine(store_url)
    try:
        with eng.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT e.query, e.kind, r.key FROM events e JOIN records r ON r.id = e.record_id ORDER BY e.id"
                )
            ).all()
    finally:
        eng.dispose()
    return [(q, k, key) for q, k, key in rows]


def hits(store_url: str) -> dict[tuple[str, str], list[str]]:
    eng = sa.create_engine(store_url)
    try:
        with eng.connect() as c:
            rows = c.execute(
                sa.text("SELECT h.query, r.key, h.terms FROM hits h JOIN records r ON r.id = h.record_id")
            ).all()
    finally:
        eng.dispose()
    return {(q, key): json.loads(terms) for q, key, terms in rows}


def state(s: Settings, feed: str) -> Any:
    store = Store(s.database)
    try:
        with store.transaction() as tx:
            return store.poll_state(tx, SHARED, f"feed:{feed}")
    finally:
        store.close()


@pytest.fixture
def fda() -> Iterator[FakeOpenFda]:
    with FakeOpenFda(_apps().values()) as fake:
        yield fake


@pytest.fixture
def host() -> Iterator[FeedHost]:
    with FeedHost() as h:
        yield h


# ---------------------------------------------------------------------------- openfda


def test_openfda_new_bla_and_efficacy_supplement_tentative_ignored(
    tmp_path: Path, store_url: str, fda: FakeOpenFda
) -> None:
    s = settings(tmp_path, store_url, fda_feed(fda), MYELOMA_FDA, "myeloma")
    fda.throttle(1, retry_after="0")  # openFDA's 429: obeyed, then the search goes through
    first = poll(s, FDA_NOW)
    assert first.ok and first.warnings == []
    # TRAILNOVA's BLA (ORIG) and DARZALEX's efficacy supplement 85; not its labeling
    # supplement 84, its 2015 approval, nor the tentative approval ANDA219999
    assert (first.found, first.new, first.events, first.requests) == (2, 2, 2, 2)
    got = events(store_url)
    assert sorted(key for _, _, key in got) == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]
    assert all(q == "myeloma" and kind == "approval" for q, kind, _ in got)
    terms = hits(store_url)
    assert terms[("myeloma", "BLA761901:ORIG:1")] == ["aponermin"]
    assert terms[("myeloma", "BLA761036:SUPPL:85")] == ["daratumumab"]
    # the search sent: the first window reaches back lookback_days (30), "+" kept as "+"
    assert "20251228+TO+20260127" in fda.requests[-1].raw_query
    assert state(s, "fda-approvals").watermark == "2026-01-27"

    # the next day: the window overlaps by 60 days, the same approvals are seen again
    # and are neither stored again nor announced again
    second = poll(s, FDA_NOW + timedelta(days=1))
    assert (second.found, second.new, second.changed, second.events, second.requests) == (2, 0, 0, 0, 1)
    assert "20251128+TO+20260128" in fda.requests[-1].raw_query
    assert len(events(store_url)) == 2
    print(f"openfda requests per cycle: {second.requests} (one page of up to 1,000 applications; +1 per 429)")


def test_openfda_record_that_appears_days_after_its_date(tmp_path: Path, store_url: str, fda: FakeOpenFda) -> None:
    late = _apps()["BLA761901"]
    late["submissions"][0]["submission_status_date"] = "20260122"  # approved then, not yet in Drugs@FDA
    fda.applications = [a for a in fda.applications if a["application_number"] != "BLA761901"]
    s = settings(tmp_path, store_url, fda_feed(fda), MYELOMA_FDA, "myeloma")
    assert poll(s, FDA_NOW).events == 1  # DARZALEX's supplement only
    assert poll(s, FDA_NOW + timedelta(days=1)).events == 0
    fda.add(late)  # Drugs@FDA learns of it eight days after the decision
    found = poll(s, FDA_NOW + timedelta(days=3))
    assert (found.new, found.events) == (1, 1)
    assert "20251129+TO+20260130" in fda.requests[-1].raw_query  # from the last window's end (01-28) less 60 days
    again = poll(s, FDA_NOW + timedelta(days=4))  # seen again in the overlap: nothing new
    assert (again.found, again.new, again.events) == (2, 0, 0)
    assert [key for _, _, key in events(store_url)] == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]


def test_openfda_approval_listed_seven_weeks_after_its_date_is_found_once(
    tmp_path: Path, store_url: str, fda: FakeOpenFda
) -> None:
    """Drugs@FDA offers no date of listing: the window reaches 60 days back (#24)."""
    late = _apps()["BLA761901"]
    late["submissions"][0]["submission_status_date"] = "20251210"  # decided then, listed 7 weeks later
    fda.applications = [a for a in fda.applications if a["application_number"] != "BLA761901"]
    s = settings(tmp_path, store_url, fda_feed(fda), MYELOMA_FDA, "myeloma")
    assert poll(s, FDA_NOW).events == 1  # DARZALEX's supplement only
    fda.add(late)
    found = poll(s, FDA_NOW + timedelta(days=1))
    again = poll(s, FDA_NOW + timedelta(days=2))
    print(f"openfda approval listed 49 days late: events {found.events}, then {again.events}")
    assert (found.new, found.events) == (1, 1) and (again.new, again.events) == (0, 0)
    assert [key for _, _, key in events(store_url)] == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]


def test_openfda_record_without_an_openfda_block(tmp_path: Path, store_url: str, fda: FakeOpenFda) -> None:
    """BLA761460 (DECNUPAZ) has no `openfda` block: names come from products."""
    s = settings(tmp_path, store_url, fda_feed(fda), query("bpdcn", "fda-approvals", "pivekimab OR DECNUPAZ"), "bpdcn")
    result = poll(s, datetime(2026, 6, 1, 12, 0))
    assert result.ok and (result.found, result.events) == (1, 1)
    (ev,) = events(store_url)
    assert ev == ("bpdcn", "approval", "BLA761460:ORIG:1")
    assert hits(store_url)[("bpdcn", "BLA761460:ORIG:1")] == ["pivekimab", "DECNUPAZ"]
    store = Store(s.database)
    try:
        with store.transaction() as tx:
            rec = store.current(tx, "feed:fda-approvals", ["BLA761460:ORIG:1"])["BLA761460:ORIG:1"].record
    finally:
        store.close()
    assert rec.title == "FDA approval: DECNUPAZ (pivekimab sunirine-pvzy) — new application (BLA761460)"
    assert rec.sponsor == "ABBVIE INC" and rec.regulator == "FDA" and rec.reg_kind == "new application"
    assert (
        "approval letter",
        "https://www.accessdata.fda.gov/drugsatfda_docs/appletter/2026/761460Orig1s000ltr.pdf",
    ) in (rec.documents)


def test_openfda_query_added_later_sees_the_stored_entries(tmp_path: Path, store_url: str, fda: FakeOpenFda) -> None:
    """A query added to the config after its approvals left the window still gets them,
    from the feed's stored entries, with the next answer."""
    one = query("daratumumab", "fda-approvals", "daratumumab")
    s1 = settings(tmp_path, store_url, fda_feed(fda), one, "daratumumab")
    assert poll(s1, FDA_NOW).events == 1
    assert poll(s1, datetime(2026, 3, 20, 12, 0)).events == 0  # window 2025-11-29..03-20
    both = one + query("trail", "fda-approvals", "aponermin")
    s2 = settings(tmp_path, store_url, fda_feed(fda), both, "daratumumab, trail")
    later = poll(s2, datetime(2026, 4, 1, 12, 0))  # window 01-19..04-01: TRAILNOVA (01-15) is not in it
    assert "20260119+TO+20260401" in fda.requests[-1].raw_query
    assert later.events == 1
    assert ("trail", "BLA761901:ORIG:1") in {(q, k) for q, _, k in events(store_url)}
    assert poll(s2, datetime(2026, 4, 2, 12, 0)).events == 0


def test_openfda_budgets_are_kept_in_the_database(tmp_path: Path, store_url: str, fda: FakeOpenFda) -> None:
    """The day's count is shared by every process on the database: a day used up by
    others stops this poll before it sends anything; the watermark stays."""
    s = settings(tmp_path, store_url, fda_feed(fda), MYELOMA_FDA, "myeloma")
    assert poll(s, FDA_NOW).requests == 1
    host = fda.search_url.split("://", 1)[1].split("/", 1)[0]
    store = Store(s.database)
    try:
        day = DailyRequests(store, f"openfda-day:{host}:no-key", 1000)
        assert day.remaining(FDA_NOW) == 999
        day.spend(999, FDA_NOW)  # another process used the rest
    finally:
        store.close()
    sent = len(fda.requests)
    refused = poll(s, FDA_NOW + timedelta(hours=1))
    assert refused.error is not None and "daily limit of 1,000 requests is used up" in refused.error
    assert len(fda.requests) == sent and state(s, "fda-approvals").watermark == "2026-01-27"
    assert poll(s, FDA_NOW + timedelta(days=1)).ok  # a new UTC day


def test_openfda_last_request_of_the_day_goes_to_one_process_only(
    tmp_path: Path, store_url: str, fda: FakeOpenFda
) -> None:
    """Two processes on one database, one request left of the day: a request reserves
    its slot before it is sent, so the other, asking while the first is in flight, is
    refused without sending (before, both saw one left and both sent)."""
    import threading

    from litwatch.sources.openfda import OpenFdaClient, Window

    s = settings(tmp_path, store_url, fda_feed(fda), MYELOMA_FDA, "myeloma")
    stores = [Store(s.database), Store(s.database)]  # as two processes would have
    budgets = [DailyRequests(store, "openfda-day:test", 1000) for store in stores]
    budgets[0].spend(999, FDA_NOW)
    fda.delay = 1.0
    window = Window(FDA_NOW.date() - timedelta(days=14), FDA_NOW.date())
    outcomes: list[str] = []

    def fetch(budget: DailyRequests) -> None:
        with OpenFdaClient(url=fda.search_url, budget=budget) as client:
            try:
                client.fetch(window, now=FDA_NOW)
                outcomes.append("fetched")
            except SourceError as e:
                outcomes.append(str(e))

    try:
        first = threading.Thread(target=fetch, args=[budgets[0]])
        first.start()
        wait_for(lambda: fda.requests, 10, "the first request in flight")
        fetch(budgets[1])
        first.join(30)
        left = budgets[1].remaining(FDA_NOW)
    finally:
        for store in stores:
            store.close()
    print(f"\nlast request of the day, two processes: {len(fda.requests)} sent; {outcomes}; {left} left")
    assert len(fda.requests) == 1 and left == 0
    assert sorted(o == "fetched" for o in outcomes) == [False, True] and "used up" in "".join(outcomes)


# ---------------------------------------------------------------------------- ema


def _serve(host: FeedHost, doc: dict[str, Any] | bytes, etag: str) -> None:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    host.route(EMA_PATH, Reply(body=body, content_type=JSON, etag=etag))


def test_ema_positive_opinion_then_authorisation(tmp_path: Path, store_url: str, host: FeedHost) -> None:
    day1, day2 = _ema(), _ema()
    opinion = {
        "medicine_status": "Opinion",
        "opinion_status": "Positive",
        "opinion_adopted_date": "25/09/2026",
        "marketing_authorisation_date": "",
        "european_commission_decision_date": "",
        "last_updated_date": "01/10/2026",
    }
    _medicine(day1, "Pomalidomide Teva").update(opinion)
    authorised = opinion | {
        "medicine_status": "Authorised",
        "marketing_authorisation_date": "03/10/2026",
        "european_commission_decision_date": "03/10/2026",
        "last_updated_date": "04/10/2026",
    }
    _medicine(day2, "Pomalidomide Teva").update(authorised)
    s = settings(tmp_path, store_url, ema_feed(host), MYELOMA_EMA, "myeloma")
    _serve(host, day1, '"d1"')
    first = poll(s, EMA_NOW)
    assert first.ok and first.events == 1 and first.requests == 1
    _serve(host, day2, '"d2"')  # the next day's file
    second = poll(s, EMA_NOW + timedelta(days=1))
    assert second.ok and second.events == 1 and second.requests == 1
    unchanged = poll(s, EMA_NOW + timedelta(days=1, hours=6))
    assert (unchanged.events, unchanged.requests, unchanged.found) == (0, 1, 0)
    assert host.hits(EMA_PATH)[-1].headers["If-None-Match"] == '"d2"'
    got = events(store_url)
    assert [key for _, _, key in got] == ["EMEA/H/C/006302#chmp-opinion", "EMEA/H/C/006302#eu-authorisation"]
    assert [kind for _, kind, _ in got] == ["approval", "approval"]
    assert hits(store_url)[("myeloma", "EMEA/H/C/006302#eu-authorisation")] == ['"multiple myeloma"', "pomalidomide"]
    st = state(s, "ema-medicines")
    assert (st.etag, st.watermark, st.url) == ('"d2"', "2026-10-04", host.url(EMA_PATH))
    print(f"ema requests per cycle: {second.requests} (200) and {unchanged.requests} (304)")


def test_ema_itvisma_first_published_weeks_after_its_decisions_is_found_and_mailed_once(
    tmp_path: Path, store_url: str, host: FeedHost
) -> None:
    """The real Itvisma row: opinion 23/04/2026, authorisation 30/06/2026, first
    published 28/07/2026. The file of 27/07 has no Itvisma; the file of 29/07 has it;
    later files (the real one of 04/10) have it too (#24)."""
    real = _ema()
    itvisma = _medicine(real, "Itvisma")
    before = {"meta": real["meta"], "data": [dict(m) for m in real["data"] if m is not itvisma]}
    for m in before["data"]:
        m["last_updated_date"] = "27/07/2026"
    published = {"meta": real["meta"], "data": [*before["data"], dict(itvisma, last_updated_date="28/07/2026")]}
    s = settings(tmp_path, store_url, ema_feed(host, stale_days=400), query("sma", "ema-medicines", "itvisma"), "sma")
    outbox = tmp_path / "outbox"
    mailed: list[str] = []
    results = []
    for when, doc, etag in (
        (datetime(2026, 7, 27, 8), before, '"a"'),
        (datetime(2026, 7, 29, 8), published, '"b"'),
        (datetime(2026, 7, 30, 8), published, '"c"'),  # a new validator, the same rows
        (EMA_NOW, real, '"d"'),
    ):
        _serve(host, doc, etag)
        svc = Service(s, now=lambda when=when: when)
        try:
            results.append(poll(s, when))
            svc.digest()
        finally:
            svc.close()
        if outbox.exists():
            mailed += [p.read_text() for p in sorted(outbox.iterdir()) if p.read_text() not in mailed]
    print("itvisma: " + "; ".join(f"found {r.found}, new {r.new}, events {r.events}" for r in results))
    assert [r.events for r in results] == [0, 2, 0, 0]
    assert len(mailed) == 1 and mailed[0].count("Itvisma") >= 2, mailed
    assert [key for _, _, key in events(store_url)] == [
        "EMEA/H/C/006498#chmp-opinion",
        "EMEA/H/C/006498#eu-authorisation",
    ]


def test_ema_304_parses_nothing_and_a_query_added_later_catches_up(
    tmp_path: Path, store_url: str, host: FeedHost
) -> None:
    doc = _ema()
    _medicine(doc, "Pomalidomide Teva").update({"marketing_authorisation_date": "20/09/2026"})
    _serve(host, doc, '"v1"')
    one = query("tafamidis", "ema-medicines", "tafamidis")
    s1 = settings(tmp_path, store_url, ema_feed(host), one, "tafamidis")
    assert poll(s1, EMA_NOW).events == 1
    # the same validator now serves bytes that are not JSON: a 304 never reads them
    _serve(host, b"{ this is not json", '"v1"')
    s2 = settings(tmp_path, store_url, ema_feed(host), one + MYELOMA_EMA, "tafamidis, myeloma")
    after = poll(s2, EMA_NOW + timedelta(hours=6))
    assert after.ok and (after.requests, after.found, after.events) == (1, 0, 1)
    assert host.hits(EMA_PATH)[-1].headers["If-None-Match"] == '"v1"'
    assert ("myeloma", "EMEA/H/C/006302#eu-authorisation") in {(q, k) for q, _, k in events(store_url)}
    assert poll(s2, EMA_NOW + timedelta(hours=12)).events == 0


def test_ema_renamed_field_is_a_warning_not_a_crash(tmp_path: Path, store_url: str, host: FeedHost) -> None:
    doc = _ema()
    for m in doc["data"]:
        m["therapeutic_area_mesh_terms"] = m.pop("therapeutic_area_mesh")
    _medicine(doc, "Pomalidomide Teva").update({"marketing_authorisation_date": "20/09/2026"})
    _serve(host, doc, '"r1"')
    result = poll(s := settings(tmp_path, store_url, ema_feed(host), MYELOMA_EMA, "myeloma"), EMA_NOW)
    assert result.ok, result.error
    text = " ".join(result.warnings)
    assert "therapeutic_area_mesh_terms" in text and "therapeutic_area_mesh (in 6 of 6)" in text
    assert result.events == 1  # matched by its substance; the area is lost, not the medicine
    assert "warnings" in result.line()
    assert state(s, "ema-medicines").failing_since is None


def test_ema_stale_file_in_status_and_for_the_digest(tmp_path: Path, store_url: str, host: FeedHost) -> None:
    _serve(host, _ema(), '"s1"')  # newest last_updated_date 02/10/2026
    s = settings(tmp_path, store_url, ema_feed(host, stale_days=14), MYELOMA_EMA, "myeloma")
    assert poll(s, EMA_NOW).warnings == []
    late = datetime(2026, 10, 30, 8, 0)
    svc = Service(s, now=lambda: late)
    fresh = Service(s, now=lambda: EMA_NOW)
    try:
        (feed,) = svc.status()["feeds"]
        assert feed["stale"] is not None and "newest last_updated_date is 2026-10-02, 28 days" in feed["stale"]
        assert "    stale: the EMA medicines file looks stale" in format_status(svc.status())
        assert json.loads(json.dumps(svc.status()))["feeds"][0]["stale"] == feed["stale"]  # --json
        with svc.store.transaction() as tx:
            assert svc.stale_sources(tx, s.digests[0]) == [{"name": "ema-medicines", "note": feed["stale"]}]
        assert fresh.status()["feeds"][0]["stale"] is None
        with fresh.store.transaction() as tx:
            assert fresh.stale_sources(tx, s.digests[0]) == []
    finally:
        svc.close()
        fresh.close()
    # a 304 weeks later is still judged on the stored date, and says so
    after = poll(s, late)
    assert after.ok and any("looks stale" in w for w in after.warnings)


def test_ema_malformed_json_fails_the_feed_and_the_next_poll_recovers(
    tmp_path: Path, store_url: str, host: FeedHost
) -> None:
    doc = _ema()
    s = settings(tmp_path, store_url, ema_feed(host), MYELOMA_EMA, "myeloma")
    _serve(host, doc, '"m1"')
    assert poll(s, EMA_NOW).ok
    before = state(s, "ema-medicines")
    cut = json.dumps(doc).encode()[:5000]  # a file cut off half way
    _serve(host, cut, '"m2"')
    failed = poll(s, EMA_NOW + timedelta(days=1))
    assert failed.error is not None and "not valid JSON" in failed.error
    after = state(s, "ema-medicines")
    assert (after.watermark, after.etag, after.last_ok) == (before.watermark, before.etag, before.last_ok)
    assert after.failing_since is not None
    fixed = copy.deepcopy(doc)
    _medicine(fixed, "Pomalidomide Teva").update(
        {"marketing_authorisation_date": "04/10/2026", "last_updated_date": "05/10/2026"}
    )
    _serve(host, fixed, '"m3"')
    recovered = poll(s, EMA_NOW + timedelta(days=2))
    assert recovered.ok and recovered.events == 1
    assert host.hits(EMA_PATH)[-1].headers["If-None-Match"] == '"m1"'  # the failed answer's validator was not kept
    now = state(s, "ema-medicines")
    assert (now.watermark, now.etag, now.failing_since) == ("2026-10-05", '"m3"', None)


def test_ema_withdrawal_is_an_update(tmp_path: Path, store_url: str, host: FeedHost) -> None:
    doc = _ema()
    _medicine(doc, "Pomalidomide Teva").update(
        {
            "medicine_status": "Withdrawn",
            "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date": "30/09/2026",
        }
    )
    _serve(host, doc, '"w1"')
    s = settings(tmp_path, store_url, ema_feed(host), MYELOMA_EMA, "myeloma")
    assert poll(s, EMA_NOW).events == 1
    assert events(store_url) == [("myeloma", "update", "EMEA/H/C/006302#withdrawal")]


# ---------------------------------------------------------------------------- the digest


def test_digest_shows_both_regulators_approvals_and_the_stale_file(
    tmp_path: Path, store_url: str, fda: FakeOpenFda, host: FeedHost
) -> None:
    """Both kinds feeding one query's digest: the FDA approvals and the EU opinion in the
    approvals section, each once, with the terms that matched; a stale EMA file in the
    footer (`Service.stale_sources`)."""
    doc = _ema()
    _medicine(doc, "Pomalidomide Teva").update(
        {"medicine_status": "Opinion", "opinion_adopted_date": "25/09/2026", "marketing_authorisation_date": ""}
    )
    _serve(host, doc, '"e1"')
    feeds = fda_feed(fda) + ema_feed(host, stale_days=14)
    q = query("myeloma", "fda-approvals, ema-medicines", "myeloma OR aponermin OR daratumumab OR pomalidomide")
    s = settings(tmp_path, store_url, feeds, q, "myeloma", backfill="365d")
    for now in (FDA_NOW, EMA_NOW):  # each feed's data is of its own day
        svc = Service(s, now=lambda now=now: now)
        try:
            assert all(r.ok for r in svc.poll(wait=0))
        finally:
            svc.close()
    svc = Service(s, now=lambda: datetime(2026, 10, 30, 8, 0))
    try:
        (res,) = svc.digest(dry_run=True)
    finally:
        svc.close()
    text = res.text
    approvals = text.split("Sources stale")[0]
    for title in (
        "FDA approval: TRAILNOVA (aponermin)",
        "FDA approval: DARZALEX (daratumumab)",
        "Positive CHMP opinion: Pomalidomide Teva (pomalidomide)",
    ):
        assert approvals.count(title) == 1, (title, text)
    assert "Sources stale" in text and "ema-medicines" in text.split("Sources stale")[1]
    assert "newest last_updated_date is 2026-10-02" in " ".join(text.split())  # (the text part wraps lines)
