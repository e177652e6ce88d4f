"""sources/ema.py against a file host on loopback (tests/helpers/feedhost.py: ETag, Last-Modified,
304, large and endless bodies), read with parse/ema.py."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers.feedhost import FeedHost, Reply
from litwatch.errors import ParseError, SourceError
from litwatch.parse.ema import parse_ema, staleness
from litwatch.sources.ema import EmaFetcher, poll_ema
from litwatch.sources.http import RetryPolicy

EXCERPT = Path(__file__).parent / "data" / "ema" / "medicines-excerpt.json"
PATH = "/en/documents/report/medicines-output-medicines_json-report_en.json"
JSON = "application/json"
FAST = RetryPolicy(retries=2, backoff=0.0, max_delay=1.0, timeout=10.0, deadline=30.0)


@pytest.fixture
def host() -> Iterator[FeedHost]:
    with FeedHost() as h:
        yield h


def _doc() -> dict[str, Any]:
    return json.loads(EXCERPT.read_text(encoding="utf-8"))


def test_conditional_get_etag_then_304(host: FeedHost) -> None:
    body = EXCERPT.read_bytes()
    host.route(PATH, Reply(body=body, content_type=JSON, etag='"v1"', last_modified="Sun, 04 Oct 2026 18:02:25 GMT"))
    with EmaFetcher(name="ema-medicines", policy=FAST) as fetcher:
        first = fetcher.fetch(host.url(PATH))
        second = fetcher.fetch(host.url(PATH), etag=first.etag, last_modified=first.last_modified)
    assert (first.status, first.content, first.etag, first.requests) == (200, body, '"v1"', 1)
    assert (second.status, second.content, second.requests) == (304, b"", 1)
    assert second.etag == '"v1"' and second.last_modified == "Sun, 04 Oct 2026 18:02:25 GMT"  # kept for next time
    sent = host.hits(PATH)[1].headers
    assert sent["If-None-Match"] == '"v1"' and sent["If-Modified-Since"] == "Sun, 04 Oct 2026 18:02:25 GMT"
    assert sent["Accept"].startswith("application/json")


def test_last_modified_alone(host: FeedHost) -> None:
    host.route(PATH, Reply(body=EXCERPT.read_bytes(), content_type=JSON, last_modified="Mon, 05 Oct 2026 06:00:00 GMT"))
    with EmaFetcher(policy=FAST) as fetcher:
        first = fetcher.fetch(host.url(PATH))
        again = fetcher.fetch(host.url(PATH), last_modified=first.last_modified)
    assert (first.status, again.status) == (200, 304)


def test_opinion_then_authorisation_across_two_days_of_the_file(host: FeedHost) -> None:
    """Day 1 the file carries a positive CHMP opinion; day 2 (new ETag) the authorisation.
    Each identity appears once in the union; the unchanged day costs one 304."""
    doc = _doc()
    pom = next(m for m in doc["data"] if m["name_of_medicine"] == "Pomalidomide Teva")
    day1, day2 = copy.deepcopy(doc), copy.deepcopy(doc)
    opinion = {"medicine_status": "Opinion", "opinion_status": "Positive", "opinion_adopted_date": "22/01/2026"}
    opinion |= {"marketing_authorisation_date": "", "european_commission_decision_date": ""}
    authorised = opinion | {"medicine_status": "Authorised", "marketing_authorisation_date": "20/03/2026"}
    for d, change in ((day1, opinion), (day2, authorised)):
        next(m for m in d["data"] if m["name_of_medicine"] == pom["name_of_medicine"]).update(change)
    seen: dict[str, int] = {}
    etag = None
    with EmaFetcher(policy=FAST) as fetcher:
        for n, (d, tag) in enumerate(((day1, '"d1"'), (day1, '"d1"'), (day2, '"d2"')), 1):
            host.route(PATH, Reply(body=json.dumps(d).encode(), content_type=JSON, etag=tag))
            resp = fetcher.fetch(host.url(PATH), etag=etag)
            etag = resp.etag
            if resp.status == 304:
                assert n == 2
                continue
            for rec in parse_ema(resp.content, feed_name="ema", since=date(2026, 1, 1)).records:
                if rec.application == "EMEA/H/C/006302":
                    seen[rec.key] = seen.get(rec.key, 0) + 1
    assert seen == {"EMEA/H/C/006302#chmp-opinion": 2, "EMEA/H/C/006302#eu-authorisation": 1}
    # (the opinion is read on both days; its identity and content are the same, so the
    # store keeps one record and one event)


def test_large_file(host: FeedHost) -> None:
    doc = _doc()
    vet = doc["data"][0]
    filler = [vet | {"ema_product_number": f"EMEA/V/C/{i:06d}"} for i in range(12000)]
    body = json.dumps({"meta": doc["meta"], "data": [*filler, *doc["data"]]}).encode()
    assert len(body) > 20_000_000
    host.route(PATH, Reply(body=body, content_type=JSON, etag='"big"'))
    with EmaFetcher(policy=FAST) as fetcher:
        resp = fetcher.fetch(host.url(PATH))
    parsed = parse_ema(resp.content, feed_name="ema", since=date(2026, 7, 1))
    assert resp.status == 200 and len(resp.content) == len(body)
    assert parsed.medicines == 12006 and [r.key for r in parsed.records] == [
        "EMEA/H/C/006498#chmp-opinion",  # Itvisma, first published 28/07/2026
        "EMEA/H/C/006498#eu-authorisation",
        "EMEA/H/C/006711#chmp-opinion",
        "EMEA/H/C/006711#eu-authorisation",
    ]
    print(f"{len(body) / 1e6:.1f} MB file: {parsed.medicines} medicines, {parsed.human} human")


def test_a_file_over_the_size_cap_is_refused(host: FeedHost) -> None:
    host.route(PATH, Reply(stream_bytes=3_000_000, content_type=JSON))
    with EmaFetcher(name="ema-medicines", policy=FAST, max_bytes=1_000_000) as fetcher:
        with pytest.raises(SourceError, match="feed ema-medicines: response larger than 1 MB"):
            fetcher.fetch(host.url(PATH))


def test_server_errors_are_retried_and_a_404_is_reported(host: FeedHost) -> None:
    host.route(PATH, Reply(status=503), Reply(body=EXCERPT.read_bytes(), content_type=JSON))
    with EmaFetcher(policy=FAST) as fetcher:
        resp = fetcher.fetch(host.url(PATH))
        assert (resp.status, resp.requests) == (200, 2)
        with pytest.raises(SourceError, match="HTTP 404"):
            fetcher.fetch(host.url("/elsewhere.json"))


def test_an_empty_200_is_an_error_not_an_empty_file(host: FeedHost) -> None:
    host.route(PATH, Reply(body=b"", content_type=JSON))
    with EmaFetcher(policy=FAST) as fetcher, pytest.raises(SourceError, match="empty response"):
        fetcher.fetch(host.url(PATH))


def test_stale_file_after_a_fetch(host: FeedHost) -> None:
    host.route(PATH, Reply(body=EXCERPT.read_bytes(), content_type=JSON))
    with EmaFetcher(policy=FAST) as fetcher:
        parsed = parse_ema(fetcher.fetch(host.url(PATH)).content, feed_name="ema")
    assert staleness(parsed.newest_update, datetime(2026, 10, 5), 14) is None
    assert "looks stale" in (staleness(parsed.newest_update, datetime(2026, 11, 1), 14) or "")


def test_poll_ema_batch_200_then_304_and_staleness_after_a_304(host: FeedHost) -> None:
    host.route(PATH, Reply(body=EXCERPT.read_bytes(), content_type=JSON, etag='"v1"'))
    now = datetime(2026, 10, 5, 8, 0)
    first = poll_ema(name="ema-medicines", url=host.url(PATH), now=now, policy=FAST)
    assert first.status == 200 and first.requests == 1 and first.since == date(2026, 9, 5)
    assert [r.key for r in first.records] == ["EMEA/H/C/006711#eu-authorisation"]  # 18/09/2026
    assert first.newest_update == date(2026, 10, 2) and first.stale is None and first.etag == '"v1"'
    later = datetime(2026, 10, 30, 8, 0)
    second = poll_ema(
        name="ema-medicines",
        url=host.url(PATH),
        now=later,
        etag=first.etag,
        last_ok=now.date(),
        last_newest_update=first.newest_update,
        stale_days=14,
        policy=FAST,
    )
    assert (second.status, second.records, second.requests) == (304, (), 1)
    assert second.since == date(2026, 9, 21)
    assert second.stale is not None and "newest last_updated_date is 2026-10-02, 28 days" in second.stale
    print(f"requests per cycle: {first.requests} (200) and {second.requests} (304)")


def test_a_cut_off_download_is_tried_again_and_never_read_as_a_short_file(host: FeedHost) -> None:
    body = EXCERPT.read_bytes()
    cut = Reply(body=body, content_type=JSON, etag='"v1"', cut_at=len(body) // 2)
    host.route(PATH, cut, Reply(body=body, content_type=JSON, etag='"v1"'))
    with EmaFetcher(name="ema-medicines", policy=FAST) as fetcher:
        resp = fetcher.fetch(host.url(PATH))
    assert (resp.status, resp.content, resp.requests) == (200, body, 2)
    host.route(PATH, cut)  # cut off every time: an error, not half a file
    with pytest.raises(SourceError, match=r"feed ema-medicines: answer cut off before its end .*gave up after 3"):
        poll_ema(name="ema-medicines", url=host.url(PATH), now=datetime(2026, 10, 5), policy=FAST)


def test_a_page_that_is_not_the_json_file_is_a_parse_error(host: FeedHost) -> None:
    maintenance = b"<!DOCTYPE html><html><body><h1>Site under maintenance</h1></body></html>"
    host.route(PATH, Reply(body=maintenance, content_type="text/html; charset=utf-8"))
    with pytest.raises(ParseError, match="feed ema-medicines: the EMA medicines file is not valid JSON"):
        poll_ema(name="ema-medicines", url=host.url(PATH), now=datetime(2026, 10, 5), policy=FAST)
    host.route(PATH, Reply(body=b'{"meta": {}, "items": []}', content_type=JSON))
    with pytest.raises(ParseError, match='not EMA medicines data \\(no "data" array\\)'):
        poll_ema(name="ema-medicines", url=host.url(PATH), now=datetime(2026, 10, 5), policy=FAST)


def test_a_renamed_field_reaches_the_poll_as_a_warning(host: FeedHost) -> None:
    doc = _doc()
    for m in doc["data"]:
        m["marketing_authorization_date"] = m.pop("marketing_authorisation_date")
    host.route(PATH, Reply(body=json.dumps(doc).encode(), content_type=JSON))
    batch = poll_ema(name="ema-medicines", url=host.url(PATH), now=datetime(2026, 10, 5), policy=FAST)
    assert batch.status == 200 and batch.records == ()  # the authorisation date is not found under its new name
    (unknown, missing) = batch.warnings[:2]
    assert "marketing_authorization_date" in unknown and "marketing_authorisation_date (in 6 of 6)" in missing
