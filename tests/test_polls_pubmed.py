"""Polling against the fake E-utilities server: requests made, rate limit, tool and
email on every request, retries, failures that store nothing, and events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils, Fault
from litwatch.config import load
from litwatch.service import Service


def service(cfg: Path) -> Service:
    return Service(load(cfg))


def seed(fake: FakeEutils, n_trail: int = 350, n_mm: int = 300, overlap: int = 50) -> None:
    for i in range(n_trail):
        fake.add(
            str(10_000 + i),
            terms="TRAIL",
            edat=TODAY - timedelta(days=i % 20),
            title=f"TRAIL paper {i}",
            doi=f"10.1/t{i}",
        )
    for i in range(n_mm):
        pmid = str(10_000 + i) if i < overlap else str(20_000 + i)
        terms = {"TRAIL", "multiple myeloma"} if i < overlap else "multiple myeloma"
        fake.add(
            pmid,
            terms=terms,
            edat=TODAY - timedelta(days=i % 20),
            title=f"Myeloma paper {i}" if i >= overlap else f"TRAIL paper {i}",
            doi=f"10.1/t{i}" if i < overlap else "",
        )


def table_count(db: Path, table: str) -> int:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        n = c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    eng.dispose()
    return int(n)


def test_first_poll_requests_rate_and_identity(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils)
    svc = service(basic_config(tmp_path, eutils.url))
    results = svc.poll()
    svc.close()
    by_name = {r.name: r for r in results}
    assert by_name["trail"].found == 350 and by_name["trail"].new == 350
    assert by_name["myeloma"].found == 300
    # ~600 unique PMIDs: per query at most 2 esearch + 2 efetch (here 1 + 1 each, plus
    # the first notice cycle, which only sets its watermark)
    assert eutils.count("esearch") == 2
    assert eutils.count("efetch") == 2
    for r in eutils.requests:
        assert r.params.get("tool") == "litwatch" and r.params.get("email") == "test@example.org"
        assert "api_key" not in r.params
    times = [r.at for r in eutils.requests]
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 1.0, "more than 3 requests in one second"
    assert table_count(tmp_path / "litwatch.db", "records") == 600
    assert table_count(tmp_path / "litwatch.db", "events") == 650  # 600 + 50 shared by both queries


def test_history_server_batches(tmp_path: Path, eutils: FakeEutils) -> None:
    for i in range(1200):
        eutils.add(str(30_000 + i), terms="TRAIL", edat=TODAY, title=f"p{i}")
    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: TRAIL\n", digests="")
    svc = service(cfg)
    (res, _notices) = svc.poll()
    svc.close()
    assert res.new == 1200
    fetches = [r for r in eutils.requests if r.utility == "efetch"]
    assert [(f.params["retstart"], f.params["retmax"]) for f in fetches] == [
        ("0", "500"),
        ("500", "500"),
        ("1000", "500"),
    ]
    assert all("WebEnv" in f.params and f.params["query_key"] == "1" for f in fetches)


def test_second_poll_fetches_only_changes(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils, 100, 50, 10)
    cfg = basic_config(tmp_path, eutils.url)
    svc = service(cfg)
    svc.poll()
    before = len(eutils.requests)
    eutils.add("99999", terms="TRAIL", edat=TODAY, title="Brand new")
    results = svc.poll()
    svc.close()
    new = {r.name: r.new for r in results}
    assert new["trail"] == 1 and new["myeloma"] == 0
    efetches = [r for r in eutils.requests[before:] if r.utility == "efetch"]
    # the only record fetched again is the new one (plus today's modified ones, if any)
    fetched_ids = {i for r in efetches for i in r.params.get("id", "").split(",") if i}
    assert "99999" in fetched_ids


def test_unchanged_refetch_stores_nothing(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils, 20, 0, 0)
    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: TRAIL\n", digests="")
    svc = service(cfg)
    svc.poll()
    versions = table_count(tmp_path / "litwatch.db", "versions")
    events = table_count(tmp_path / "litwatch.db", "events")
    for pmid in list(eutils.records)[:5]:  # modified date bumps, content identical
        eutils.records[pmid].mdat = TODAY
    svc.poll()
    svc.close()
    assert table_count(tmp_path / "litwatch.db", "versions") == versions
    assert table_count(tmp_path / "litwatch.db", "events") == events


def test_retries_on_429_and_5xx_honouring_retry_after(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils, 5, 0, 0)
    eutils.faults += [Fault("esearch", 429, {"Retry-After": "1"}), Fault("efetch", 503), Fault("efetch", 502)]
    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: TRAIL\n", digests="")
    svc = service(cfg)
    (res, _) = svc.poll()
    svc.close()
    assert res.ok and res.new == 5
    searches = [r.at for r in eutils.requests if r.utility == "esearch"]
    assert searches[1] - searches[0] >= 1.0  # Retry-After: 1 honoured


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault("efetch", 200, body=b"<PubmedArticleSet><PubmedArticle><MedlineCitation>"), "malformed XML"),
        (Fault("efetch", 400, body=b"bad request"), "HTTP 400"),
        (
            Fault("esearch", 200, body=b"<eSearchResult><ERROR>Invalid query</ERROR></eSearchResult>"),
            "PubMed refused the search: Invalid query",
        ),
        (Fault("efetch", huge=200_000_000), "response larger than 1 MB"),
    ],
    ids=["malformed", "http-400", "esearch-error", "huge-response"],
)
def test_failed_fetch_stores_nothing_and_exits_1(
    tmp_path: Path, eutils: FakeEutils, fault: Fault, message: str
) -> None:
    seed(eutils, 30, 0, 0)
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: trail\n    pubmed: TRAIL\n  - name: other\n    pubmed: other\n",
        digests="",
    )
    cfg.write_text(cfg.read_text().replace("  timeout: 5\n", "  timeout: 5\n  max_response_mb: 1\n"))
    r = invoke("--config", str(cfg), "poll", "--query", "trail")
    assert r.returncode == 0, r.stderr
    eutils.add("5", terms="TRAIL", edat=TODAY, title="after")
    eutils.faults.append(fault)
    if fault.utility == "esearch":
        # the one OR'd search fails, then the new-record and the modification searches
        # it falls back to (each keeping its own progress): fail all three
        eutils.faults += [fault, fault]
    records_before = table_count(tmp_path / "litwatch.db", "records")
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 1
    assert message in r.stdout and "Traceback" not in r.stderr + r.stdout
    assert "other [pubmed]: found 0" in r.stdout  # the other query still ran
    assert table_count(tmp_path / "litwatch.db", "records") == records_before
    r = invoke("--config", str(cfg), "poll")  # the fault is gone: the record arrives
    assert r.returncode == 0, r.stdout + r.stderr
    # found: the new one and the 4 of the day before and today (each window overlaps the
    # previous one by a day); the known ones cost no event
    assert "trail [pubmed]: found 5, new 1, changed 0, events 1, errors 0" in r.stdout


def test_ten_thousand_cap_splits_the_window(tmp_path: Path, eutils: FakeEutils) -> None:
    from litwatch.sources import eutils as eu

    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: TRAIL\n", digests="")
    old = eu.ESEARCH_CAP
    eu.ESEARCH_CAP = 40  # the same logic as 10,000, on a small corpus
    try:
        for i in range(100):
            eutils.add(str(40_000 + i), terms="TRAIL", edat=TODAY - timedelta(days=i % 10), title=f"p{i}")
        svc = service(cfg)
        (res, _) = svc.poll()
        svc.close()
    finally:
        eu.ESEARCH_CAP = old
    assert res.new == 100
    assert eutils.count("esearch") > 2


def test_api_key_sent_and_never_printed(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils, 3, 0, 0)
    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: TRAIL\n", digests="")
    cfg.write_text(
        cfg.read_text().replace(
            "  email: test@example.org\n", "  email: test@example.org\n  api_key: ${NCBI_API_KEY}\n"
        )
    )
    eutils.faults.append(Fault("efetch", 404))
    r = invoke("--config", str(cfg), "-vv", "poll", env={"NCBI_API_KEY": "sekrit-key-123"})
    assert r.returncode == 1
    assert "sekrit-key-123" not in r.stdout + r.stderr
    assert all(q.params.get("api_key") == "sekrit-key-123" for q in eutils.requests)


def test_esearch_warnings_are_logged_with_query_name(tmp_path: Path, eutils: FakeEutils) -> None:
    body = (
        b"<eSearchResult><Count>0</Count><RetMax>0</RetMax><RetStart>0</RetStart><QueryKey>1</QueryKey><WebEnv>x</WebEnv><IdList/>"
        b"<ErrorList><PhraseNotFound>aponermn</PhraseNotFound></ErrorList>"
        b"<WarningList><OutputMessage>No items found.</OutputMessage></WarningList></eSearchResult>"
    )
    eutils.faults.append(Fault("esearch", 200, body=body))
    cfg = basic_config(tmp_path, eutils.url, queries="queries:\n  - name: trail\n    pubmed: aponermn\n", digests="")
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 0
    assert "query trail: PhraseNotFound: aponermn" in r.stderr
