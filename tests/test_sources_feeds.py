"""sources/feeds.py against a real HTTP server on loopback (tests/helpers/feedhost.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import wait_for
from helpers.feedhost import FeedHost, Reply
from litwatch import __version__
from litwatch.errors import SourceError
from litwatch.sources.feeds import MAX_FRESHNESS, FeedFetcher, FeedGoneError, FeedResponse, fresh_until
from litwatch.sources.http import RetryPolicy

RSS = (Path(__file__).resolve().parent / "data" / "feeds" / "rss2.xml").read_bytes()
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
LAST_MODIFIED = "Thu, 15 Jan 2026 10:00:00 GMT"


@pytest.fixture
def host() -> Iterator[FeedHost]:
    with FeedHost() as h:
        yield h


def fetcher(retries: int = 0, timeout: float = 2.0, max_bytes: int = 20_000_000, deadline: float = 10.0) -> FeedFetcher:
    policy = RetryPolicy(retries=retries, backoff=0.05, max_delay=2.0, timeout=timeout, deadline=deadline)
    return FeedFetcher(timeout=timeout, max_bytes=max_bytes, policy=policy, name="toc")


def test_200_then_304_with_validators(host: FeedHost) -> None:
    host.feed("/rss", RSS, etag='"v1"', last_modified=LAST_MODIFIED)
    with fetcher() as f:
        first = f.fetch(host.url("/rss"), etag=None, last_modified=None, not_before=None, now=NOW)
        second = f.fetch(host.url("/rss"), etag=first.etag, last_modified=first.last_modified, not_before=None, now=NOW)
    assert (first.status, first.content, first.etag, first.last_modified) == (200, RSS, '"v1"', LAST_MODIFIED)
    assert first.content_type == "application/rss+xml; charset=utf-8"
    assert first.final_url == host.url("/rss") and not first.permanent_redirect
    assert second == FeedResponse(
        status=304, content=b"", final_url=host.url("/rss"), etag='"v1"', last_modified=LAST_MODIFIED
    )
    plain, conditional = host.hits("/rss")
    assert "If-None-Match" not in plain.headers and "If-Modified-Since" not in plain.headers
    assert conditional.headers["If-None-Match"] == '"v1"'
    assert conditional.headers["If-Modified-Since"] == LAST_MODIFIED


def test_last_modified_alone_gives_304(host: FeedHost) -> None:
    host.feed("/rss", RSS, last_modified=LAST_MODIFIED)
    with fetcher() as f:
        resp = f.fetch(host.url("/rss"), etag=None, last_modified=LAST_MODIFIED, now=NOW)
    assert resp.status == 304 and resp.last_modified == LAST_MODIFIED and resp.etag is None


def test_changed_feed_gives_200_and_new_validators(host: FeedHost) -> None:
    host.feed("/rss", RSS + b"<!-- v2 -->", etag='"v2"')
    with fetcher() as f:
        resp = f.fetch(host.url("/rss"), etag='"v1"', last_modified=None, now=NOW)
    assert resp.status == 200 and resp.etag == '"v2"' and resp.content.endswith(b"v2 -->")


def test_polite_user_agent_and_accept(host: FeedHost) -> None:
    host.feed("/rss", RSS)
    with fetcher() as f:
        f.fetch(host.url("/rss"), now=NOW)
    headers = host.hits("/rss")[0].headers
    assert headers["User-Agent"].startswith(f"litwatch/{__version__} ")
    assert "application/rss+xml" in headers["Accept"] and "application/atom+xml" in headers["Accept"]


def test_max_age_gives_fresh_until_and_a_skip_without_request(host: FeedHost) -> None:
    host.feed("/rss", RSS, headers={"Cache-Control": "public, max-age=3600", "Age": "600"})
    with fetcher() as f:
        resp = f.fetch(host.url("/rss"), now=NOW)
        assert resp.fresh_until == NOW + timedelta(seconds=3000)
        skipped = f.fetch(host.url("/rss"), not_before=resp.fresh_until, now=NOW + timedelta(minutes=10))
        again = f.fetch(host.url("/rss"), not_before=resp.fresh_until, now=NOW + timedelta(hours=1))
    assert skipped.skipped and skipped.status == 0 and skipped.content == b""
    assert again.status == 200
    assert len(host.hits("/rss")) == 2  # the skip made no request


def test_naive_and_aware_datetimes_compare_as_utc(host: FeedHost) -> None:
    host.feed("/rss", RSS)
    naive_later = (NOW + timedelta(hours=1)).replace(tzinfo=None)
    with fetcher() as f:
        assert f.fetch(host.url("/rss"), not_before=naive_later, now=NOW).skipped
        assert f.fetch(host.url("/rss"), not_before=NOW, now=naive_later).status == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"cache-control": "max-age=60"}, NOW + timedelta(seconds=60)),
        ({"cache-control": "no-cache, max-age=60"}, None),
        ({"cache-control": "no-store"}, None),
        ({"cache-control": "max-age=0"}, None),
        ({"cache-control": "s-maxage=60"}, None),
        ({"cache-control": "max-age=60", "age": "100"}, None),
        ({"cache-control": "max-age=31536000"}, NOW + MAX_FRESHNESS),  # a server cannot silence a feed
    ],
)
def test_fresh_until(headers: dict[str, str], expected: datetime | None) -> None:
    assert fresh_until(headers, NOW) == expected


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_is_reported(host: FeedHost, status: int) -> None:
    host.feed("/new", RSS)
    host.redirect("/old", "/new", status=status)
    with fetcher() as f:
        resp = f.fetch(host.url("/old"), now=NOW)
    assert resp.status == 200 and resp.content == RSS
    assert resp.final_url == host.url("/new")
    assert resp.permanent_redirect


@pytest.mark.parametrize("status", [302, 307])
def test_temporary_redirect_is_followed_not_noted(host: FeedHost, status: int) -> None:
    host.feed("/new", RSS)
    host.redirect("/old", "/new", status=status)
    host.redirect("/older", "/old", status=301)
    with fetcher() as f:
        resp = f.fetch(host.url("/older"), now=NOW)
    assert resp.final_url == host.url("/new") and not resp.permanent_redirect


def test_redirect_loop_is_a_source_error(host: FeedHost) -> None:
    host.redirect("/a", "/b")
    host.redirect("/b", "/a")
    with fetcher() as f, pytest.raises(SourceError, match="too many redirects"):
        f.fetch(host.url("/a"), now=NOW)
    assert len(host.requests) <= 12


def test_huge_body_is_refused_quickly(host: FeedHost) -> None:
    host.route("/huge", Reply(stream_bytes=100_000_000))
    with fetcher() as f, pytest.raises(SourceError, match="larger than 20 MB") as info:
        f.fetch(host.url("/huge"), now=NOW)
    sent = wait_for(lambda: host.streamed.get("/huge"), 30, "the server to notice the client hang up")
    assert sent < 30_000_000  # 20 MB read, then it hung up (what was sent beyond sat in buffers)
    assert "feed toc" in str(info.value)


def test_declared_huge_body_is_refused_before_reading(host: FeedHost) -> None:
    host.feed("/big", b"x" * 2_000_000)
    with fetcher(max_bytes=1_000_000) as f, pytest.raises(SourceError, match="larger than 1 MB"):
        f.fetch(host.url("/big"), now=NOW)


def test_slow_server_times_out(host: FeedHost) -> None:
    host.route("/slow", Reply(body=RSS, delay=3.0))
    with fetcher(timeout=0.5) as f, pytest.raises(SourceError, match="timed out"):
        f.fetch(host.url("/slow"), now=NOW)  # gave up before the server's 3 s: no answer came
    assert len(host.hits("/slow")) == 1  # and asked once (retries=0)


def test_500_then_200_is_retried(host: FeedHost) -> None:
    host.route("/flaky", Reply(status=500, body=b"oops"), Reply(body=RSS))
    with fetcher(retries=2) as f:
        resp = f.fetch(host.url("/flaky"), now=NOW)
    assert resp.status == 200 and len(host.hits("/flaky")) == 2


def test_persistent_503_gives_up(host: FeedHost) -> None:
    host.route("/down", Reply(status=503))
    with fetcher(retries=2) as f, pytest.raises(SourceError, match="HTTP 503") as info:
        f.fetch(host.url("/down"), now=NOW)
    assert info.value.status == 503 and len(host.hits("/down")) == 3


def test_429_retry_after_is_honoured(host: FeedHost) -> None:
    host.route("/busy", Reply(status=429, headers={"Retry-After": "1"}), Reply(body=RSS))
    start = time.monotonic()
    with fetcher(retries=2) as f:
        resp = f.fetch(host.url("/busy"), now=NOW)
    assert resp.status == 200
    assert time.monotonic() - start >= 0.95  # not the 0.05 s backoff


def test_410_is_feed_gone(host: FeedHost) -> None:
    host.route("/gone", Reply(status=410))
    with fetcher(retries=3) as f, pytest.raises(FeedGoneError) as info:
        f.fetch(host.url("/gone"), now=NOW)
    assert str(info.value).startswith("feed toc is gone (HTTP 410")
    assert "disable or remove it" in str(info.value)
    assert info.value.status == 410 and isinstance(info.value, SourceError)
    assert len(host.hits("/gone")) == 1  # not retried


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_4xx_is_a_source_error(host: FeedHost, status: int) -> None:
    host.route("/x", Reply(status=status))
    with fetcher(retries=3) as f, pytest.raises(SourceError, match=f"HTTP {status}") as info:
        f.fetch(host.url("/x"), now=NOW)
    assert not isinstance(info.value, FeedGoneError) and len(host.hits("/x")) == 1


def test_connection_refused_is_a_source_error() -> None:
    with FeedHost() as h:
        url = h.url("/rss")
    with fetcher() as f, pytest.raises(SourceError, match="connection failed"):
        f.fetch(url, now=NOW)


def test_feedhost_log_and_sequences(host: FeedHost) -> None:
    host.route("/seq", Reply(body=b"1"), Reply(body=b"2"))
    with fetcher() as f:
        bodies = [f.fetch(host.url("/seq"), now=NOW).content for _ in range(3)]
    assert bodies == [b"1", b"2", b"2"]
    assert [r.path for r in host.requests] == ["/seq"] * 3
    assert host.requests[0].method == "GET"
