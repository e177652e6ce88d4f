"""The poll cycle (polls/cycle.py), the one path of `litwatch poll` and `litwatch run`
(issue 22), through real processes: the daemon with every source unreachable (a gate
resetting connections in front of each fake) attempts every query, feed, notice search
and Crossref, reports each failing, tries each again on its back-off, and once the
sources answer, every one succeeds; a feed shared by several queries is fetched once
and no query's other feeds are dropped for it; and a store error in the notice search
is the notice search's recorded failure under both commands.

Waits are on conditions (`wait_for`), never on the wall clock; the back-off's first
wait is shortened with LITWATCH_RETRY_SECONDS."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from helpers import TODAY, Run, basic_config, invoke, wait_for
from helpers.fake_crossref import FakeCrossref
from helpers.fake_eutils import FakeEutils
from helpers.feedhost import FeedHost, Reply
from helpers.gate import Gate
from test_changes import NOTICE_TERM
from test_long_keys import rss, rss_item


def _status(cfg: Path) -> dict[str, Any]:
    r = invoke("--config", str(cfg), "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.removesuffix("Z"))


def _errors(db: str) -> dict[tuple[str, str], int]:
    """How many failed polls each source has had (poll_state.errors)."""
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.text("SELECT query, source, errors FROM poll_state WHERE errors > 0"))
            return {(r.query, r.source): int(r.errors) for r in rows}
    finally:
        eng.dispose()


def _everything(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every query, feed and source of `status`, by name."""
    return {x["name"]: x for part in ("queries", "feeds", "sources") for x in status[part]}


def _summary(cfg: Path) -> str:
    """Each source's state in `status`, for a failure message."""
    found = _everything(_status(cfg))
    return "; ".join(
        f"{n}: ok {x['last_success'] or 'never'}, error {(x['last_error'] or '-')[:60]}"
        for n, x in sorted(found.items())
        if n in EXPECTED
    ) + (" (no notice search in status)" if "notices" not in found else "")


EXPECTED = {"trail", "myeloma", "press", "blood", "notices", "crossref"}
SOURCES = [("trail", "pubmed"), ("myeloma", "pubmed"), ("*", "feed:press"), ("*", "feed:blood")]
SOURCES += [("*", "notices"), ("*", "crossref")]


def test_unreachable_sources_under_run_are_each_tried_failed_retried_then_succeed(
    tmp_path: Path, eutils: FakeEutils
) -> None:
    """The README's `run` on a network that does not answer yet (issue 22): every query,
    feed (one shared by both queries, as fda-press in the example config), the notice
    search and Crossref are attempted and reported failing — none "succeeds" without a
    request — then tried again within seconds (the back-off, not the hourly interval),
    `status` showing when; once the sources answer, every one succeeds."""
    eutils.add("100", terms="TRAIL", edat=TODAY - timedelta(days=1), title="TRAIL paper")
    eutils.add("200", terms="multiple myeloma", edat=TODAY - timedelta(days=1), title="Myeloma paper")
    crossref = FakeCrossref().start()
    host = FeedHost().start()
    host.route("/press.xml", Reply(body=rss(rss_item("p-1", "TRAIL and myeloma press", "https://example.org/p1"))))
    host.route("/blood.xml", Reply(body=rss(rss_item("b-1", "Myeloma in Blood", "https://example.org/b1"))))
    db = f"sqlite:///{tmp_path / 'litwatch.db'}"
    with Gate(eutils.port) as g_ncbi, Gate(host.port) as g_feeds, Gate(crossref.port) as g_crossref:
        queries = """
queries:
  - name: trail
    pubmed: TRAIL
    feeds: [press]
    match: TRAIL
    every: 1h
  - name: myeloma
    pubmed: multiple myeloma
    feeds: [press, blood]
    match: myeloma
    every: 1h
"""
        extra = (
            "feeds:\n"
            + "".join(
                f"  - name: {f}\n    url: {g_feeds.base}/{f}.xml\n    retries: 0\n    timeout: 5\n"
                for f in ("press", "blood")
            )
            + f"crossref:\n  email: test@example.org\n  base_url: {g_crossref.base}/\n  retries: 0\n  backoff: 0.05\n"
        )
        digests = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail, myeloma]\n    every: 1h\n"
        cfg = basic_config(
            tmp_path, f"{g_ncbi.base}/entrez/eutils/", db=db, queries=queries, digests=digests, extra=extra
        )
        run = Run(cfg, tmp_path / "run.log", env={"LITWATCH_RETRY_SECONDS": "1"})
        try:
            # every source attempted and reported failing: none claims a success it never had
            def all_failing() -> dict[str, dict[str, Any]] | None:
                found = _everything(_status(cfg))
                failing = {n for n, x in found.items() if x["last_error"] and not x["last_success"]}
                return found if EXPECTED <= failing else None

            found = wait_for(
                all_failing,
                60,
                lambda: f"every query, feed, the notice search and Crossref failing; status: {_summary(cfg)}",
            )
            for name in ("trail", "myeloma"):
                # a failing query is polled again within minutes, not at its hourly interval
                assert _t(found[name]["next_run"]) - _t(found[name]["failing_since"]) <= timedelta(minutes=2)
            for name in ("press", "blood", "notices", "crossref"):
                assert _t(found[name]["next_retry"]) - _t(found[name]["failing_since"]) <= timedelta(minutes=2)
            # ... and is tried again, each of them, on its back-off
            wait_for(
                lambda: all(_errors(db).get(k, 0) >= 2 for k in SOURCES),
                60,
                f"every source tried again (errors so far: {_errors(db)})",
            )
            assert g_ncbi.refused and g_feeds.refused and g_crossref.refused
            # the network answers: every source succeeds at its next try
            for g in (g_ncbi, g_feeds, g_crossref):
                g.open()

            def all_ok() -> dict[str, dict[str, Any]] | None:
                found = _everything(_status(cfg))
                ok = {n for n, x in found.items() if x["last_success"] and not x["last_error"]}
                return found if EXPECTED <= ok else None

            found = wait_for(
                all_ok,
                90,
                lambda: f"every query, feed, the notice search and Crossref succeeding; status: {_summary(cfg)}",
            )
        finally:
            rc, _ = run.stop()
            crossref.stop()
            host.stop()
    log = run.log
    print("\n" + "\n".join(line for line in log.splitlines() if "poll" in line)[-4000:])
    assert rc == 0 and "Traceback" not in log
    assert found["trail"]["records"] == 2 and found["myeloma"]["records"] == 3  # its paper, press (, blood)
    assert "being fetched elsewhere; next time" not in log


def test_a_feed_shared_by_queries_is_fetched_once_and_no_query_loses_its_other_feeds(
    tmp_path: Path, eutils: FakeEutils
) -> None:
    """Four queries of one `run` scan one slow feed, each with a feed of its own (the
    example config's fda-press and blood-toc): the slow feed is fetched by one cycle,
    and every query's own feed is polled all the same — no "feed is being fetched
    elsewhere; next time" inside one process, which left a feed unpolled for a whole
    interval (issue 22)."""
    with FeedHost() as host:
        # slower than a query waits for a feed another job of the process is fetching
        host.route("/shared.xml", Reply(body=rss(rss_item("s-1", "TRAIL shared", "https://example.org/s")), delay=12))
        own = [f"own{i}" for i in range(4)]
        for f in own:
            host.route(f"/{f}.xml", Reply(body=rss(rss_item(f"{f}-1", f"TRAIL {f}", f"https://example.org/{f}"))))
        extra = "feeds:\n" + "".join(
            f"  - name: {f}\n    url: {host.url('/' + f + '.xml')}\n    retries: 0\n    timeout: 30\n"
            for f in ("shared", *own)
        )
        queries = "queries:\n" + "".join(
            f"  - name: q{i}\n    feeds: [shared, {f}]\n    match: TRAIL\n    every: 1h\n" for i, f in enumerate(own)
        )
        digests = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [q0]\n    every: 1h\n"
        cfg = basic_config(tmp_path, eutils.url, queries=queries, digests=digests, extra=extra)
        run = Run(cfg, tmp_path / "run.log")
        try:
            wait_for(lambda: all(host.hits(f"/{f}.xml") for f in own), 45, "every query's own feed polled")
            wait_for(lambda: _everything(_status(cfg))["shared"]["last_success"], 30, "the shared feed polled")
        finally:
            rc, _ = run.stop()
    assert rc == 0 and "Traceback" not in run.log
    assert len(host.hits("/shared.xml")) == 1  # one cycle fetched it for all four queries
    st = _everything(_status(cfg))
    assert all(st[f]["last_success"] and not st[f]["last_error"] for f in own)


def _refuse_notices(db: str) -> None:
    """A trigger refuses the notice record 900 (any store error a source's data can cause)."""
    eng = sa.create_engine(db)
    with eng.begin() as c:
        c.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.key = '900' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        )
    eng.dispose()


NOTICE_QUERY = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: {every}\n"
NOTICE_DIGEST = "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n    every: 1h\n"


def _notice_scene(tmp_path: Path, eutils: FakeEutils, name: str, every: str) -> tuple[Path, str]:
    """A stored paper, the notice search's watermark set, then an erratum notice naming
    the paper that the database refuses to store."""
    d = tmp_path / name
    d.mkdir()
    db = f"sqlite:///{d / 'litwatch.db'}"
    cfg = basic_config(d, eutils.url, db=db, queries=NOTICE_QUERY.format(every=every), digests=NOTICE_DIGEST)
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 0, r.stdout + r.stderr
    _refuse_notices(db)
    return cfg, db


def test_a_store_error_in_the_notice_search_is_its_recorded_failure_under_poll_and_run(
    tmp_path: Path, eutils: FakeEutils
) -> None:
    """`litwatch poll` and `litwatch run` go through one cycle: what the database refuses
    of the notice search is the notice search's failure, in `status`, under both (the
    daemon called it bare, so only its log said so)."""
    eutils.add("100", terms="TRAIL", edat=TODAY - timedelta(days=1), title="TRAIL paper")
    poll_cfg, _ = _notice_scene(tmp_path, eutils, "poll", "1h")
    run_cfg, _ = _notice_scene(tmp_path, eutils, "run", "2s")
    eutils.add(
        "900",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Erratum: TRAIL paper",
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "100"),),
    )
    r = invoke("--config", str(poll_cfg), "poll")
    print("\n" + r.stdout + r.stderr[-800:])
    assert "Traceback" not in r.stderr and r.returncode == 1
    assert "errors 1: notice search: could not store what it fetched: refused by a trigger" in r.stdout
    polled = _everything(_status(poll_cfg))["notices"]
    assert "refused by a trigger" in polled["last_error"] and polled["failing_since"]

    run = Run(run_cfg, tmp_path / "run.log")
    try:
        ran = wait_for(
            lambda: (n := _everything(_status(run_cfg)).get("notices")) and n["last_error"] and n,
            30,
            "the notice search's failure in status under `run`",
        )
    finally:
        rc, _ = run.stop()
    assert rc == 0 and "Traceback" not in run.log
    assert "refused by a trigger" in ran["last_error"] and ran["failing_since"]
    assert "notice search: could not store what it fetched" in ran["last_error"]
