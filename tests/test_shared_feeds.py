"""A feed shared by several queries (issue 13, case 2): its validators and Cache-Control
wait belong to the feed, so the query polling second used to get a 304 (or no request
at all) and match nothing, ever. Now every query scanning a feed is matched against its
entries, whatever the order of the polls, a query added later included; each (query,
entry) pair is reported once. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from helpers import Run, basic_config, invoke, wait_for
from helpers.fake_biorxiv import FakeBiorxiv
from helpers.fake_eutils import FakeEutils
from helpers.fake_openfda import FakeOpenFda
from helpers.feedhost import FeedHost, Reply

REPO_ROOT = Path(__file__).resolve().parents[1]


def rss(*items: tuple[str, str]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://www.fda.gov/news/{guid}</link><guid>{guid}</guid>"
        f"<description>{title}.</description><pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
        for guid, title in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>FDA press</title>'
        f"<link>https://www.fda.gov/</link><description>x</description>{body}</channel></rss>"
    ).encode()


TRAIL_ITEM = ("fda-1", "FDA approves aponermin, a TRAIL agonist")
MYELOMA_ITEM = ("fda-2", "FDA approves a new drug for multiple myeloma")
OTHER_ITEM = ("fda-3", "FDA warns about contaminated eye drops")
FDA = rss(TRAIL_ITEM, MYELOMA_ITEM, OTHER_ITEM)
BLOOD = rss(("blood-1", "Daratumumab in smoldering myeloma"))

QUERY_A = """
  - name: trail
    feeds: [fda-press]
    match: TRAIL OR aponermin
"""
QUERY_B = """
  - name: myeloma
    feeds: [fda-press]
    match: myeloma
"""
DIGESTS = """
digests:
  - name: trail-digest
    to: [a@example.org]
    queries: [trail]
  - name: myeloma-digest
    to: [b@example.org]
    queries: [myeloma]
"""
VALIDATORS = {
    "etag": {"etag": '"v1"', "last_modified": "Tue, 24 Nov 2026 10:00:00 GMT"},  # second poll: 304
    "max-age": {"headers": {"Cache-Control": "max-age=3600"}},  # second poll: no request at all
}


def shared_config(tmp_path: Path, eutils: FakeEutils, host: FeedHost, db: str, queries: str) -> Path:
    extra = f"feeds:\n  - name: fda-press\n    url: {host.url('/fda.xml')}\n    approvals: true\n"
    return basic_config(tmp_path, eutils.url, db=db, queries="queries:" + queries, digests=DIGESTS, extra=extra)


def dry_run(cfg: Path, digest: str) -> str:
    r = invoke("--config", str(cfg), "digest", digest, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def events_of(stdout: str) -> int:
    m = re.search(r"fda-press \[feed:fda-press\]: found \d+, new \d+, changed \d+, events (\d+)", stdout)
    assert m, stdout
    return int(m.group(1))


@pytest.mark.parametrize("validators", sorted(VALIDATORS))
@pytest.mark.parametrize("order", [("trail", "myeloma"), ("myeloma", "trail")], ids=["trail-first", "myeloma-first"])
def test_each_query_sharing_a_feed_gets_its_items_whatever_the_order(
    tmp_path: Path, eutils: FakeEutils, store_url: str, validators: str, order: tuple[str, str]
) -> None:
    with FeedHost() as host:
        host.route("/fda.xml", Reply(body=FDA, **VALIDATORS[validators]))  # type: ignore[arg-type]
        cfg = shared_config(tmp_path, eutils, host, store_url, QUERY_A + QUERY_B)
        first = invoke("--config", str(cfg), "poll", "--query", order[0])
        second = invoke("--config", str(cfg), "poll", "--query", order[1])
        assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout + second.stderr
        assert len(host.hits("/fda.xml")) == (2 if validators == "etag" else 1)  # the feed is not fetched again
        trail, myeloma = dry_run(cfg, "trail-digest"), dry_run(cfg, "myeloma-digest")
        again = invoke("--config", str(cfg), "poll")
    print(
        f"\n{validators}, {order[0]} first: {order[0]} poll {events_of(first.stdout)} events, "
        f"{order[1]} poll {events_of(second.stdout)} events; a third poll {events_of(again.stdout)}"
    )
    assert TRAIL_ITEM[1] in trail and MYELOMA_ITEM[1] not in trail
    assert MYELOMA_ITEM[1] in myeloma and TRAIL_ITEM[1] not in myeloma
    assert "eye drops" not in trail + myeloma
    assert events_of(again.stdout) == 0  # each (query, entry) pair once


def test_a_query_added_later_sees_the_stored_entries(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    with FeedHost() as host:
        host.route("/fda.xml", Reply(body=FDA, etag='"v1"'))
        cfg = shared_config(tmp_path, eutils, host, store_url, QUERY_A)
        cfg.write_text(cfg.read_text().replace("    queries: [myeloma]\n", "    queries: [trail]\n"))
        r = invoke("--config", str(cfg), "poll")
        assert r.returncode == 0 and events_of(r.stdout) == 1, r.stdout + r.stderr
        # the user adds a query scanning the same feed; the feed has not changed (304)
        cfg = shared_config(tmp_path, eutils, host, store_url, QUERY_A + QUERY_B)
        added = invoke("--config", str(cfg), "poll", "--query", "myeloma")
        again = invoke("--config", str(cfg), "poll", "--query", "myeloma")
        myeloma = dry_run(cfg, "myeloma-digest")
        # its `match` is widened later: the stored entries are matched again, for what is new
        text = cfg.read_text().replace("    match: myeloma\n", "    match: myeloma OR aponermin\n")
        cfg.write_text(text)
        widened = invoke("--config", str(cfg), "poll", "--query", "myeloma")
        assert {r.headers.get("If-None-Match") for r in host.hits("/fda.xml")[1:]} == {'"v1"'}
    print(
        f"\nadded later: first poll {events_of(added.stdout)} events, next {events_of(again.stdout)}; "
        f"after widening its match {events_of(widened.stdout)}"
    )
    assert (events_of(added.stdout), events_of(again.stdout), events_of(widened.stdout)) == (1, 0, 1)
    assert MYELOMA_ITEM[1] in myeloma and TRAIL_ITEM[1] not in myeloma


def test_a_new_user_with_the_shipped_config_gets_both_queries_items(tmp_path: Path, eutils: FakeEutils) -> None:
    """config/litwatch.yaml as shipped (fda-press in both queries), its URLs pointed at
    local servers: `litwatch run` polls each query on its own; then both digests list
    the feed items each query matches. Its regulatory feeds (fda-approvals, ema-medicines)
    are pointed at a fake openFDA and the file host, empty: never the internet."""
    shipped = (REPO_ROOT / "config" / "litwatch.yaml").read_text()
    assert "feeds: [fda-press, fda-approvals, ema-medicines, medrxiv-oncology, biorxiv-cancer]" in shipped
    assert "feeds: [fda-press, blood-toc, fda-approvals, ema-medicines, medrxiv-oncology, biorxiv-cancer]" in shipped
    with FeedHost() as host, FakeOpenFda() as fda, FakeBiorxiv() as preprints:
        host.route("/fda.xml", Reply(body=FDA, etag='"v1"', last_modified="Tue, 24 Nov 2026 10:00:00 GMT"))
        host.route("/blood.xml", Reply(body=BLOOD, etag='"b1"'))
        host.route("/ema.json", Reply(body=b'{"meta": {}, "data": []}', content_type="application/json"))
        text = (
            shipped.replace("sqlite:///litwatch.db", f"sqlite:///{tmp_path / 'litwatch.db'}")
            .replace("directory: outbox", f"directory: {tmp_path / 'outbox'}")
            .replace(
                "  first_lookback_days: 30\n", f"  first_lookback_days: 30\n  base_url: {eutils.url}\n  backoff: 0.05\n"
            )
        )
        text = re.sub(r"url: https://www\.fda\.gov/\S+", f"url: {host.url('/fda.xml')}", text)
        text = re.sub(r"url: https://ashpublications\.org/\S+", f"url: {host.url('/blood.xml')}", text)
        for name, url in (
            ("fda-approvals", fda.search_url),
            ("ema-medicines", host.url("/ema.json")),
            ("medrxiv-oncology", preprints.base),
            ("biorxiv-cancer", preprints.base),
        ):
            text, n = re.subn(rf"(  - name: {name}\n)", rf"\g<1>    url: {url}\n", text)
            assert n == 1, name
        assert "api.fda.gov" not in text and "ema.europa.eu" not in text and "biorxiv.org" not in text
        cfg = tmp_path / "litwatch.yaml"
        cfg.write_text(text)
        run = Run(cfg, tmp_path / "run.log")
        try:

            def both_polled() -> bool:
                st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
                feeds = {f["name"]: f for f in st["feeds"]}
                rss = all(feeds[n]["last_success"] for n in ("fda-press", "blood-toc"))
                # the regulatory feeds are tried; whether they succeed is the poll pipeline's (issue 17)
                tried = all(
                    feeds[n]["last_success"] or feeds[n]["last_error"]
                    for n in ("fda-approvals", "ema-medicines", "medrxiv-oncology", "biorxiv-cancer")
                )
                return all(q["last_success"] for q in st["queries"]) and rss and tried

            wait_for(both_polled, 120, "both queries and feeds polled")
        finally:
            rc, _ = run.stop()
        assert rc == 0, run.log
        r = invoke("--config", str(cfg), "digest")
        assert r.returncode == 0, r.stdout + r.stderr
        st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
    records = {q["name"]: q["records"] for q in st["queries"]}
    mails = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in (tmp_path / "outbox").glob("*.eml")]
    texts = {str(m["Subject"]): m.get_body(("plain",)).get_content() for m in mails}  # type: ignore[union-attr]
    weekly = "".join(t for subject, t in texts.items() if subject.startswith("weekly-myeloma"))
    print(
        f"\nshipped config: records per query {records}; {len(mails)} mails; fda-press fetched {len(host.hits('/fda.xml'))} times"
    )
    # trail: aponermin; myeloma: aponermin too (a myeloma drug, named in its match), the
    # myeloma approval, the TOC entry
    assert records == {"trail-agonists": 1, "multiple-myeloma": 3}
    assert "aponermin, a TRAIL agonist" in weekly and "new drug for multiple myeloma" in weekly
    assert "smoldering myeloma" in weekly and "eye drops" not in weekly


def test_a_query_added_while_the_feed_fails_still_sees_the_stored_entries(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    with FeedHost() as host:
        host.route("/fda.xml", Reply(body=FDA, etag='"v1"'), Reply(status=404, body=b"gone for now"))
        cfg = shared_config(tmp_path, eutils, host, store_url, QUERY_A)
        cfg.write_text(cfg.read_text().replace("    queries: [myeloma]\n", "    queries: [trail]\n"))
        assert invoke("--config", str(cfg), "poll").returncode == 0
        cfg = shared_config(tmp_path, eutils, host, store_url, QUERY_A + QUERY_B)
        r = invoke("--config", str(cfg), "poll", "--query", "myeloma")
        myeloma = dry_run(cfg, "myeloma-digest")
    print(f"\nadded while failing: {r.stdout.strip()}")
    assert r.returncode == 1 and "errors 1: feed fda-press: HTTP 404" in r.stdout
    assert events_of(r.stdout) == 1 and MYELOMA_ITEM[1] in myeloma
