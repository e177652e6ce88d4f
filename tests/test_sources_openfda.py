"""sources/openfda.py against a fake openFDA on loopback (tests/helpers/fake_openfda.py), with the
applications of tests/data/openfda/applications.json."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from helpers.fake_openfda import FakeOpenFda
from litwatch.errors import SourceError
from litwatch.parse.openfda import parse_drugsfda
from litwatch.sources.http import RetryPolicy
from litwatch.sources.openfda import (
    DailyBudget,
    OpenFdaClient,
    OpenFdaResult,
    Window,
    plan_window,
    poll_openfda,
    requests_per_cycle,
    search_query,
)

DATA = Path(__file__).parent / "data" / "openfda"
JAN = Window(date(2026, 1, 1), date(2026, 1, 31))
NOW = datetime(2026, 1, 27, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(retries=3, backoff=0.0, max_delay=2.0, timeout=10.0, deadline=30.0)


def _apps() -> dict[str, dict[str, Any]]:
    doc = json.loads((DATA / "applications.json").read_text())
    return {a["application_number"]: a for a in doc["results"]}


def _many(n: int) -> list[dict[str, Any]]:
    """n applications approved in January 2026, shaped like the constructed BLA761901."""
    base = _apps()["BLA761901"]
    out = []
    for i in range(n):
        app = copy.deepcopy(base)
        app["application_number"] = f"BLA{800000 + i}"
        app["submissions"][0]["submission_status_date"] = f"202601{1 + i % 28:02d}"
        out.append(app)
    return out


@pytest.fixture
def fda() -> Iterator[FakeOpenFda]:
    with FakeOpenFda(_apps().values()) as fake:
        yield fake


def _client(fake: FakeOpenFda, **kw: Any) -> OpenFdaClient:
    kw.setdefault("policy", FAST)
    kw.setdefault("per_second", 100)
    kw.setdefault("budget", DailyBudget(1000))
    return OpenFdaClient(url=fake.search_url, name="fda-approvals", **kw)


def _keys(result: OpenFdaResult, window: Window) -> list[str]:
    return [
        r.key
        for page in result.pages
        for r in parse_drugsfda(page, feed_name="fda-approvals", since=window.since, until=window.until).records
    ]


def test_plus_reaches_the_server_as_plus(fda: FakeOpenFda) -> None:
    with _client(fda) as client:
        result = client.fetch(JAN, now=NOW)
    (req,) = fda.requests
    assert "20260101+TO+20260131" in req.raw_query and "%2B" not in req.raw_query
    assert req.params["search"] == "submissions.submission_status_date:[20260101 TO 20260131]"
    assert req.params["limit"] == "1000"
    assert result.requests == 1 and _keys(result, JAN) == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]
    # what requests' own params= encoding sends instead, and what openFDA makes of it
    resp = requests.get(fda.search_url, params={"search": JAN.search}, timeout=10)
    assert "%2B" in fda.requests[-1].raw_query
    assert resp.status_code == 500
    assert resp.json() == {"error": {"code": "SERVER_ERROR", "message": "Check your request and try again"}}


def test_limit_and_skip_caps_answer_openfdas_exact_400s(fda: FakeOpenFda) -> None:
    def get(query: str) -> requests.Response:
        return requests.get(f"{fda.search_url}?{query}", timeout=10)

    cases = {
        search_query(JAN, limit=1001): "Limit cannot exceed 1000 results for search requests. "
        "Use the skip or search_after param to get additional results.",
        search_query(JAN, skip=25001): "Skip value must 25000 or less.",
        search_query(JAN, skip=1000) + "&search_after=0%3DBLA1": "The skip parameter is not supported when using "
        "search_after.",
        "limit=ten": "Invalid limit parameter value.",
        "serch=x": "Invalid parameter: serch",
    }
    for query, message in cases.items():
        resp = get(query)
        assert resp.status_code == 400, query
        assert resp.json() == {"error": {"code": "BAD_REQUEST", "message": message}}
    assert get(search_query(JAN, limit=1000, skip=25000)).status_code == 404  # at the caps: allowed


def test_a_400_is_a_source_error_with_openfdas_message_and_no_api_key(fda: FakeOpenFda) -> None:
    fda.reply(400, {"error": {"code": "BAD_REQUEST", "message": "Skip value must 25000 or less."}})
    with _client(fda, api_key="SECRET-KEY-123") as client, pytest.raises(SourceError) as err:
        client.fetch(JAN, now=NOW)
    assert str(err.value) == "feed fda-approvals: openFDA refused the request: Skip value must 25000 or less."
    assert "SECRET" not in str(err.value) and "SECRET" not in (err.value.url or "")
    assert "api_key=SECRET-KEY-123" in fda.requests[0].raw_query


def test_link_paging_with_search_after(fda: FakeOpenFda) -> None:
    fda.applications = _many(2500)
    with _client(fda, api_key="k1") as client:
        result = client.fetch(JAN, now=NOW)
    assert result.requests == 3 and len(result.pages) == 3
    assert "search_after" not in fda.requests[0].params
    assert fda.requests[1].params["search_after"] == "0=BLA800999"
    assert fda.requests[2].params["search_after"] == "0=BLA801999"
    assert all(r.params.get("api_key") == "k1" for r in fda.requests)  # added back to each Link
    keys = _keys(result, JAN)
    assert len(keys) == len(set(keys)) == 2500
    print(f"2500 applications in the window: {result.requests} requests")


def test_skip_paging_when_there_is_no_link_header(fda: FakeOpenFda) -> None:
    fda.applications = _many(2100)
    fda.link_header = False
    with _client(fda) as client:
        result = client.fetch(JAN, now=NOW)
    assert [r.params.get("skip") for r in fda.requests] == [None, "1000", "2000"]
    assert len(set(_keys(result, JAN))) == 2100


def _tiny(n: int) -> list[dict[str, Any]]:
    """n minimal results dated in January 2026: enough for paging, small on the wire."""
    return [
        {"application_number": f"ANDA{300000 + i}", "submissions": [{"submission_status_date": "20260115"}]}
        for i in range(n)
    ]


def test_skip_paging_stops_at_openfdas_skip_cap_instead_of_drawing_a_400(fda: FakeOpenFda) -> None:
    fda.applications = _tiny(26_500)
    fda.link_header = False
    with _client(fda) as client, pytest.raises(SourceError) as err:
        client.fetch(JAN, now=NOW)
    assert "26,500 openFDA results for 2026-01-01..2026-01-31 is more than skip paging reaches (25,000)" in str(
        err.value
    )
    skips = [int(r.params.get("skip", "0")) for r in fda.requests]
    assert skips == list(range(0, 25_001, 1000))  # up to the cap, never past it
    # with Link headers (search_after) the same window pages to its end
    fda.requests.clear()
    fda.link_header = True
    with _client(fda) as client:
        result = client.fetch(JAN, now=NOW)
    assert result.requests == 27 and all("skip" not in r.params or r.params["skip"] == "0" for r in fda.requests)
    total = sum(len(json.loads(page)["results"]) for page in result.pages)
    assert total == 26_500
    print(f"26,500 results: skip paging gives up after {len(skips)} requests; search_after takes {result.requests}")


def test_an_invalid_api_key_is_refused_at_once_and_not_shown(fda: FakeOpenFda) -> None:
    fda.api_keys = {"GOOD-KEY"}
    with _client(fda, api_key="BAD-KEY-999") as client, pytest.raises(SourceError) as err:
        client.fetch(JAN, now=NOW)
    assert "HTTP 403" in str(err.value) and err.value.status == 403
    assert "BAD-KEY" not in str(err.value) and "BAD-KEY" not in (err.value.url or "")
    assert len(fda.requests) == 1  # a refused key is not retried
    with _client(fda, api_key="GOOD-KEY") as client:
        assert client.fetch(JAN, now=NOW).requests == 1
    anonymous = requests.get(f"{fda.search_url}?{search_query(JAN)}", timeout=10)
    assert anonymous.status_code == 200  # openFDA needs no key
    refused = requests.get(f"{fda.search_url}?{search_query(JAN, api_key='x')}", timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "API_KEY_INVALID"


def test_not_found_means_no_matches(fda: FakeOpenFda) -> None:
    window = Window(date(2025, 6, 1), date(2025, 6, 30))
    with _client(fda) as client:
        result = client.fetch(window, now=NOW)
    assert result.no_matches and result.pages == () and result.requests == 1


def test_a_404_that_is_not_openfdas_not_found_is_an_error(fda: FakeOpenFda) -> None:
    with OpenFdaClient(url=fda.base + "/drug/drugsfda", policy=FAST, per_second=100) as client:
        with pytest.raises(SourceError, match="HTTP 404"):
            client.fetch(JAN, now=NOW)


def test_429_is_obeyed_and_retried(fda: FakeOpenFda) -> None:
    fda.throttle(2, retry_after="0")
    budget = DailyBudget(10)
    with _client(fda, budget=budget) as client:
        result = client.fetch(JAN, now=NOW)
    assert result.requests == 3 and len(result.pages) == 1
    assert budget.remaining(NOW) == 7  # the day counts every attempt, retries included
    fda.throttle(5, retry_after="0")
    with _client(fda, policy=RetryPolicy(retries=1, backoff=0.0, timeout=10.0, deadline=30.0)) as client:
        with pytest.raises(SourceError, match=r"HTTP 429 .*\(gave up after 2 attempts\)"):
            client.fetch(JAN, now=NOW)


def test_daily_budget_without_key_and_its_reset(fda: FakeOpenFda) -> None:
    fda.applications = _many(2500)
    budget = DailyBudget(2)
    with _client(fda, budget=budget) as client, pytest.raises(SourceError) as err:
        client.fetch(JAN, now=NOW)
    assert "openFDA's daily limit of 2 requests is used up; an api_key raises it to 120,000" in str(err.value)
    assert len(fda.requests) == 2
    assert budget.remaining(NOW) == 0 and budget.remaining(datetime(2026, 1, 28, tzinfo=UTC)) == 2
    # the defaults: 1,000 a day without a key, 120,000 with one; 4 a second (240 a minute)
    assert OpenFdaClient(url=fda.search_url).budget.per_day == 1000
    with OpenFdaClient(url=fda.search_url, api_key="k") as keyed:
        assert keyed.budget.per_day == 120_000
        assert keyed.client.limiter is not None and keyed.client.limiter.per_second == 4


def test_plan_window_overlaps_sixty_days_in_us_eastern_days() -> None:
    assert plan_window(None, datetime(2026, 1, 20, 15, tzinfo=UTC)) == Window(date(2025, 12, 21), date(2026, 1, 20))
    assert plan_window(date(2026, 1, 20), datetime(2026, 1, 27, 15, tzinfo=UTC)) == Window(
        date(2025, 11, 21), date(2026, 1, 27)
    )
    # 03:00 UTC on the 27th is still the 26th in Washington
    assert plan_window(date(2026, 1, 20), datetime(2026, 1, 27, 3, tzinfo=UTC)).until == date(2026, 1, 26)


def test_record_that_appears_days_after_its_date_is_caught_by_the_overlap(fda: FakeOpenFda) -> None:
    apps = _apps()
    aponermin = apps["BLA761901"]  # approved 2026-01-15
    fda.applications = [apps["BLA761036"], apps["ANDA219999"]]
    first_now = datetime(2026, 1, 20, 15, tzinfo=UTC)
    w1 = plan_window(None, first_now)
    with _client(fda) as client:
        first = _keys(client.fetch(w1, now=first_now), w1)
    assert first == ["BLA761036:SUPPL:85"]  # the tentative approval is not news
    fda.add(aponermin)  # Drugs@FDA publishes it on the 24th, dated the 15th
    second_now = datetime(2026, 1, 27, 15, tzinfo=UTC)
    w2 = plan_window(w1.until, second_now)
    with _client(fda) as client:
        second = _keys(client.fetch(w2, now=second_now), w2)
        no_overlap = Window(date(2026, 1, 21), w2.until)
        missed = _keys(client.fetch(no_overlap, now=second_now), no_overlap)
    assert second == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]  # seen again + the late one
    assert set(first) | set(second) == {"BLA761036:SUPPL:85", "BLA761901:ORIG:1"}  # one each, by identity
    assert missed == []  # windows that only continue where the last one ended miss it


def test_requests_per_cycle() -> None:
    assert [requests_per_cycle(n) for n in (0, 1, 1000, 1001, 2500)] == [1, 1, 1, 2, 3]


def test_poll_openfda_returns_a_batch_and_its_watermark(fda: FakeOpenFda) -> None:
    apps = _apps()
    fda.applications = [apps["BLA761036"], apps["ANDA219999"], apps["BLA761460"]]
    first = poll_openfda(
        name="fda-approvals",
        last_until=None,
        now=datetime(2026, 1, 20, 15, tzinfo=UTC),
        url=fda.search_url,
        policy=FAST,
        budget=DailyBudget(1000),
    )
    assert [r.key for r in first.records] == ["BLA761036:SUPPL:85"]
    assert (first.window.since, first.watermark, first.requests) == (date(2025, 12, 21), date(2026, 1, 20), 1)
    fda.add(apps["BLA761901"])
    second = poll_openfda(
        name="fda-approvals",
        last_until=first.watermark,
        now=datetime(2026, 1, 27, 15, tzinfo=UTC),
        url=fda.search_url,
        api_key="k",
        policy=FAST,
        budget=DailyBudget(1000),
    )
    assert [r.key for r in second.records] == ["BLA761036:SUPPL:85", "BLA761901:ORIG:1"]
    assert second.warnings == () and second.requests == 1 and second.watermark == date(2026, 1, 27)
    print(f"requests per cycle: {first.requests} and {second.requests}")
