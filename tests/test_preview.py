"""`litwatch check --online` through the command line, against the fake E-utilities and
a local feed host: counts over `first_lookback_days` and the last week, three recent
titles, each feed's answer and matches per query; and nothing stored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from helpers import TODAY, basic_config, invoke
from helpers.fake_crossref import FakeCrossref
from helpers.fake_crossref import Fault as CrossrefFault
from helpers.fake_eutils import FakeEutils, Fault
from helpers.feedhost import FeedHost, Reply

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Press</title><link>https://example.org/</link>
<item><guid>p1</guid><title>FDA approves a TRAIL agonist</title><link>https://example.org/1</link>
<description>Aponermin for multiple myeloma.</description></item>
<item><guid>p2</guid><title>Myeloma drug label updated</title><link>https://example.org/2</link></item>
<item><guid>p3</guid><title>Food safety recall</title><link>https://example.org/3</link></item>
</channel></rss>"""

QUERIES = """
queries:
  - name: trail
    pubmed: TRAIL
    feeds: [press]
    match: TRAIL OR aponermin
  - name: myeloma
    pubmed: multiple myeloma
    feeds: [press]
    match: myeloma
  - name: recalls
    feeds: [press]
    match: recall
"""


def _config(tmp_path: Path, eutils: FakeEutils, feeds: str) -> Path:
    return basic_config(
        tmp_path,
        eutils.url,
        queries=QUERIES,
        digests="",
        extra=f"feeds:\n{feeds}",
    )


def test_check_online_counts_titles_and_feed_matches(tmp_path: Path, eutils: FakeEutils) -> None:
    # TRAIL: 4 records entered in the last week, 1 more in the first poll's 30 days, 1 older.
    for pmid, days_ago in (("101", 1), ("102", 2), ("103", 5), ("104", 6), ("90", 20), ("80", 100)):
        eutils.add(pmid, terms="TRAIL", edat=TODAY - timedelta(days=days_ago), title=f"TRAIL paper {pmid}")
    with FeedHost() as host:
        host.feed("/press.rss", RSS)
        cfg = _config(tmp_path, eutils, f"  - name: press\n    url: {host.url('/press.rss')}\n")
        r = invoke("--config", str(cfg), "check", "--online")
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "trail: 6 records; PubMed reads it as: TRAIL" in lines
    assert (
        "trail: the first poll would find 5 (first_lookback_days: 30); 4 entered in the last 7 days; recent:" in lines
    )
    titles = [line for line in lines if line.startswith("  ")]
    assert len(titles) == 3 and all("TRAIL paper 10" in t for t in titles), titles
    assert {t.split()[2].rstrip(":") for t in titles} <= {"101", "102", "103", "104"}
    assert "myeloma: the first poll would find 0 (first_lookback_days: 30); 0 entered in the last 7 days" in lines
    assert "feed press: answers, 3 items now; trail matches 1, myeloma matches 2, recalls matches 1" in lines
    # The windows are entry dates up to today, as a new query's first poll asks for them.
    windows = {(q.params.get("datetype"), q.params.get("mindate")) for q in eutils.requests if q.utility == "esearch"}
    assert ("edat", (TODAY - timedelta(days=30)).strftime("%Y/%m/%d")) in windows
    assert ("edat", (TODAY - timedelta(days=7)).strftime("%Y/%m/%d")) in windows
    assert eutils.count("efetch") == 1  # one request for the three titles
    # It stored nothing: no database, no outbox.
    assert not (tmp_path / "litwatch.db").exists() and not (tmp_path / "outbox").exists()


def test_check_online_reports_a_feed_that_does_not_answer(tmp_path: Path, eutils: FakeEutils) -> None:
    with FeedHost() as host:
        host.feed("/press.rss", RSS)
        host.route("/gone.rss", Reply(status=404, body=b"not here", content_type="text/plain"))
        cfg = _config(
            tmp_path,
            eutils,
            f"  - name: press\n    url: {host.url('/press.rss')}\n"
            f"  - name: gone\n    url: {host.url('/gone.rss')}\n    retries: 0\n",
        )
        r = invoke("--config", str(cfg), "check", "--online")
    print(r.stdout, r.stderr)
    assert r.returncode == 1, r.stderr
    assert "feed press: answers, 3 items now" in r.stdout
    gone = [line for line in r.stdout.splitlines() if line.startswith("feed gone:")]
    assert len(gone) == 1 and gone[0].startswith("feed gone: does not answer: HTTP 404 from http://127.0.0.1:"), gone
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "litwatch.db").exists()


def test_check_online_reports_each_pubmed_warning_once(tmp_path: Path, eutils: FakeEutils) -> None:
    warned = (
        b"<eSearchResult><Count>0</Count><RetMax>0</RetMax><RetStart>0</RetStart><IdList/>"
        b"<ErrorList><PhraseNotFound>TRAIL</PhraseNotFound></ErrorList></eSearchResult>"
    )
    eutils.faults += [Fault("esearch", 200, body=warned, term="TRAIL") for _ in range(3)]  # every search of it
    cfg = basic_config(tmp_path, eutils.url)
    r = invoke("--config", str(cfg), "check", "--online")
    print(r.stdout, r.stderr)
    assert r.returncode == 2
    assert [line for line in r.stderr.splitlines() if "PhraseNotFound" in line] == [
        "trail: warning: PhraseNotFound: TRAIL"
    ]


def _crossref_config(tmp_path: Path, eutils: FakeEutils, url: str) -> Path:
    crossref = f"crossref:\n  email: team@example.org\n  base_url: {url}\n  retries: 0\n"
    return basic_config(tmp_path, eutils.url, extra=crossref)


def test_check_online_says_crossref_answers_and_in_which_pool(tmp_path: Path, eutils: FakeEutils) -> None:
    fake = FakeCrossref().start()
    try:
        fake.add_real(indexed=TODAY - timedelta(days=1))  # some of the real works are notices
        r = invoke("--config", str(_crossref_config(tmp_path, eutils, fake.url)), "check", "--online")
    finally:
        fake.stop()
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "crossref: answers; pool polite-array: 3 request(s) per 1s, 3 at once" in lines
    notices = sum(1 for w in fake.works.values() if w.message.get("update-to"))
    assert notices > 0
    assert f"crossref: {notices} update notices indexed in the last 7 days" in lines
    (req,) = fake.requests  # one request, on the list route polls use, asking for no rows
    assert req.path == "/works" and req.params["rows"] == ["0"] and req.params["mailto"] == ["team@example.org"]
    assert "mailto:team@example.org" in req.user_agent
    assert not (tmp_path / "litwatch.db").exists()


def test_check_online_reports_crossref_not_answering(tmp_path: Path, eutils: FakeEutils) -> None:
    fake = FakeCrossref().start()
    try:
        fake.faults.append(CrossrefFault(status=503, body=b"down for maintenance"))
        r = invoke("--config", str(_crossref_config(tmp_path, eutils, fake.url)), "check", "--online")
    finally:
        fake.stop()
    print(r.stdout, r.stderr)
    assert r.returncode == 1, r.stderr
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("crossref:")]
    assert line.startswith("crossref: does not answer:") and "503" in line
    assert "Traceback" not in r.stderr


def test_check_online_reads_the_regulators_sources_as_a_poll_would(tmp_path: Path, eutils: FakeEutils) -> None:
    """openfda and ema feeds are checked through their own sources (a Drugs@FDA search
    over the first poll's window, the EMA medicines file), not read as RSS."""
    from helpers.fake_openfda import FakeOpenFda
    from test_example_approvals import ema_file, trailnova

    with FakeOpenFda([trailnova(TODAY - timedelta(days=5))]) as fda, FeedHost() as host:
        host.feed("/medicines.json", ema_file(TODAY - timedelta(days=20), TODAY - timedelta(days=3)))
        feeds = (
            f"  - name: fda\n    kind: openfda\n    url: {fda.search_url}\n"
            f"  - name: ema\n    kind: ema\n    url: {host.url('/medicines.json')}\n"
        )
        queries = "queries:\n  - name: trail\n    feeds: [fda, ema]\n    match: aponermin\n"
        cfg = basic_config(tmp_path, eutils.url, queries=queries, digests="", extra=f"feeds:\n{feeds}")
        r = invoke("--config", str(cfg), "check", "--online")
        asked = len(fda.requests)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert "feed fda: answers, 1 items now; trail matches 1" in r.stdout
    assert "feed ema: answers, 2 items now; trail matches 2" in r.stdout  # the opinion and the authorisation
    assert asked == 1 and not (tmp_path / "litwatch.db").exists()
