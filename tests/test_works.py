"""One work, one alert (issue 25): the same paper or approval reached through several
sources is mailed once, across digest runs — `Service.poll()` and `Service.digest()`
against the fake E-utilities, a feed host, the fake Crossref and the fake openFDA, on
SQLite and PostgreSQL, with an injected clock.

The three cases of the issue: a journal feed's paper that PubMed indexes days later;
a retraction PubMed links and Retraction Watch reports a week later through Crossref
(the paper stored from a feed and from PubMed); an FDA press release and the Drugs@FDA
listing days after it. Also: an erratum from two sources, a second erratum (another
notice) still mailed, and two records of one DOI with clearly different titles kept
apart and shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import TODAY
from helpers.fake_crossref import FakeCrossref
from helpers.fake_eutils import FakeEutils
from helpers.fake_openfda import FakeOpenFda
from helpers.feedhost import FeedHost
from litwatch.records import Record, normalise_doi, work_idents
from litwatch.works import title_clash
from test_changes import NOTICE_TERM
from test_example_approvals import EMPTY_RSS, press_feed, trailnova
from test_polls_crossref import RETRACTED, RETRACTION, WORKS, Run, config, pubmed_retracts

TITLE = "Chitosan hydrogel bandages with TRAIL"


def journal_feed(*items: tuple[str, str, str]) -> bytes:
    """An RSS feed of (guid, title, DOI) items, the DOI as prism:doi."""
    body = "".join(
        f"<item><title>{title}</title><link>https://journal.example.org/{guid}</link><guid>{guid}</guid>"
        f"<prism:doi>{doi}</prism:doi><description>A TRAIL chitosan study.</description>"
        "<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
        for guid, title, doi in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel><title>ACS AMI</title>'
        f"<link>https://journal.example.org/</link><description>toc</description>{body}</channel></rss>"
    ).encode()


QUERIES = """
queries:
  - name: trail
    pubmed: TRAIL
    feeds: [journal]
    match: TRAIL
"""
DIGESTS = """
digests:
  - name: d
    to: [a@example.org]
    queries: [trail]
"""


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    fake = FakeCrossref().start()
    yield fake
    fake.stop()


@pytest.fixture
def host() -> Iterator[FeedHost]:
    with FeedHost() as h:
        yield h


@pytest.fixture
def run(tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, host: FeedHost, store_url: str) -> Iterator[Run]:
    host.feed("/journal.xml", journal_feed(("ami-1", TITLE, RETRACTED.upper())))
    extra = f"feeds:\n  - name: journal\n    url: {host.url('/journal.xml')}\n"
    r = Run(config(tmp_path, eutils, crossref, store_url, queries=QUERIES, digests=DIGESTS, extra=extra), tmp_path)
    yield r
    r.close()


def pubmed_indexes(eutils: FakeEutils, run: Run, day: int, **fields: object) -> None:
    base: dict[str, object] = {"title": TITLE, "doi": RETRACTED.upper()}
    eutils.add("22334455", terms={"TRAIL"}, edat=run.clock.day(day), **{**base, **fields})


def subjects(mail: list[tuple[str, str]]) -> list[str]:
    return [s for s, _ in mail]


# ------------------------------------------------------------------------ the three cases


def test_a_feed_paper_indexed_by_pubmed_days_later_is_mailed_once(run: Run, eutils: FakeEutils) -> None:
    run.poll(0)
    first = run.mail()
    assert subjects(first) == ["d: 1 new paper"]
    assert "https://journal.example.org/ami-1" in first[0][1]
    pubmed_indexes(eutils, run, 3)
    run.poll(3)
    (digest,) = run.svc.status()["digests"]
    assert digest["pending_events"] == 0  # nothing to tell
    assert run.mail() == []  # the PubMed record of the same paper: its link added, no second alert
    run.poll(4)
    assert run.mail() == []
    with run.svc.store.transaction() as tx:
        found = run.svc.store.find_records(tx, RETRACTED)
        works = run.svc.store.works_of(tx, [rid for rid, _, _ in found])
    assert sorted(src for _, src, _ in found) == ["feed:journal", "pubmed"]
    assert len(set(works.values())) == 1  # one work


def test_a_retraction_from_pubmed_then_retraction_watch_is_mailed_once(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    pubmed_indexes(eutils, run, 0)
    run.poll(0)
    assert subjects(run.mail()) == ["d: 1 new paper"]  # the feed item and the PubMed record: one line
    pubmed_retracts(eutils, run.clock.day(1))
    run.poll(1)
    mail = run.mail()
    assert subjects(mail) == ["d: 1 retraction"]
    assert "[Retraction — PubMed]" in " ".join(mail[0][1].split())
    # a week later Retraction Watch's entry reaches Crossref: it names the DOI that both
    # the feed item and the PubMed record carry
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(8))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(8))
    run.poll(8)
    assert run.mail() == []
    run.poll(9)
    assert run.mail() == []
    reports = [(r.source, r.dedup) for rec in run.svc.history(RETRACTED) for r in rec["notices"]]
    assert {s for s, _ in reports} == {"pubmed", "retraction-watch"}  # history names both sources
    assert {d for _, d in reports} == {"retraction:pubmed:22334455"}  # ... of one event
    # looked up by PMID: Retraction Watch's report (stored about the feed item of the same paper) too
    (by_pmid,) = run.svc.history("22334455")
    assert {r.source for r in by_pmid["notices"]} == {"pubmed", "retraction-watch"}
    assert by_pmid["work"] == ["feed:journal ami-1"]


def test_a_retraction_watch_report_before_the_digest_is_another_link_on_its_line(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    pubmed_indexes(eutils, run, 0)
    run.poll(0)
    run.mail()
    pubmed_retracts(eutils, run.clock.day(1))
    run.poll(1)
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(2))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(2))
    run.poll(2)
    mail = run.mail()
    assert subjects(mail) == ["d: 1 retraction"]
    text = " ".join(mail[0][1].split())
    assert "[Retraction — PubMed, Retraction Watch]" in text
    assert run.mail() == []


@pytest.fixture
def fda() -> Iterator[FakeOpenFda]:
    with FakeOpenFda([]) as f:
        yield f


def test_an_fda_press_release_then_the_drugs_at_fda_listing_is_one_approval(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, host: FeedHost, fda: FakeOpenFda, store_url: str
) -> None:
    approved = TODAY
    host.feed("/press.xml", press_feed(approved))
    queries = "queries:\n  - name: trail\n    feeds: [fda-press, fda-approvals]\n    match: aponermin OR TRAILNOVA\n"
    extra = (
        f"feeds:\n  - name: fda-press\n    url: {host.url('/press.xml')}\n    approvals: true\n"
        f"  - name: fda-approvals\n    kind: openfda\n    url: {fda.search_url}\n    retries: 2\n    backoff: 0\n"
    )
    run = Run(config(tmp_path, eutils, crossref, store_url, queries=queries, digests=DIGESTS, extra=extra), tmp_path)
    try:
        run.poll(0)
        first = run.mail()
        assert subjects(first) == ["d: 1 approval"]
        assert "fda-approves-aponermin" in first[0][1]
        # Drugs@FDA lists the approval four days later
        fda.add(trailnova(approved))
        run.poll(4)
        with run.svc.store.transaction() as tx:
            listed = run.svc.store.find_records(tx, "BLA761901:ORIG:1")
        assert run.mail() == []  # its links are added to the approval already mailed, silently
        run.poll(5)
        assert run.mail() == []
        with run.svc.store.transaction() as tx:
            stored = run.svc.store.approval_candidates(tx, run.clock() - timedelta(days=30))
        assert len({c.work_id for c in stored}) == 1, stored  # one decision
        assert any(c.record.regulator == "FDA" for c in stored), (listed, stored)
    finally:
        run.close()


def test_a_drugs_at_fda_listing_then_the_press_release_is_one_approval(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, host: FeedHost, fda: FakeOpenFda, store_url: str
) -> None:
    approved = TODAY
    host.feed("/press.xml", EMPTY_RSS)
    fda.add(trailnova(approved))
    queries = "queries:\n  - name: trail\n    feeds: [fda-press, fda-approvals]\n    match: aponermin OR TRAILNOVA\n"
    extra = (
        f"feeds:\n  - name: fda-press\n    url: {host.url('/press.xml')}\n    approvals: true\n"
        f"  - name: fda-approvals\n    kind: openfda\n    url: {fda.search_url}\n    retries: 2\n    backoff: 0\n"
    )
    run = Run(config(tmp_path, eutils, crossref, store_url, queries=queries, digests=DIGESTS, extra=extra), tmp_path)
    try:
        run.poll(1)
        first = run.mail()
        assert subjects(first) == ["d: 1 approval"]
        assert "BLA761901" in first[0][1]
        host.feed("/press.xml", press_feed(approved))  # the FDA's press release, two days later
        run.poll(3)
        assert run.mail() == []
        found = run.svc.history("https://www.fda.gov/news-events/press-announcements/fda-approves-aponermin")
        assert any("BLA761901" in other for other in found[0]["work"]), found
    finally:
        run.close()


# ------------------------------------------------------------------------ more of the same work


def test_a_second_erratum_is_news_the_same_one_from_crossref_is_not(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    corrected = "10.1088/1361-6595/aaebdb"
    correction = "10.1088/1361-6595/ab245f"
    title = "Mechanisms responsible for the initiation of a fast breakdown in a TRAIL of atmospheric discharge"
    eutils.add("30000001", terms={"TRAIL"}, edat=run.clock.day(0), title=title, doi=corrected)
    run.poll(0)
    assert subjects(run.mail()) == ["d: 2 new papers"]  # this one and the journal's
    # PubMed links the publisher's correction (its notice record carries the DOI)
    eutils.change("30000001", mdat=run.clock.day(1), title=title, doi=corrected, links=(("ErratumIn", "30000002"),))
    eutils.records["30000001"].terms = {"TRAIL"}
    eutils.add(
        "30000002",
        terms=NOTICE_TERM,
        edat=run.clock.day(1),
        title=f"Correction: {title}",
        doi=correction,
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "30000001"),),
    )
    run.poll(1)
    assert subjects(run.mail()) == ["d: 1 erratum"]
    crossref.add(WORKS[correction], indexed=run.clock.day(8))  # the correction names the paper (update-to)
    run.poll(8)
    assert run.mail() == []  # the same correction, from the publisher
    # a second erratum, another notice: news
    eutils.change(
        "30000001",
        mdat=run.clock.day(20),
        title=title,
        doi=corrected,
        links=(("ErratumIn", "30000002"), ("ErratumIn", "30000003")),
    )
    eutils.records["30000001"].terms = {"TRAIL"}
    run.poll(20)
    assert subjects(run.mail()) == ["d: 1 erratum"]


def test_one_doi_with_two_different_titles_is_not_joined_and_is_shown(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, host: FeedHost, store_url: str
) -> None:
    host.feed("/journal.xml", journal_feed(("ami-1", TITLE, RETRACTED)))
    extra = f"feeds:\n  - name: journal\n    url: {host.url('/journal.xml')}\n"
    run = Run(config(tmp_path, eutils, crossref, store_url, queries=QUERIES, digests=DIGESTS, extra=extra), tmp_path)
    try:
        run.poll(0)
        assert subjects(run.mail()) == ["d: 1 new paper"]
        # PubMed's record carries the same DOI by a publisher's error: another paper
        eutils.add(
            "22334466",
            terms={"TRAIL"},
            edat=run.clock.day(2),
            title="Death receptor 5 agonism in pancreatic cancer xenografts",
            doi=RETRACTED,
        )
        run.poll(2)
        mail = run.mail()
        assert subjects(mail) == ["d: 1 new paper"]  # a paper of its own: mailed
        assert "Death receptor 5 agonism" in mail[0][1]
        found = run.svc.history("22334466")
        assert found[0]["doubts"], found
        (doubt,) = found[0]["doubts"]
        assert "ami-1" in doubt and RETRACTED in doubt
        status = run.svc.status()
        assert any(RETRACTED in line for line in status.get("work_doubts", [])), status
        from litwatch.report import format_history, format_status

        shown = format_status(status)
        print("\n" + shown + format_history(found))
        assert "record(s) not joined by a DOI they share" in shown and "pubmed 22334466" in shown
        assert "not joined: pubmed 22334466 carries DOI" in format_history(found)
    finally:
        run.close()


def test_a_record_that_reveals_a_join_later_merges_two_works(
    run: Run, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    """PubMed first has the paper without its DOI (two works: the feed item's, the PubMed
    record's); when PubMed adds the DOI the works merge, and a retraction reported by
    Crossref for the DOI is one alert, not one per record."""
    pubmed_indexes(eutils, run, 0, doi="")
    run.poll(0)
    assert subjects(run.mail()) == ["d: 2 new papers"]  # not known to be one paper yet
    with run.svc.store.transaction() as tx:
        ((feed_id, _, _),) = run.svc.store.find_records(tx, "ami-1")
        ((pubmed_id, _, _),) = run.svc.store.find_records(tx, "22334455")
        before = run.svc.store.works_of(tx, [feed_id, pubmed_id])
    assert before[feed_id] != before[pubmed_id]
    eutils.change("22334455", mdat=run.clock.day(2), title=TITLE, doi=RETRACTED.upper())
    eutils.records["22334455"].terms = {"TRAIL"}
    run.poll(2)
    run.mail()  # (the DOI added is an update of the PubMed record)
    with run.svc.store.transaction() as tx:
        after = run.svc.store.works_of(tx, [feed_id, pubmed_id])
    assert after[feed_id] == after[pubmed_id] == min(before.values())
    crossref.add(WORKS[RETRACTED], indexed=run.clock.day(3))
    crossref.add(WORKS[RETRACTION], indexed=run.clock.day(3))
    run.poll(3)
    mail = run.mail()
    assert subjects(mail) == ["d: 1 retraction"]  # one work, one retraction (the feed item's and PubMed's)
    text = " ".join(mail[0][1].split())
    assert text.count("[Retraction — Retraction Watch]") == 1
    assert "https://pubmed.ncbi.nlm.nih.gov/22334455/" in text and "https://journal.example.org/ami-1" in text
    run.poll(4)
    assert run.mail() == []


# ------------------------------------------------------------------------ pure parts


def test_work_idents() -> None:
    paper = Record(source="pubmed", key="123", doi="https://doi.org/10.1/ABC", pmcid="PMC9")
    assert work_idents(paper) == ("doi:10.1/abc", "pmid:123", "pmcid:PMC9")
    item = Record(source="feed:j", key="x", doi=" doi:10.1/Abc ")
    assert work_idents(item) == ("doi:10.1/abc",)
    reg = Record(source="feed:fda", key="BLA761901:ORIG:1", regulator="FDA", doi="10.1/x")
    assert work_idents(reg) == ("reg:FDA:BLA761901:ORIG:1",)
    assert normalise_doi("HTTPS://DX.DOI.ORG/10.1/A") == "10.1/a"
    # PubMed's and PMC's own feeds name the record by link or guid
    rss = Record(source="feed:pubmed-rss", key="pubmed:41000011", url="https://pubmed.ncbi.nlm.nih.gov/41000011/")
    assert work_idents(rss) == ("pmid:41000011",)
    pmc = Record(source="feed:pmc", key="x", url="https://pmc.ncbi.nlm.nih.gov/articles/PMC1234567/")
    assert work_idents(pmc) == ("pmcid:PMC1234567",)


def test_title_clash() -> None:
    assert not title_clash(TITLE, f"[ASAP] {TITLE}")
    assert not title_clash(TITLE, "Chitosan hydrogel bandage with TRAIL.")
    assert not title_clash("", TITLE)
    assert title_clash(TITLE, "Death receptor 5 agonism in pancreatic cancer xenografts")


# ------------------------------------------------------------------------ the upgrade


def _at_0007(store_url: str) -> None:
    """A database at the schema before works (0007), as a litwatch of then left it: the
    paper from a journal feed and the FDA press release were mailed; the same paper's
    PubMed record, the same retraction learnt again from Retraction Watch (on the feed
    item) and the Drugs@FDA listing of the approval wait; so does one paper nobody heard of."""
    from importlib import resources

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from litwatch import events as ev
    from litwatch.records import Record
    from litwatch.store.keys import dumps

    def rec(rid: int, r: Record) -> dict[str, object]:
        from litwatch.store.keys import key_hash

        return {
            "id": rid,
            "source": r.source,
            "key": r.key,
            "key_hash": key_hash(r.key),
            "doi": r.doi.lower() or None,
            "h": ev.fingerprint(r),
            "fields": dumps(r.fields()),
        }

    day = "2026-11-02 08:00:00"
    records = [
        rec(1, Record(source="feed:journal", key="ami-1", title=TITLE, doi=RETRACTED, url="https://j.example.org/1")),
        rec(2, Record(source="pubmed", key="22334455", title=f"RETRACTED: {TITLE}", doi=RETRACTED)),
        rec(
            3,
            Record(
                source="feed:fda-press",
                key="https://www.fda.gov/news-events/press-announcements/fda-approves-aponermin",
                title="FDA approves aponermin for relapsed or refractory multiple myeloma",
                url="https://www.fda.gov/news-events/press-announcements/fda-approves-aponermin",
                pub_date="2026-11-01",
            ),
        ),
        rec(
            4,
            Record(
                source="feed:fda-approvals",
                key="BLA761901:ORIG:1",
                title="TRAILNOVA (aponermin)",
                regulator="FDA",
                reg_kind="new application",
                product="TRAILNOVA",
                substance="APONERMIN",
                pub_date="2026-10-30",
                url="https://www.accessdata.fda.gov/scripts/cder/daf/index.cfm?event=overview.process&ApplNo=761901",
            ),
        ),
        rec(5, Record(source="pubmed", key="22334499", title="A paper nobody was told of", doi="10.9/other")),
    ]
    # (id, record, kind, dedup, detail, delivered)
    events = [
        (1, 1, "new", "first:feed:journal:ami-1", {}, True),
        (2, 2, "new", "first:pubmed:22334455", {}, False),
        (3, 1, "retraction", "retraction:feed:journal:ami-1", {"sources": ["PubMed"]}, True),
        (4, 2, "retraction", "retraction:pubmed:22334455", {"sources": ["Retraction Watch"]}, False),
        (5, 3, "approval", "first:feed:fda-press:x", {}, True),
        (6, 4, "approval", "first:feed:fda-approvals:BLA761901:ORIG:1", {}, False),
        (7, 5, "new", "first:pubmed:22334499", {}, False),
    ]
    eng = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007_notice_reports")
        conn.execute(
            sa.text(
                "INSERT INTO records (id, source, key, key_hash, doi, current_version, current_hash, first_seen, "
                "updated_at) VALUES (:id, :source, :key, :key_hash, :doi, 1, :h, :day, :day)"
            ),
            [{**r, "day": day} for r in records],
        )
        conn.execute(
            sa.text(
                "INSERT INTO versions (record_id, n, fetched_at, hash, fields, changes) "
                "VALUES (:id, 1, :day, :h, :fields, '[]')"
            ),
            [{**r, "day": day} for r in records],
        )
        conn.execute(
            sa.text("INSERT INTO hits (record_id, query, first_seen, terms) VALUES (:id, 'trail', :day, '[]')"),
            [{"id": r["id"], "day": day} for r in records],
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (id, digest, recipient, message_id, subject, mime, items, state, attempts, "
                "created_at, sent_at) VALUES (1, 'd', 'a@example.org', '<m1@x>', 'd: 1 new paper', :mime, 3, "
                "'sent', 1, :day, :day)"
            ),
            {"mime": b"x", "day": day},
        )
        conn.execute(
            sa.text(
                "INSERT INTO events (id, record_id, query, kind, version_n, dedup, created_at, detail) "
                "VALUES (:id, :rid, 'trail', :kind, 1, :dedup, :day, :detail)"
            ),
            [
                {"id": i, "rid": rid, "kind": k, "dedup": dd, "detail": dumps(det), "day": day}
                for i, rid, k, dd, det, _ in events
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO deliveries (event_id, digest, recipient, outbox_id) VALUES (:id, 'd', 'a@example.org', 1)"
            ),
            [{"id": i} for i, *_, sent in events if sent],
        )
        conn.execute(
            sa.text("INSERT INTO digest_recipients (digest, recipient, since) VALUES ('d', 'a@example.org', :s)"),
            {"s": "2026-11-01 00:00:00"},
        )
        conn.execute(
            sa.text("INSERT INTO digest_state (digest, last_run, last_sent) VALUES ('d', :day, :day)"), {"day": day}
        )
        if not store_url.startswith("sqlite"):
            for table in ("records", "events", "outbox"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)"))
    eng.dispose()


def test_the_upgrade_to_works_mails_nothing_already_told(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    from litwatch.config import load
    from litwatch.service import Service
    from test_changes import messages

    _at_0007(store_url)
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n"
    svc = Service(load(config_for(tmp_path, eutils, store_url, queries)))  # migrates to head
    try:
        with svc.store.transaction() as tx:
            works = svc.store.works_of(tx, [1, 2, 3, 4, 5])
        assert works[1] == works[2] and works[3] == works[4] and len(set(works.values())) == 3, works
        svc.digest()
        sent = messages(tmp_path / "outbox", set())
        assert [s for s, _ in sent] == ["d: 1 new paper"], sent  # only the paper nobody was told of
        assert "A paper nobody was told of" in sent[0][1]
        assert TITLE not in sent[0][1] and "aponermin" not in sent[0][1].lower()
        svc.digest()
        assert messages(tmp_path / "outbox", {p for p in (tmp_path / "outbox").glob("*.eml")}) == []
        (digest,) = svc.status()["digests"]
        assert digest["pending_events"] == 0
    finally:
        svc.close()


def config_for(tmp_path: Path, eutils: FakeEutils, store_url: str, queries: str) -> Path:
    from helpers import basic_config

    return basic_config(tmp_path, eutils.url, db=store_url, queries=queries, digests=DIGESTS)


def test_cluster_joins_chains_and_keeps_doubts_apart() -> None:
    from litwatch.works import cluster

    stored = [
        (1, Record(source="feed:j", key="a", title="TRAIL agonists in myeloma", doi="10.1/A")),
        (2, Record(source="pubmed", key="11", title="TRAIL agonists in myeloma")),  # no DOI yet: alone
        (3, Record(source="pubmed", key="12", title="TRAIL agonists in myeloma.", doi="10.1/a", pmcid="PMC5")),
        (
            4,
            Record(
                source="feed:pmc", key="p", title="TRAIL agonists", url="https://pmc.ncbi.nlm.nih.gov/articles/PMC5/"
            ),
        ),
        (5, Record(source="feed:k", key="b", title="Pancreatic cancer xenografts and DR5", doi="10.1/a")),
    ]
    root, keys, doubts = cluster(stored)
    assert root == {1: 1, 2: 2, 3: 1, 4: 1, 5: 5}
    assert keys["doi:10.1/a"] == 1 and keys["pmcid:PMC5"] == 1 and keys["pmid:12"] == 1
    assert doubts == [(5, 1, "doi:10.1/a")]


def test_heard_is_per_work_and_per_news() -> None:
    from datetime import datetime

    from litwatch.records import DeliveredNews, PendingEvent
    from litwatch.works import heard

    def pending(eid: int, kind: str, dedup: str, detail: dict[str, object], work: int = 7) -> PendingEvent:
        return PendingEvent(
            eid, eid, "q", kind, 1, dict(detail), datetime(2026, 1, 1), Record("pubmed", "1"), (), work, dedup
        )

    told = [
        DeliveredNews(1, 7, "new", "first:feed:j:a", {}, 100),
        DeliveredNews(2, 7, "erratum", "erratum:pubmed:1:91", {"notices": ["91"], "notice": {"doi": "10.1/e1"}}, 101),
        DeliveredNews(3, 8, "retraction", "retraction:pubmed:2", {}, 102),
    ]
    events = [
        pending(10, "new", "first:pubmed:1", {}),  # the paper again, from PubMed
        pending(11, "erratum", "erratum:feed:j:a:doi:10.1/e1", {"notice": {"doi": "10.1/E1"}}),  # same erratum
        pending(12, "erratum", "erratum:pubmed:1:92", {"notices": ["92"]}),  # another erratum: news
        pending(13, "retraction", "retraction:feed:k:b", {}, work=8),  # the same retraction
        pending(14, "new", "first:pubmed:3", {}, work=9),  # another work
        pending(15, "update", "update:pubmed:1:v3", {"changes": [["title", "a", "b"]]}),  # a change: news
    ]
    assert heard(events, told) == {10: 100, 11: 101, 13: 102}
