"""Identifiers of any length, on SQLite and PostgreSQL (issue 13, case 5): a feed
entry's guid, link and DOI, an ETag, a Last-Modified and a feed URL as long as servers
make them are stored and found again; and a store error in one source is that source's
recorded failure, never the end of the poll cycle."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import sqlalchemy as sa

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils
from helpers.feedhost import FeedHost, Reply
from litwatch.records import Record
from litwatch.store import Store

LONG_GUID = "https://example.org/items?" + "&".join(f"p{i}=" + "v" * 40 for i in range(120))  # ~5,300 chars
LONG_LINK = "https://example.org/read?" + "x" * 3000
LONG_DOI = "10.1234/" + "d" * 3000
LONG_ETAG = '"' + "e" * 3000 + '"'
LONG_LAST_MODIFIED = "Tue, 24 Nov 2026 10:00:00 GMT" + " " * 200  # padding a server sent
NOW = datetime(2026, 11, 25, 6, 0)


def rss_item(guid: str, title: str, link: str, doi: str = "") -> str:
    ident = f"<dc:identifier>doi:{doi}</dc:identifier>" if doi else ""
    return (
        f"<item><title>{title}</title><link>{escape(link)}</link><guid isPermaLink='false'>{escape(guid)}</guid>"
        f"<description>TRAIL agonist news.</description>{ident}"
        "<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
    )


def rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>t</title><link>https://example.org/</link><description>x</description>{''.join(items)}"
        "</channel></rss>"
    ).encode()


def test_the_store_keeps_identifiers_of_any_length(store_url: str) -> None:
    store = Store(store_url)
    try:
        rec = Record(source="feed:long", key=LONG_GUID, title="TRAIL", url=LONG_LINK, doi=LONG_DOI)
        with store.transaction() as tx:
            ids = store.insert_records(tx, [(rec, "h" * 64)], NOW)
            rid = ids[LONG_GUID]
            store.add_hits(tx, [(rid, "trail", ("TRAIL",))], NOW)
            added = store.add_events(
                tx,
                [{"record_id": rid, "query": "trail", "kind": "new", "version_n": 1, "dedup": "first:" + LONG_GUID}],
                NOW,
            )
            again = store.add_events(
                tx,
                [{"record_id": rid, "query": "trail", "kind": "new", "version_n": 1, "dedup": "first:" + LONG_GUID}],
                NOW,
            )
            store.poll_ok(
                tx,
                "*",
                "feed:long",
                NOW,
                watermark=LONG_LINK,
                etag=LONG_ETAG,
                last_modified=LONG_LAST_MODIFIED,
                url=LONG_LINK,
            )
        with store.transaction() as tx:
            current = store.current(tx, "feed:long", [LONG_GUID])
            by_guid = store.find_records(tx, LONG_GUID)
            by_doi = store.find_records(tx, "https://doi.org/" + LONG_DOI.upper())
            state = store.poll_state(tx, "*", "feed:long")
    finally:
        store.close()
    assert (added, again) == (1, 0)  # the long dedup still dedups
    assert current[LONG_GUID].record.url == LONG_LINK and current[LONG_GUID].record.key == LONG_GUID
    assert by_guid == by_doi == [(rid, "feed:long", LONG_GUID)]
    assert (state.etag, state.last_modified, state.url, state.watermark) == (
        LONG_ETAG,
        LONG_LAST_MODIFIED,
        LONG_LINK,
        LONG_LINK,
    )
    print(
        f"\n{store_url.split(':')[0]}: guid {len(LONG_GUID)}, link {len(LONG_LINK)}, DOI {len(LONG_DOI)}, ETag {len(LONG_ETAG)} chars stored and found"
    )


def feeds_config(tmp_path: Path, eutils: FakeEutils, host: FeedHost, db: str, *feeds: str) -> Path:
    extra = "feeds:\n" + "".join(f"  - name: {f}\n    url: {host.url('/' + f + '.xml')}\n" for f in feeds)
    queries = f"""
queries:
  - name: trail
    pubmed: TRAIL
    feeds: [{", ".join(feeds)}]
    match: TRAIL
"""
    digests = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n"
    return basic_config(tmp_path, eutils.url, db=db, queries=queries, digests=digests, extra=extra)


def test_a_feed_with_long_identifiers_is_polled_and_the_cycle_goes_on(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    eutils.add("500", terms="TRAIL", edat=TODAY - timedelta(days=1), title="TRAIL agonists")
    long_path = "/" + "feed-" * 60  # the configured URL itself is 300+ characters
    with FeedHost() as host:
        host.route(
            "/long.xml",
            Reply(
                body=rss(rss_item(LONG_GUID, "TRAIL long one", LONG_LINK, LONG_DOI)),
                etag=LONG_ETAG,
                last_modified=LONG_LAST_MODIFIED.strip(),
            ),
        )
        host.redirect(long_path, "/long.xml", status=301)
        host.route("/zeta.xml", Reply(body=rss(rss_item("z-1", "TRAIL short one", "https://example.org/z1"))))
        cfg = feeds_config(tmp_path, eutils, host, store_url, "long", "zeta")
        text = cfg.read_text().replace(host.url("/long.xml"), host.url(long_path))
        cfg.write_text(text)
        r = invoke("--config", str(cfg), "poll")
        print("\n" + r.stdout + r.stderr[-2000:])
        assert "Traceback" not in r.stderr
        assert r.returncode == 0, r.stdout + r.stderr
        assert "long [feed:long]: found 1, new 1, changed 0, events 1, errors 0" in r.stdout
        assert "zeta [feed:zeta]: found 1, new 1" in r.stdout
        assert "notices [pubmed]" in r.stdout
        r = invoke("--config", str(cfg), "poll")  # conditional, with the long ETag, at the noted long URL
        assert r.returncode == 0 and "long [feed:long]: found 0" in r.stdout, r.stdout + r.stderr
        assert host.hits("/long.xml")[-1].headers["If-None-Match"] == LONG_ETAG
        hist = invoke("--config", str(cfg), "history", LONG_GUID)
        assert hist.returncode == 0 and "1 version(s)" in hist.stdout, hist.stderr[:300]
        r = invoke("--config", str(cfg), "digest", "--dry-run")
        assert "TRAIL long one" in r.stdout and "TRAIL short one" in r.stdout


def test_a_store_error_in_one_feed_is_its_failure_and_the_cycle_goes_on(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    """The database refuses one feed's entries (a trigger stands in for any store error a
    source's data can cause): that feed fails alone, recorded in `status`; the feeds
    after it and the notice search still run."""
    eutils.add("500", terms="TRAIL", edat=TODAY - timedelta(days=1), title="TRAIL agonists")
    Store(store_url).close()
    eng = sa.create_engine(store_url)
    with eng.begin() as c:
        if store_url.startswith("sqlite"):
            c.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.source = 'feed:alpha' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
                )
            )
        else:
            c.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.source = 'feed:alpha' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            c.execute(sa.text("CREATE TRIGGER refuse BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION refuse()"))
    eng.dispose()
    with FeedHost() as host:
        host.route("/alpha.xml", Reply(body=rss(rss_item("a-1", "TRAIL alpha", "https://example.org/a1"))))
        host.route("/zeta.xml", Reply(body=rss(rss_item("z-1", "TRAIL zeta", "https://example.org/z1"))))
        cfg = feeds_config(tmp_path, eutils, host, store_url, "alpha", "zeta")
        r = invoke("--config", str(cfg), "poll")
        print("\n" + r.stdout + r.stderr[-1500:])
        assert "Traceback" not in r.stderr
        assert r.returncode == 1
        assert (
            "alpha [feed:alpha]: found 1, new 0, changed 0, events 0, errors 1: feed alpha: could not store" in r.stdout
        )
        assert "refused by a trigger" in r.stdout
        assert "zeta [feed:zeta]: found 1, new 1, changed 0, events 1, errors 0" in r.stdout
        assert "notices [pubmed]" in r.stdout
        st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
        alpha = next(f for f in st["feeds"] if f["name"] == "alpha")
        assert "refused by a trigger" in alpha["last_error"] and alpha["failing_since"]


def test_a_store_error_in_one_pubmed_query_is_its_failure_and_the_cycle_goes_on(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    """The database refuses one PubMed query's record: that query fails alone, recorded
    in `status`; the next query and the notice search still run, and the next poll,
    once the database accepts it, stores the record (its watermark did not move)."""
    eutils.add("501", terms="TRAIL", edat=TODAY - timedelta(days=1), title="TRAIL agonists")
    eutils.add("502", terms="multiple myeloma", edat=TODAY - timedelta(days=1), title="Myeloma")
    Store(store_url).close()
    eng = sa.create_engine(store_url)
    with eng.begin() as c:
        if store_url.startswith("sqlite"):
            c.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.key = '501' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
                )
            )
        else:
            c.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.key = '501' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            c.execute(sa.text("CREATE TRIGGER refuse BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION refuse()"))
    cfg = basic_config(tmp_path, eutils.url, db=store_url)
    r = invoke("--config", str(cfg), "poll")
    print("\n" + r.stdout + r.stderr[-800:])
    assert "Traceback" not in r.stderr
    assert r.returncode == 1
    assert "trail [pubmed]: found 1, new 0, changed 0, events 0, errors 1: query trail: could not store" in r.stdout
    assert "myeloma [pubmed]: found 1, new 1, changed 0, events 1, errors 0" in r.stdout
    assert "notices [pubmed]" in r.stdout
    st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
    trail = next(q for q in st["queries"] if q["name"] == "trail")
    assert "refused by a trigger" in trail["last_error"] and trail["failing_since"]
    with eng.begin() as c:
        c.execute(sa.text("DROP TRIGGER refuse" + ("" if store_url.startswith("sqlite") else " ON records")))
    eng.dispose()
    r = invoke("--config", str(cfg), "poll", "--query", "trail")
    assert "trail [pubmed]: found 1, new 1, changed 0, events 1, errors 0" in r.stdout, r.stdout + r.stderr
