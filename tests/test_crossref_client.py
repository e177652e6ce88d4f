"""The Crossref client against the fake Crossref REST API (tests/helpers/fake_crossref.py):
identity, DOIs re-checked 50 a request, cursor paging of new notices, the pace and
connections the rate-limit headers allow, 429 + Retry-After, 404, bad JSON, a 50 MB
answer, and a daily re-check of 10,000 stored DOIs kept to the advertised rate."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import requests

from helpers.fake_crossref import FakeCrossref, Fault
from litwatch.errors import ParseError, SourceError
from litwatch.sources.crossref import BATCH, ROWS_MAX, CrossrefClient
from litwatch.sources.http import RetryPolicy

TODAY = date(2026, 12, 1)
RETRACTED = "10.1021/am300292v"


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    fake = FakeCrossref().start()
    fake.add_real(indexed=TODAY - timedelta(days=1))
    yield fake
    fake.stop()


def client(fake: FakeCrossref, **kw: object) -> CrossrefClient:
    kw.setdefault("policy", RetryPolicy(retries=3, backoff=0.05, timeout=10, deadline=120))
    return CrossrefClient(email="team@example.org", base_url=fake.url, **kw)  # type: ignore[arg-type]


def fillers(fake: FakeCrossref, n: int, *, prefix: str = "10.5555/fill", update: bool = False) -> list[str]:
    """`n` more works, shaped like the real ones; with `update`, each is a notice."""
    dois = [f"{prefix}.{i}" for i in range(n)]
    for i, doi in enumerate(dois):
        message: dict[str, object] = {"DOI": doi, "title": [f"Work {i}"], "type": "journal-article"}
        if update:
            message["update-to"] = [
                {
                    "DOI": f"10.5555/target.{i}",
                    "type": "correction",
                    "label": "Correction",
                    "source": "publisher",
                    "updated": {"date-parts": [[2026, 11, 30]]},
                }
            ]
        fake.add(message, indexed=TODAY)
    return dois


def test_every_request_names_litwatch_and_the_address(crossref: FakeCrossref) -> None:
    c = client(crossref)
    c.recheck([RETRACTED], today=TODAY)
    c.new_notices(TODAY, today=TODAY)
    c.work(RETRACTED)
    c.close()
    assert len(crossref.requests) == 3
    for r in crossref.requests:
        assert r.params["mailto"] == ["team@example.org"]
        assert r.user_agent.startswith("litwatch/") and "mailto:team@example.org" in r.user_agent
        assert r.pool.startswith("polite-")


def test_recheck_asks_fifty_dois_a_request_and_reads_updated_by(crossref: FakeCrossref) -> None:
    stored = [*fillers(crossref, 118), RETRACTED.upper(), "10.9999/never-registered"]
    c = client(crossref)
    batch = c.recheck(stored, today=TODAY)
    c.close()
    lists = crossref.lists()
    assert batch.requests == len(lists) == 3
    sizes = [len(r.params["filter"][0].split(",")) for r in lists]
    assert sorted(sizes) == [20, 50, 50] and BATCH == 50
    for r in lists:
        assert all(part.startswith("doi:") for part in r.params["filter"][0].split(","))
        assert r.params["rows"] == [str(len(r.params["filter"][0].split(",")))]  # default 20 would drop works
    (n,) = batch.notices
    assert (n.kind, n.source, n.notice_doi, n.target_doi) == (
        "retraction",
        "retraction-watch",
        "10.1021/acsami.9b11759",
        RETRACTED,
    )
    assert batch.missing == {"10.9999/never-registered"}
    assert len(batch.checked) == 119 and batch.progress == TODAY.isoformat() and batch.pool == "polite-array"


def test_new_notices_page_with_cursor_and_keep_only_stored_targets(crossref: FakeCrossref) -> None:
    fillers(crossref, 2_497, update=True)  # + the 3 real notices: 2,500 update works
    stored = {RETRACTED, "10.5555/target.7", "10.5555/target.2400"}
    c = client(crossref)
    batch = c.new_notices(TODAY - timedelta(days=1), today=TODAY, stored=stored)
    c.close()
    lists = crossref.lists()
    assert [r.params["cursor"][0] == "*" for r in lists] == [True, False, False]
    assert all(r.params["rows"] == [str(ROWS_MAX)] for r in lists)
    assert all(r.params["filter"] == [f"is-update:true,from-index-date:{TODAY - timedelta(days=1)}"] for r in lists)
    assert batch.requests == 3  # 1000 + 1000 + 500: no request per notice
    assert {n.target_doi for n in batch.notices} == stored
    assert batch.progress == TODAY.isoformat()


def test_a_full_last_page_is_followed_to_the_empty_one(crossref: FakeCrossref) -> None:
    fillers(crossref, ROWS_MAX - 3, update=True)  # + the 3 real notices: exactly one full page
    batch = client(crossref).new_notices(TODAY - timedelta(days=1), today=TODAY)
    assert batch.requests == 2 and len(batch.notices) == ROWS_MAX


def test_nothing_to_check_asks_nothing(crossref: FakeCrossref) -> None:
    batch = client(crossref).recheck(["", "not a doi"], today=TODAY)
    assert batch.requests == 0 and crossref.requests == [] and batch.notices == ()


def test_new_notices_since_today_skips_older_index_dates(crossref: FakeCrossref) -> None:
    batch = client(crossref).new_notices(TODAY, today=TODAY)  # the real works were indexed yesterday
    assert batch.notices == () and batch.requests == 1


def test_rows_are_capped_at_crossrefs_limit(crossref: FakeCrossref) -> None:
    answer = requests.get(crossref.url + "works", params={"rows": "1001"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["message"][0]["message"].startswith(
        "Integer specified as 1001 but must be a positive integer less than or equal to 1000."
    )
    c = client(crossref, batch_size=5000)
    c.recheck(fillers(crossref, 1_500), today=TODAY)
    c.new_notices(TODAY, today=TODAY)
    ours = [r for r in crossref.lists() if r.user_agent.startswith("litwatch/")]
    assert max(int(r.params["rows"][0]) for r in ours) == ROWS_MAX


def test_a_refused_request_says_what_crossref_said(crossref: FakeCrossref) -> None:
    body = b'{"status":"failed","message-type":"validation-failure","message":[{"type":"filter-not-available","value":"doi","message":"Filter doi specified but there is no such filter for this route."}]}'
    crossref.faults.append(Fault(route="works", status=400, body=body))
    with pytest.raises(SourceError) as e:  # (a refused re-check batch is split instead: #24)
        client(crossref).new_notices(TODAY, today=TODAY)
    print(e.value)
    assert str(e.value).startswith(
        "Crossref new notices: Crossref refused the request (HTTP 400): Filter doi specified"
    )
    assert "team@example.org" not in str(e.value)  # query strings stay out of messages


def test_429_retry_after_is_obeyed(crossref: FakeCrossref) -> None:
    crossref.faults.append(Fault(route="works", status=429, headers={"Retry-After": "2"}))
    c = client(crossref)
    batch = c.recheck([RETRACTED], today=TODAY)
    c.close()
    first, second = crossref.lists()
    print(f"retried {second.at - first.at:.2f}s after the 429 (Retry-After: 2)")
    assert second.at - first.at >= 2.0
    assert batch.requests == 2 and len(batch.notices) == 1


def test_rate_limit_headers_are_obeyed(crossref: FakeCrossref) -> None:
    """The fake advertises 5 a second and one connection, and refuses (429) any request
    beyond; the client starts at one a second until the first answer tells it more."""
    crossref.limits["polite-array"] = (5, 1.0, 1)
    crossref.delay = 0.05
    c = client(crossref, policy=RetryPolicy(retries=0, timeout=10))  # a 429 would fail the call
    batch = c.recheck(fillers(crossref, 16 * BATCH), today=TODAY)
    c.close()
    times = [r.at for r in crossref.lists()]
    assert batch.requests == len(times) == 16
    assert crossref.rejected == 0 and crossref.max_in_flight == 1
    gaps = [times[i + 5] - times[i] for i in range(len(times) - 5)]
    print(f"16 requests in {times[-1] - times[0]:.2f}s; shortest span of 6 consecutive: {min(gaps):.2f}s")
    assert min(gaps) >= 0.9


def test_connections_follow_the_concurrency_header(crossref: FakeCrossref) -> None:
    crossref.limits["polite-array"] = (50, 1.0, 3)
    crossref.delay = 0.3
    c = client(crossref, policy=RetryPolicy(retries=0, timeout=10))
    batch = c.recheck(fillers(crossref, 12 * BATCH), today=TODAY)
    c.close()
    assert batch.requests == 12 and crossref.rejected == 0
    assert crossref.lists()[0].in_flight == 1, "one connection until an answer allows more"
    assert 1 < crossref.max_in_flight <= 3


def test_one_connection_when_the_header_says_one(crossref: FakeCrossref) -> None:
    crossref.limits["polite-array"] = (50, 1.0, 1)
    crossref.delay = 0.2
    c = client(crossref, policy=RetryPolicy(retries=0, timeout=10), max_connections=8)
    c.recheck(fillers(crossref, 6 * BATCH), today=TODAY)
    c.close()
    assert crossref.max_in_flight == 1 and crossref.rejected == 0


def test_unknown_doi_is_none_and_not_retried(crossref: FakeCrossref) -> None:
    c = client(crossref)
    assert c.work("10.9999/never-registered") is None
    page = c.work(RETRACTED)
    c.close()
    assert page is not None and page.notices[0].kind == "retraction"
    assert [r.path for r in crossref.requests] == ["/works/10.9999%2Fnever-registered", "/works/10.1021%2Fam300292v"]
    assert crossref.requests[0].pool == "polite-single"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (
            Fault(route="works", body=b'{"status":"ok","message-type":"work-list","message":{"items":[{"DOI":,}]}}'),
            "is not valid JSON",
        ),
        (Fault(route="works", truncate=True), "ends early (truncated)"),
    ],
    ids=["malformed", "truncated"],
)
def test_bad_json_is_a_clear_source_error(crossref: FakeCrossref, fault: Fault, said: str) -> None:
    fault.status = 200
    crossref.faults.append(fault)
    with pytest.raises(ParseError) as e:
        client(crossref).recheck([RETRACTED], today=TODAY)
    print(e.value)
    assert said in str(e.value) and str(e.value).startswith("Crossref check of 1 DOIs: the answer")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "counted"])
def test_fifty_megabyte_answer_is_capped(crossref: FakeCrossref, declared: bool) -> None:
    crossref.faults.append(Fault(route="works", huge=50_000_000, content_length=declared))
    with pytest.raises(SourceError) as e:
        client(crossref, max_bytes=20_000_000).recheck([RETRACTED], today=TODAY)
    print(e.value)
    assert "larger than 20 MB" in str(e.value)


def test_fifty_megabyte_answer_under_the_cap_is_read(crossref: FakeCrossref) -> None:
    crossref.faults.append(Fault(route="works", huge=50_000_000))
    batch = client(crossref, max_bytes=64_000_000).recheck([RETRACTED], today=TODAY)
    assert batch.notices and batch.notices[0].target_doi == RETRACTED


def test_daily_recheck_of_ten_thousand_dois_keeps_to_the_advertised_rate(crossref: FakeCrossref) -> None:
    """Re-checking 10,000 stored DOIs: 200 requests, none over what the fake advertises
    and enforces (a request over the rate or the concurrency limit is refused with a
    429 and counted). The fake advertises 20 a second, 3 at once, so the test takes
    about 11 s; the figure at the polite pool's 3 a second is the poll's
    (`test_polls_crossref.py -k cost`), through the service and its shared budget."""
    crossref.limits["polite-array"] = (20, 1.0, 3)
    stored = fillers(crossref, 10_000)
    c = client(crossref)
    batch = c.recheck(stored, today=TODAY)
    c.close()
    expected = math.ceil(10_000 / BATCH)
    print(
        f"10,000 DOIs: {batch.requests} requests; pool {batch.pool}, "
        f"max {crossref.max_in_flight} at once, {crossref.rejected} refused"
    )
    assert batch.requests == expected == 200 and len(batch.checked) == 10_000
    assert crossref.rejected == 0 and crossref.max_in_flight <= 3


def test_fake_filters_or_repeats_and_and_different_names(crossref: FakeCrossref) -> None:
    crossref.enforce = False  # plain requests, no pacing
    both = "doi:10.1021/am300292v,doi:10.1021/acsami.9b11759"
    answer = requests.get(crossref.url + "works", params={"filter": both}, timeout=10).json()
    assert {w["DOI"] for w in answer["message"]["items"]} == {"10.1021/am300292v", "10.1021/acsami.9b11759"}
    answer = requests.get(crossref.url + "works", params={"filter": both + ",is-update:true"}, timeout=10).json()
    assert [w["DOI"] for w in answer["message"]["items"]] == ["10.1021/acsami.9b11759"]
    refused = requests.get(crossref.url + "works", params={"filter": "dio:10.1/x"}, timeout=10)
    assert refused.status_code == 400 and "Filter dio specified" in refused.json()["message"][0]["message"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "x-rate-limit-limit": "3",
                "x-rate-limit-interval": "1s",
                "x-concurrency-limit": "3",
                "x-api-pool": "polite-array",
            },
            (3, 1.0, 3, "polite-array"),
        ),
        ({"x-rate-limit-limit": "50", "x-rate-limit-interval": "60s", "x-concurrency-limit": "1"}, (50, 60.0, 1, "")),
        ({"x-rate-limit-limit": "10", "x-rate-limit-interval": "1m"}, (10, 60.0, 1, "")),
        ({"x-rate-limit-limit": "0", "x-rate-limit-interval": "soon", "x-concurrency-limit": "-2"}, (1, 1.0, 1, "")),
        ({}, (1, 1.0, 1, "")),
    ],
    ids=["polite-array", "per-minute", "minutes", "nonsense-kept-safe", "none"],
)
def test_limiter_learns_from_headers(headers: dict[str, str], expected: tuple[int, float, int, str]) -> None:
    from litwatch.sources.crossref import PoolLimiter

    limiter = PoolLimiter()
    limiter.learn(headers)
    assert (limiter.per_second, limiter.interval, limiter.concurrency, limiter.pool) == expected
