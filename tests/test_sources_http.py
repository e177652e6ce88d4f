"""sources/http.py against real servers on loopback: a request's whole life, headers
and body included, ends at its deadline however slowly the server drips; the size cap
holds for compressed bodies without inflating more than the cap first (issue 13, case 6)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import wait_for
from helpers.feedhost import FeedHost, Reply
from litwatch.errors import SourceError
from litwatch.sources.feeds import FeedFetcher
from litwatch.sources.http import HttpClient, RetryPolicy

RSS = (Path(__file__).resolve().parent / "data" / "feeds" / "rss2.xml").read_bytes()
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
BODY = b"<rss>" + b"x" * 195 + b"</rss>"  # 200 bytes, 0.1 s apart: 20 s to send them all


@pytest.fixture
def host() -> Iterator[FeedHost]:
    with FeedHost() as h:
        yield h


def policy(deadline: float) -> RetryPolicy:
    return RetryPolicy(retries=2, backoff=0.05, max_delay=0.5, timeout=1.0, deadline=deadline)


def test_a_feed_dripping_its_body_ends_at_the_deadline(host: FeedHost) -> None:
    host.route("/drip", Reply(body=BODY, drip=0.1))
    with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=1.5), name="drip") as f:
        with pytest.raises(SourceError) as info:
            f.fetch(host.url("/drip"), now=NOW)
    wait_for(
        lambda: "/drip" in host.dripped, 60, "the server to notice the client hang up"
    )  # the server noticed the client hang up
    sent = host.dripped["/drip"]
    print(f"\nbody drip: {sent} of {len(BODY)} bytes sent before the client gave up: {info.value}")
    assert sent < len(BODY) // 2
    assert "deadline of 1.5s" in str(info.value) and "feed drip" in str(info.value)
    assert len(host.hits("/drip")) == 1  # the deadline is the call's: no retry after it


def test_a_feed_dripping_its_headers_ends_at_the_deadline(host: FeedHost) -> None:
    host.route("/drip", Reply(body=BODY, drip=0.1, drip_headers=True))
    with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=1.5), name="drip") as f:
        with pytest.raises(SourceError, match="deadline of 1.5s") as info:
            f.fetch(host.url("/drip"), now=NOW)
    wait_for(lambda: "/drip" in host.dripped, 60, "the server to notice the client hang up")
    print(f"\nheader drip: {host.dripped['/drip']} header bytes sent before the client gave up: {info.value}")
    assert host.dripped["/drip"] < 60


def test_an_eutils_request_dripping_its_body_ends_at_the_deadline(host: FeedHost) -> None:
    """The E-utilities client uses the same HttpClient: same deadline."""
    host.route("/esearch.fcgi", Reply(body=BODY, drip=0.1, content_type="text/xml"))
    client = HttpClient(policy=policy(deadline=1.5), max_bytes=1_000_000)
    try:
        with pytest.raises(SourceError, match="deadline of 1.5s"):
            client.request("GET", host.url("/esearch.fcgi"), what="query trail")
    finally:
        client.close()
    wait_for(lambda: "/esearch.fcgi" in host.dripped, 60, "the server to notice the client hang up")
    assert host.dripped["/esearch.fcgi"] < len(BODY) // 2


def test_a_fast_body_within_the_deadline_is_read_whole(host: FeedHost) -> None:
    host.route("/rss", Reply(body=RSS))
    with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=30.0), name="ok") as f:
        for _ in range(3):  # the connection is reused between calls
            assert f.fetch(host.url("/rss"), now=NOW).content == RSS


def gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzip-compressed (about 1:1000), without holding them."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * 1_000_000
    out = [z.compress(block) for _ in range(inflated // len(block))]
    return b"".join(out) + z.flush()


def test_a_gzip_bomb_is_refused_without_inflating_it(host: FeedHost) -> None:
    bomb = gzip_bomb(200_000_000)
    host.route("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=30.0), name="bomb") as f:
            with pytest.raises(SourceError, match="larger than 1 MB") as info:
                f.fetch(host.url("/bomb"), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\ngzip bomb: {len(bomb)} bytes inflating to 200 MB; peak memory {peak / 1e6:.1f} MB; {info.value}")
    assert peak < 10_000_000


def test_a_gzip_feed_is_decoded(host: FeedHost) -> None:
    host.route("/gz", Reply(body=gzip.compress(RSS), headers={"Content-Encoding": "gzip"}))
    with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=30.0), name="gz") as f:
        assert f.fetch(host.url("/gz"), now=NOW).content == RSS


def test_a_gzip_bomb_in_a_redirect_body_is_not_inflated(host: FeedHost) -> None:
    """requests reads a redirect's body, inflated and uncapped, before following it."""
    bomb = gzip_bomb(200_000_000)
    host.route(
        "/moved",
        Reply(status=302, body=bomb, headers={"Content-Encoding": "gzip", "Location": host.url("/gz")}),
    )
    host.route("/gz", Reply(body=gzip.compress(RSS), headers={"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        with FeedFetcher(max_bytes=1_000_000, policy=policy(deadline=30.0), name="moved") as f:
            content = f.fetch(host.url("/moved"), now=NOW).content
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\ngzip bomb in a redirect: peak memory {peak / 1e6:.1f} MB")
    assert content == RSS and peak < 10_000_000
