"""parse/biorxiv.py on the answers in tests/data/biorxiv (MANIFEST) and on broken ones;
sources/biorxiv.py against the local api.biorxiv.org (helpers/fake_biorxiv.py):
cursor paging by what the server reports, the empty interval, categories, 429/5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest

from helpers.fake_biorxiv import PAGE, FakeBiorxiv
from litwatch.errors import ParseError, SourceError
from litwatch.parse.biorxiv import Paging, parse_details, parse_pubs
from litwatch.sources.biorxiv import PreprintClient, Window, plan_window, poll_preprints
from litwatch.sources.http import RateLimiter, RetryPolicy

DATA = Path(__file__).parent / "data" / "biorxiv"
FAST = RetryPolicy(retries=3, backoff=0, timeout=10, deadline=60)


def test_details_page_one_record_per_preprint_its_highest_version() -> None:
    page = parse_details((DATA / "details-biorxiv.json").read_bytes(), feed_name="b", server="biorxiv")
    assert page.items == 3 and page.warnings == ()
    assert page.paging == Paging("ok", 0, 3, 3) and page.paging.next_cursor() is None
    by = {r.key: r for r in page.records}
    assert set(by) == {"10.1101/456574", "10.1101/2023.01.20.524874"}
    eli = by["10.1101/456574"]
    assert eli.published_doi == "10.7554/elife.43696" and eli.server == "bioRxiv"
    assert eli.authors[0] == "Naka, A." and eli.pub_date == "2018-10-30" and eli.keywords == ("neuroscience",)
    assert eli.url == "https://www.biorxiv.org/content/10.1101/456574"
    v2 = by["10.1101/2023.01.20.524874"]
    assert v2.preprint_version == "2" and v2.title.startswith("Accurate age prediction from blood using a small")
    assert v2.published_doi == ""  # "NA"


def test_pubs_page_and_the_empty_answer() -> None:
    page = parse_pubs((DATA / "pubs-biorxiv.json").read_bytes(), feed_name="b")
    (link,) = page.links
    assert (link.preprint_doi, link.published_doi, link.journal, link.date) == (
        "10.1101/456574",
        "10.7554/elife.43696",
        "eLife",
        "2019-02-04",
    )
    empty = parse_details((DATA / "empty.json").read_bytes(), feed_name="b", server="biorxiv")
    assert empty.records == () and empty.paging.empty and empty.paging.next_cursor() is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"collection": []}',
        b'{"messages": [{"status": "error: bad interval"}], "collection": []}',
        b"[" * 100_000 + b"]" * 100_000,  # nested beyond reason
        json.dumps({"messages": [{"status": "ok", "count": 1, "total": "1"}], "collection": [{"title": "x"}]}).encode(),
    ],
)
def test_answers_that_cannot_be_read_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_details(body, feed_name="b", server="biorxiv")


def test_one_bad_item_is_a_warning() -> None:
    body = json.dumps(
        {
            "messages": [{"status": "ok", "cursor": "0", "count": "2", "total": "2"}],
            "collection": [{"title": "no doi"}, {"doi": "10.1101/1", "title": "ok", "version": "1"}],
        }
    ).encode()
    page = parse_details(body, feed_name="b", server="medrxiv")
    assert [r.key for r in page.records] == ["10.1101/1"] and len(page.warnings) == 1
    assert page.records[0].url == "https://www.medrxiv.org/content/10.1101/1"


def test_first_poll_asks_details_only() -> None:
    with FakeBiorxiv() as api:
        api.post("medrxiv", doi="10.1101/2026.12.01.1", title="t", date=date(2026, 12, 1), published="10.1182/blood.1")
        got = poll_preprints(
            name="m", server="medrxiv", last_until=None, now=datetime(2026, 12, 2), url=api.base, policy=FAST
        )
    assert [r.path for r in api.requests] == ["/details/medrxiv/2026-11-02/2026-12-02/0"]
    assert got.records[0].published_doi == "10.1182/blood.1" and got.requests == 1


def test_window_overlaps_and_first_poll_reaches_back() -> None:
    now = datetime(2026, 12, 8, 1, 0)
    assert plan_window(None, now, lookback_days=30) == Window(date(2026, 11, 8), date(2026, 12, 8))
    assert plan_window(date(2026, 12, 7), now) == Window(date(2026, 12, 7), date(2026, 12, 8))


@pytest.fixture
def api() -> Iterator[FakeBiorxiv]:
    with FakeBiorxiv() as fake:
        yield fake


def test_client_pages_by_cursor_and_survives_429_and_5xx(api: FakeBiorxiv) -> None:
    day = date(2026, 12, 1)
    for i in range(2 * PAGE + 5):
        api.post("biorxiv", doi=f"10.1101/2026.12.01.{i:06d}", title=f"p{i}", date=day, category="cancer biology")
    api.post("biorxiv", doi="10.1101/2026.12.01.999999", title="other", date=day, category="neuroscience")
    api.throttle(1)
    api.fail(1, 502)
    got = poll_preprints(
        name="b",
        server="biorxiv",
        last_until=date(2026, 11, 2),  # a later poll: `pubs` too
        now=datetime(2026, 12, 2, 12),
        url=api.base,
        categories=("cancer-biology",),
        policy=FAST,
        limiter=RateLimiter(50),
    )
    assert len(got.records) == 2 * PAGE + 5 and got.posted == 2 * PAGE + 5
    paths = [r.path for r in api.requests]
    assert paths[2:5] == [
        "/details/biorxiv/2026-11-02/2026-12-02/0",
        "/details/biorxiv/2026-11-02/2026-12-02/30",
        "/details/biorxiv/2026-11-02/2026-12-02/60",
    ]
    assert api.requests[2].query == "category=cancer_biology"
    assert paths[-1] == "/pubs/biorxiv/2026-11-02/2026-12-02/0"  # empty: one request
    assert got.requests == 6  # 1 refused (429), 1 failed (502), 3 pages, 1 pubs


def test_client_gives_up_on_persistent_5xx(api: FakeBiorxiv) -> None:
    api.fail(10, 503)
    with PreprintClient(server="medrxiv", url=api.base, name="m", policy=FAST, limiter=RateLimiter(50)) as c:
        with pytest.raises(SourceError, match="HTTP 503"):
            c.details(Window(date(2026, 12, 1), date(2026, 12, 2)))


def test_a_client_too_fast_is_refused_by_the_fake_and_obeys_retry_after() -> None:
    """The fake enforces a pace (429 with Retry-After past one request in 3 s);
    a client that ignores the pace is refused and still gets every page by waiting."""
    with FakeBiorxiv(per_second=1, second=3.0) as api:  # 3 s: the pages asked back to back are refused
        for i in range(2 * PAGE + 1):
            api.post("biorxiv", doi=f"10.1101/2026.12.01.{i:06d}", title=f"p{i}", date=date(2026, 12, 1))
        got = poll_preprints(
            name="b",
            server="biorxiv",
            last_until=None,
            now=datetime(2026, 12, 2),
            url=api.base,
            policy=RetryPolicy(retries=6, backoff=0, timeout=10, deadline=120),
            limiter=RateLimiter(1000),
        )
        assert len(got.records) == 2 * PAGE + 1
        assert api.refused >= 2 and got.requests == 3 + api.refused  # pages 2 and 3 waited at least once
