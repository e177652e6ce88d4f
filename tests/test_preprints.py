"""Preprints from bioRxiv and medRxiv (issue 27), end to end through the command line
(`litwatch poll`, `litwatch digest`, file transport) against the local api.biorxiv.org
(helpers/fake_biorxiv.py) and E-utilities, on SQLite and PostgreSQL.

A matching preprint is mailed once as new; its v2 is an update only if v1 was mailed;
its journal version announced by `pubs` is an update on the preprint, and the PubMed
record of that article arriving later is not mailed as new; a withdrawal of a mailed
preprint is an alert ("Withdrawn"); a non-matching preprint is silent; a category
filter is honoured; 429 and 5xx are survived."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from helpers.cli import invoke
from helpers.config import write_config
from helpers.days import fetched_yesterday
from helpers.fake_biorxiv import FakeBiorxiv
from helpers.fake_eutils import FakeEutils

TODAY = datetime.now(UTC).date()  # the preprint servers' days
EASTERN_TODAY = datetime.now(ZoneInfo("America/New_York")).date()  # PubMed's
P1 = "10.1101/2026.11.30.26300001"  # matches, mailed, then v2, then published in Blood
P2 = "10.1101/2026.11.30.26300002"  # matches nothing
P3 = "10.1101/2026.11.30.26300003"  # would match, but in a category the feed does not watch
P4 = "10.1101/2026.11.30.26300004"  # matches, mailed, then withdrawn
P5 = "10.1101/2026.11.30.26300005"  # matches nothing, then a v2 that matches nothing either
JOURNAL_DOI = "10.1182/blood.2026000001"


@pytest.fixture
def api() -> Iterator[FakeBiorxiv]:
    with FakeBiorxiv() as fake:
        yield fake


def config(tmp_path: Path, store_url: str, api: FakeBiorxiv, eutils: FakeEutils) -> Path:
    return write_config(
        tmp_path,
        f"""
database: "{store_url}"
pubmed:
  base_url: {eutils.url}
  email: test@example.org
  backoff: 0.05
  retries: 3
  timeout: 5
mail:
  transport: file
  directory: {tmp_path / "outbox"}
  from: "litwatch <litwatch@example.org>"
feeds:
  - name: medrxiv-oncology
    kind: medrxiv
    url: {api.base}
    categories: [oncology, hematology]
    lookback_days: 10
    retries: 3
    backoff: 0
    timeout: 10
queries:
  - name: myeloma
    pubmed: multiple myeloma
    feeds: [medrxiv-oncology]
    match: 'myeloma OR TRAIL'
digests:
  - name: d
    to: [team@example.org]
    queries: [myeloma]
""",
    )


def mails(tmp_path: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted((tmp_path / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        body = msg.get_body(("plain",))
        assert body is not None
        out.append((str(msg["Subject"]), body.get_content()))
    return out


def run(cfg: Path, *args: str) -> str:
    r = invoke("--config", str(cfg), *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_preprints_end_to_end(tmp_path: Path, store_url: str, api: FakeBiorxiv, eutils: FakeEutils) -> None:
    cfg = config(tmp_path, store_url, api, eutils)
    two_days_ago = TODAY - timedelta(days=2)
    api.post("medrxiv", doi=P1, title="Daratumumab retreatment in multiple myeloma", date=two_days_ago)
    api.post("medrxiv", doi=P2, title="Lung cancer screening uptake", date=two_days_ago)
    api.post(
        "medrxiv",
        doi=P3,
        title="Myeloma and the heart",
        date=two_days_ago,
        category="cardiovascular medicine",
    )
    api.post("medrxiv", doi=P4, title="A TRAIL agonist in relapsed lymphoma", date=two_days_ago, category="hematology")
    api.post("medrxiv", doi=P5, title="A cohort study of screening", date=two_days_ago)
    # the first requests are refused: a 429, then a 503; the poll goes on
    api.throttle(1)
    api.fail(1, 503)

    out = run(cfg, "poll")
    print(out)
    assert "medrxiv-oncology [feed:medrxiv-oncology]: found 4, new 4" in out  # P1, P2, P4, P5; not P3
    first_requests = len(api.requests)
    run(cfg, "digest")
    (subject, text), *_ = mails(tmp_path)
    print(subject, text, sep="\n")
    assert subject == "d: 2 new papers"
    assert "Daratumumab retreatment in multiple myeloma" in text and "A TRAIL agonist" in text
    assert "Lung cancer" not in text and "the heart" not in text and "cohort study" not in text
    lines = [line.strip() for line in text.splitlines()]
    assert f"medrxiv-oncology: https://www.medrxiv.org/content/{P1}" in lines and f"https://doi.org/{P1}" in text

    # the next day's news: P1 v2, and its journal version; P4 withdrawn; P5 v2 (never mailed)
    api.post(
        "medrxiv",
        doi=P1,
        title="Daratumumab retreatment in relapsed multiple myeloma",
        date=TODAY,
        version="2",
    )
    api.publish("medrxiv", P1, JOURNAL_DOI, "Blood", TODAY)
    api.withdraw("medrxiv", doi=P4, title="A TRAIL agonist in relapsed lymphoma", date=TODAY, version="2")
    api.post("medrxiv", doi=P5, title="A cohort study of screening, revised", date=TODAY, version="2")
    before = len(api.requests)
    out = run(cfg, "poll")
    print(out)
    cycle = len(api.requests) - before
    run(cfg, "digest")
    assert len(mails(tmp_path)) == 2
    subject, text = mails(tmp_path)[1]
    print(subject, text, sep="\n")
    assert subject == "d: 1 retraction, 1 update"
    flat = " ".join(text.split())
    assert "[Withdrawn — medRxiv] WITHDRAWN: A TRAIL agonist" in flat
    assert "new version v2" in flat and f"https://www.medrxiv.org/content/{P1}v2" in flat
    assert "published in Blood" in flat and f"https://doi.org/{JOURNAL_DOI}" in flat
    assert "+ Daratumumab retreatment in relapsed multiple myeloma" in flat  # the diff of v2
    assert "cohort study" not in flat
    history = run(cfg, "history", P1)
    print(history)
    assert f"DOI {JOURNAL_DOI}, issued {TODAY}" in history and "medRxiv (new_version)" in history
    assert "Daratumumab retreatment in relapsed multiple myeloma" in history  # v2, with its diff

    # the journal article reaches PubMed: the same work, not a new paper; another paper is
    eutils.add(
        "41000001", terms="multiple myeloma", edat=EASTERN_TODAY, title="Daratumumab retreatment", doi=JOURNAL_DOI
    )
    eutils.add(
        "41000002", terms="multiple myeloma", edat=EASTERN_TODAY, title="Another myeloma paper", doi="10.1/other"
    )
    out = run(cfg, "poll")
    print(out)
    run(cfg, "digest")
    assert len(mails(tmp_path)) == 3
    subject, text = mails(tmp_path)[2]
    print(subject, text, sep="\n")
    assert subject == "d: 1 new paper"
    assert "Another myeloma paper" in text and "41000001" not in text

    # nothing more: a quiet cycle sends nothing
    run(cfg, "poll")
    run(cfg, "digest")
    assert len(mails(tmp_path)) == 3

    # the journal article's own erratum is news to the query that had its preprint
    eutils.change(
        "41000001",
        mdat=EASTERN_TODAY,
        title="Daratumumab retreatment",
        doi=JOURNAL_DOI,
        links=(("ErratumIn", "41000003"),),
    )
    fetched_yesterday(store_url)  # the erratum comes after the day of the fetch (#28)
    run(cfg, "poll")
    run(cfg, "digest")
    assert len(mails(tmp_path)) == 4
    subject, text = mails(tmp_path)[3]
    print(subject, text, sep="\n")
    assert subject == "d: 1 erratum" and "Daratumumab retreatment" in text
    ua = api.requests[-1].headers.get("User-Agent", "")
    assert "mailto:test@example.org" in ua
    # the pace is reserved in the database, shared by every process (1 request/s per API host)
    eng = sa.create_engine(store_url)
    try:
        with eng.connect() as c:
            budgets = {row[0] for row in c.execute(sa.text("SELECT name FROM request_budget"))}
    finally:
        eng.dispose()
    assert f"preprints:127.0.0.1:{api.port}" in budgets
    print(f"first poll: {first_requests} requests (1 refused with 429, 1 with 503); a daily cycle: {cycle}")


def test_unknown_category_is_a_config_error(tmp_path: Path, api: FakeBiorxiv) -> None:
    cfg = write_config(
        tmp_path,
        f"""
feeds:
  - name: b
    kind: biorxiv
    url: {api.base}
    categories: [cancer-biology, oncology]
queries:
  - name: q
    feeds: [b]
    match: myeloma
""",
    )
    r = invoke("--config", str(cfg), "check")
    assert r.returncode == 2
    assert "'oncology' is not a biorxiv category" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_online_counts_the_last_weeks_preprints_per_query(
    tmp_path: Path, api: FakeBiorxiv, eutils: FakeEutils
) -> None:
    cfg = config(tmp_path, f"sqlite:///{tmp_path / 'never.db'}", api, eutils)
    for i, title in enumerate(["Myeloma one", "Myeloma two", "TRAIL in myeloma", "Myeloma four", "Asthma"]):
        api.post("medrxiv", doi=f"10.1101/2026.12.0{i}.1", title=title, date=TODAY - timedelta(days=i))
    api.post("medrxiv", doi="10.1101/2026.10.01.1", title="Myeloma, old", date=TODAY - timedelta(days=30))
    api.post(
        "medrxiv", doi="10.1101/2026.12.01.9", title="Myeloma, wrong category", date=TODAY, category="epidemiology"
    )
    r = invoke("--config", str(cfg), "check", "--online")
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert "feed medrxiv-oncology: answers, 5 preprints in the last 7 days; myeloma matches 4" in r.stdout
    lines = [line.strip() for line in r.stdout.splitlines() if line.startswith("  myeloma: ")]
    assert lines == [
        f"myeloma: {TODAY} Myeloma one",
        f"myeloma: {TODAY - timedelta(days=1)} Myeloma two",
        f"myeloma: {TODAY - timedelta(days=2)} TRAIL in myeloma",
    ]
    assert not (tmp_path / "never.db").exists()  # stores nothing

    api.fail(10, 503)
    r = invoke("--config", str(cfg), "check", "--online")
    assert r.returncode == 1 and "feed medrxiv-oncology: does not answer: HTTP 503" in r.stdout, r.stdout


def test_preprint_changes_are_classified_as_versions_withdrawals_or_nothing() -> None:
    """events.classify_change on preprint records (pure): a new version is an update shown
    as a newer version, a withdrawal a retraction shown as "Withdrawn", the journal DOI
    alone no event here (the server's notice makes it), and a withdrawn one stays quiet."""
    from dataclasses import replace

    from litwatch import events as ev
    from litwatch.records import Record

    v1 = Record("feed:m", P1, title="T", doi=P1, server="medRxiv", preprint_version="1", url=f"https://x/content/{P1}")
    v2 = replace(v1, title="T revised", preprint_version="2", pub_date="2026-12-08")
    (e,) = ev.classify_change(v1, v2, ev.diff(v1, v2), 2)
    assert (e.kind, e.dedup) == ("update", f"preprint:feed:m:{P1}:v2")
    assert e.detail["newer"][0]["title"] == "new version v2, posted 2026-12-08"
    assert e.detail["newer"][0]["url"] == f"https://x/content/{P1}v2" and e.detail["changes"][0][0] == "title"
    gone = replace(v2, title="WITHDRAWN: T revised", pub_status="withdrawn", preprint_version="3")
    (w,) = ev.classify_change(v2, gone, ev.diff(v2, gone), 3)
    assert (w.kind, w.dedup, w.detail["label"], w.detail["sources"]) == (
        "retraction",
        f"withdrawn:feed:m:{P1}",
        "Withdrawn",
        ["medRxiv"],
    )
    published = replace(v2, published_doi=JOURNAL_DOI, published_journal="Blood")
    assert ev.classify_change(v2, published, ev.diff(v2, published), 3) == []
    assert "published in Blood" in ev.flags(published)
    assert ev.classify_change(gone, replace(gone, preprint_version="4"), [], 4) == []
