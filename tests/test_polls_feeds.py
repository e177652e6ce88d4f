"""Feeds end to end: conditional polling, matching with hit terms, approvals from an
`approvals: true` feed, updates of entries that once matched, one line per paper when a
feed item and a PubMed record share a DOI, and broken feeds that fail alone."""

from __future__ import annotations

import json
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils
from helpers.feedhost import FeedHost, Reply


def rss(*items: tuple[str, str, str, str]) -> bytes:
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{g}</guid><description>{d}</description>"
        f"<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
        for g, t, link, d in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>FDA press</title>'
        f"<link>https://www.fda.gov/</link><description>x</description>{body}</channel></rss>"
    ).encode()


FDA_1 = rss(
    (
        "fda-1",
        "FDA approves aponermin for relapsed multiple myeloma",
        "https://www.fda.gov/news/aponermin",
        "Aponermin, a TRAIL agonist, is approved.",
    ),
    ("fda-2", "FDA warns about contaminated eye drops", "https://www.fda.gov/news/drops", "Unrelated."),
)
TOC_1 = (
    b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">'
    b"<title>Blood TOC</title><id>urn:blood</id><updated>2026-11-24T00:00:00Z</updated>"
    b"<entry><id>urn:blood:1</id><title>Death receptor 5 agonist in myeloma &lt;script&gt;x&lt;/script&gt;</title>"
    b'<link href="https://ashpublications.org/blood/1"/><updated>2026-11-24T00:00:00Z</updated>'
    b"<summary>A DR5 agonist study.</summary><prism:doi>10.1182/blood.2026.1</prism:doi></entry>"
    b"</feed>"
)


def config(tmp_path: Path, eutils: FakeEutils, host: FeedHost) -> Path:
    extra = f"""
feeds:
  - name: fda-press
    url: {host.url("/fda.xml")}
    approvals: true
  - name: blood-toc
    url: {host.url("/blood.xml")}
  - name: broken
    url: {host.url("/broken.xml")}
    timeout: 2
"""
    queries = """
queries:
  - name: trail
    pubmed: TRAIL
    feeds: [fda-press, blood-toc, broken]
    match: 'TRAIL OR aponermin OR "death receptor 5"'
"""
    digests = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n"
    return basic_config(tmp_path, eutils.url, queries=queries, digests=digests, extra=extra)


def last_message(outbox: Path) -> tuple[str, str, str]:
    f = max(outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    msg = message_from_bytes(f.read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return str(msg["Subject"]), text, msg.get_body(("html",)).get_content()


def test_feeds_end_to_end(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add(
        "500",
        terms="TRAIL",
        edat=TODAY - timedelta(days=1),
        title="Death receptor 5 agonist in myeloma",
        doi="10.1182/BLOOD.2026.1",
    )
    with FeedHost() as host:
        host.route("/fda.xml", Reply(body=FDA_1, etag='"f1"', last_modified="Tue, 24 Nov 2026 10:00:00 GMT"))
        host.route("/blood.xml", Reply(body=TOC_1, etag='"b1"', content_type="application/atom+xml"))
        host.route("/broken.xml", Reply(body=b"<rss><channel><title>oops</ti", content_type="text/html"))
        cfg = config(tmp_path, eutils, host)
        r = invoke("--config", str(cfg), "poll")
        assert r.returncode == 1  # the broken feed failed ...
        assert "broken [feed:broken]" in r.stdout and "errors 1" in r.stdout
        assert "fda-press [feed:fda-press]: found 2, new 2" in r.stdout  # ... and the others ran
        r = invoke("--config", str(cfg), "digest")
        assert r.returncode == 0, r.stdout + r.stderr
        subject, text, html = last_message(tmp_path / "outbox")
        assert subject == "d: 1 approval, 1 new paper"
        approvals = text[text.index("== Approvals") : text.index("== New papers")]
        assert "FDA approves aponermin for relapsed multiple myeloma" in approvals
        assert "(aponermin, TRAIL)" in approvals or "(TRAIL, aponermin)" in approvals
        assert "eye drops" not in text
        # the PubMed record and the TOC entry share a DOI: one item, both links
        assert text.count("Death receptor 5 agonist in myeloma") == 1
        assert "https://pubmed.ncbi.nlm.nih.gov/500/" in text and "https://ashpublications.org/blood/1" in text
        assert "<script>" not in html
        assert "broken" in text[text.index("Sources failing") :]

        # second poll, nothing changed: only conditional requests, answered 304
        before = {p: len(host.hits(p)) for p in ("/fda.xml", "/blood.xml")}
        r = invoke("--config", str(cfg), "poll", "--query", "trail")
        for p in ("/fda.xml", "/blood.xml"):
            new = host.hits(p)[before[p] :]
            assert len(new) == 1 and new[0].headers.get("If-None-Match")  # answered 304 by the host
        assert "fda-press [feed:fda-press]: found 0, new 0, changed 0, events 0, errors 0" in r.stdout

        # an entry that matched changes and no longer matches: still an update
        host.route(
            "/fda.xml",
            Reply(
                body=FDA_1.replace(
                    b"FDA approves aponermin for relapsed multiple myeloma", b"FDA approves a new drug"
                ).replace(b"Aponermin, a TRAIL agonist, is approved.", b"Approved."),
                etag='"f2"',
            ),
        )
        invoke("--config", str(cfg), "poll")
        r = invoke("--config", str(cfg), "digest")
        subject, text, _ = last_message(tmp_path / "outbox")
        assert subject == "d: 1 update" and "FDA approves a new drug" in text
        assert "   2026-11-24\n" in text.replace("\r\n", "\n") and "T10:00:00Z" not in text  # the date, not the time
        assert (
            "Changed title:\n     - FDA approves aponermin for relapsed multiple myeloma\n     + FDA approves a new drug"
            in text
        )

        hist = invoke("--config", str(cfg), "history", "fda-1")
        assert hist.returncode == 0 and "2 version(s)" in hist.stdout

        st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
        broken = next(f for f in st["feeds"] if f["name"] == "broken")
        assert broken["last_error"] and broken["failing_since"]


def test_gone_feed_is_disabled_with_a_clear_report(tmp_path: Path, eutils: FakeEutils) -> None:
    with FeedHost() as host:
        host.route("/fda.xml", Reply(status=410))
        host.route("/blood.xml", Reply(body=TOC_1))
        host.route("/broken.xml", Reply(body=TOC_1))
        cfg = config(tmp_path, eutils, host)
        r = invoke("--config", str(cfg), "poll")
        assert r.returncode == 1 and "gone (HTTP 410" in r.stdout
        r = invoke("--config", str(cfg), "poll")
        assert "disabled" in r.stdout and len(host.hits("/fda.xml")) == 1
