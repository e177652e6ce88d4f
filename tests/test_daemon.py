"""`litwatch run` as a real subprocess on SQLite with short intervals: first mails,
repeat polls, SIGTERM, SIGHUP reload, catch-up after a long stop, the single-instance
lock, the health endpoints, and SIGKILLs at random moments delivering every event once.

No sleeps longer than needed: every wait polls for its condition with a deadline."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, Run, basic_config, daemon_env, free_port, invoke, run_cli, wait_for
from helpers.fake_eutils import FakeEutils, is_poll_search

wait_until = wait_for  # the name tests imported from here before tests/helpers/


def searches(fake: FakeEutils, term: str) -> list[float]:
    """When each poll of `term` began: its edat esearch (one per poll)."""
    with fake.lock:
        return [
            r.at
            for r in fake.requests
            if is_poll_search(r)
            and (r.params.get("term") == term or r.params.get("term", "").startswith(f"({term}) AND ("))
        ]


def emls(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.eml") if not p.name.startswith("."))


QUERIES_2S = """
queries:
  - name: trail
    pubmed: TRAIL
    every: 2s
  - name: myeloma
    pubmed: multiple myeloma
    every: 2s
"""
DIGEST_2S = """
digests:
  - name: weekly
    to: [team@example.org]
    queries: [trail, myeloma]
    every: 2s
"""


def api_key(cfg: Path) -> Path:
    """10 requests/s instead of 3, so that polls of several queries do not queue."""
    cfg.write_text(cfg.read_text().replace("  email: test@example.org\n", "  email: test@example.org\n  api_key: k\n"))
    return cfg


def _seed(fake: FakeEutils, n: int = 2) -> None:
    for i in range(n):
        fake.add(f"{100 + i}", terms="TRAIL", edat=TODAY - timedelta(days=2), title=f"TRAIL paper {i}")
        fake.add(f"{200 + i}", terms="multiple myeloma", edat=TODAY - timedelta(days=2), title=f"Myeloma paper {i}")


def test_first_mails_repeat_polls_and_sigterm(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    cfg = api_key(basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests=DIGEST_2S))
    run = Run(cfg, tmp_path / "run.log")
    try:
        mails = wait_for(lambda: emls(tmp_path / "outbox"), 15, "the first digest mail")
        body = mails[0].read_text(encoding="utf-8")
        assert "TRAIL paper 0" in body and "Myeloma paper 1" in body
        wait_for(lambda: len(searches(eutils, "TRAIL")) >= 3, 15, "three polls of TRAIL")
        times = searches(eutils, "TRAIL")
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # every 2s, once each time (requests wait a little in the client's rate limiter)
        assert all(1.0 <= g <= 3.5 for g in gaps) and 1.5 <= sum(gaps) / len(gaps) <= 2.6, gaps
        # a paper that appears later goes out in the next digest, once
        eutils.add("300", terms="TRAIL", edat=TODAY, mdat=TODAY - timedelta(days=1), title="Later TRAIL paper")
        wait_for(
            lambda: any("Later TRAIL paper" in p.read_text(encoding="utf-8") for p in emls(tmp_path / "outbox")),
            15,
            "the later paper mailed",
        )
    finally:
        rc, took = run.stop()
    log = run.log
    print(f"\nfirst mails: {len(emls(tmp_path / 'outbox'))} mails, TRAIL polled {len(searches(eutils, 'TRAIL'))}x")
    assert rc == 0 and took < 10, (rc, took, log[-2000:])
    assert re.search(r"level=INFO logger=litwatch.polls.pubmed poll query=trail source=pubmed found=\d+", log)
    assert re.search(r"digest name=weekly messages=1 sent=1 failed=0", log)
    assert "stopped instance=" in log and "Traceback" not in log
    later = [p for p in emls(tmp_path / "outbox") if "Later TRAIL paper" in p.read_text(encoding="utf-8")]
    assert len(later) == 1


def test_sigterm_during_a_stuck_poll_exits_0_within_10s(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    eutils.delay = 30  # PubMed hangs: the poll cannot finish in time and is abandoned
    cfg = basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests=DIGEST_2S)
    cfg.write_text(cfg.read_text().replace("timeout: 5", "timeout: 60"))
    run = Run(cfg, tmp_path / "run.log")
    try:
        wait_for(lambda: searches(eutils, "TRAIL"), 15, "a poll under way")
    finally:
        rc, took = run.stop()
    print(f"\nSIGTERM during a stuck poll: exit {rc} after {took:.1f}s")
    assert rc == 0 and took < 10, run.log[-2000:]
    assert "abandoned_jobs=" in run.log
    eutils.delay = 0
    r = invoke("--config", str(cfg), "poll")  # nothing half-written is in the way
    assert r.returncode == 0, r.stderr


def test_sighup_reloads_a_good_config_and_keeps_the_old_on_a_bad_one(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    one = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: 2s\n"
    cfg = basic_config(tmp_path, eutils.url, queries=one, digests="")
    run = Run(cfg, tmp_path / "run.log")
    try:
        run.wait_log("run started")
        wait_for(lambda: searches(eutils, "TRAIL"), 15, "the first poll")
        assert not searches(eutils, "multiple myeloma")
        good = basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests=DIGEST_2S)
        assert good == cfg
        run.proc.send_signal(signal.SIGHUP)
        run.wait_log("config reloaded")
        wait_for(lambda: searches(eutils, "multiple myeloma"), 10, "the new query polled")
        wait_for(lambda: emls(tmp_path / "outbox"), 10, "the new digest sent")
        cfg.write_text(cfg.read_text().replace("every: 2s", "every: often", 1))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_log("config reload failed")
        before = len(searches(eutils, "TRAIL"))
        wait_for(lambda: len(searches(eutils, "TRAIL")) >= before + 2, 10, "polling goes on with the old config")
    finally:
        rc, _ = run.stop()
    failed = [line for line in run.log.splitlines() if "config reload failed" in line]
    print("\nbad reload logged as:", failed)
    assert rc == 0
    assert len(failed) == 1 and "queries[0].every" in failed[0] and "not an interval" in failed[0]
    assert "Traceback" not in run.log


def _shift_back(db: str, hours: int) -> None:
    """Pretend the service was down for `hours`: move every 'last done' time back."""
    eng = sa.create_engine(db)
    with eng.begin() as c:
        for table, cols in (("poll_state", ("last_ok",)), ("leases", ("last_run",)), ("digest_state", ("last_run",))):
            for col in cols:
                c.execute(sa.text(f"UPDATE {table} SET {col} = datetime({col}, '-{hours} hours')"))
        c.execute(sa.text("UPDATE leases SET next_run = NULL"))
    eng.dispose()


def _planned(db: str) -> dict[str, datetime]:
    """When the daemon plans to run each task next (leases.next_run, the database's clock)."""
    eng = sa.create_engine(db)
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT task, next_run FROM leases WHERE next_run IS NOT NULL")).all()
    eng.dispose()
    return {task: at if isinstance(at, datetime) else datetime.fromisoformat(at) for task, at in rows}


TASKS = {"poll:trail", "poll:myeloma", "digest:weekly"}  # and the notices poll


def _db_now() -> datetime:
    """SQLite's clock: this host's, naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def test_catch_up_after_a_stop_longer_than_the_interval(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    queries = QUERIES_2S.replace("every: 2s", "every: 1h")
    digests = DIGEST_2S.replace("every: 2s", "every: 1h")
    cfg = basic_config(tmp_path, eutils.url, queries=queries, digests=digests)
    db = f"sqlite:///{tmp_path / 'litwatch.db'}"
    run = Run(cfg, tmp_path / "run1.log")  # first start: polls at once, the digest waits its hour
    wait_for(lambda: searches(eutils, "TRAIL") and searches(eutils, "multiple myeloma"), 15, "first polls")
    run.wait_log("poll query=myeloma")
    assert run.stop()[0] == 0
    assert not emls(tmp_path / "outbox")
    # a restart within the hour polls nothing at once
    run = Run(cfg, tmp_path / "run2.log")
    run.wait_log("run started")  # the tasks are planned by then: none at once
    planned = _planned(db)
    assert TASKS <= set(planned) and all(at > _db_now() + timedelta(minutes=50) for at in planned.values()), planned
    assert run.stop()[0] == 0
    assert len(searches(eutils, "TRAIL")) == 1 and "catch-up" not in run.log
    # down for two hours, during which a paper appears
    _shift_back(db, 2)
    eng = sa.create_engine(db)
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO digest_state (digest, last_run) VALUES ('weekly', datetime('now', '-2 hours'))"))
    eng.dispose()
    eutils.add("300", terms="TRAIL", edat=TODAY, mdat=TODAY - timedelta(days=1), title="Paper from the gap")
    run = Run(cfg, tmp_path / "run3.log")
    try:
        wait_for(lambda: len(searches(eutils, "TRAIL")) == 2, 10, "the catch-up poll")
        wait_for(lambda: emls(tmp_path / "outbox"), 10, "the catch-up digest")
        wait_for(  # every task ran and is planned an hour out: nothing more comes
            lambda: (
                TASKS <= set(planned := _planned(db))
                and all(at > _db_now() + timedelta(minutes=50) for at in planned.values())
            ),
            30,
            lambda: f"every task planned an hour out: {_planned(db)} at {_db_now()}",
        )
    finally:
        rc, _ = run.stop()
    log = run.log
    print(
        "\ncatch-up:", [line.split("logger=litwatch.scheduler ")[-1] for line in log.splitlines() if "catch-up" in line]
    )
    assert rc == 0
    assert "catch-up task=poll:trail" in log and "catch-up task=digest:weekly" in log
    assert len(emls(tmp_path / "outbox")) == 1 and len(re.findall(r"digest name=weekly", log)) == 1
    assert "Paper from the gap" in emls(tmp_path / "outbox")[0].read_text(encoding="utf-8")
    assert len(searches(eutils, "TRAIL")) == 2


def test_a_second_instance_through_a_hard_link_to_the_sqlite_file_is_refused(
    tmp_path: Path, eutils: FakeEutils
) -> None:
    """The single-instance lock is the database file's own: a second `run` given another
    name of the same file (a hard link) is refused as well."""
    cfg = basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests="")
    run = Run(cfg, tmp_path / "run.log")
    try:
        run.wait_log("run started")
        (tmp_path / "other").mkdir()
        os.link(tmp_path / "litwatch.db", tmp_path / "other" / "same.db")
        cfg2 = basic_config(tmp_path / "other", eutils.url, queries=QUERIES_2S, digests="")
        assert str(tmp_path / "other" / "litwatch.db") in cfg2.read_text()
        cfg2.write_text(cfg2.read_text().replace("other/litwatch.db", "other/same.db"))
        second = run_cli("--config", str(cfg2), "run", env=daemon_env(), timeout=30)
    finally:
        rc, _ = run.stop()
    print("\nsecond instance through a hard link:", second.returncode, second.stderr.strip())
    assert second.returncode == 2, second.stderr
    assert "another `litwatch run` is already using" in second.stderr and "Traceback" not in second.stderr
    assert rc == 0


def test_a_second_instance_on_sqlite_is_refused(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests="")
    run = Run(cfg, tmp_path / "run.log")
    try:
        run.wait_log("run started")
        second = run_cli("--config", str(cfg), "run", env=daemon_env(), timeout=30)
    finally:
        rc, _ = run.stop()
    print("\nsecond instance:", second.returncode, second.stderr.strip())
    assert second.returncode == 2
    assert "another `litwatch run` is already using" in second.stderr and "PostgreSQL" in second.stderr
    assert "Traceback" not in second.stderr
    assert rc == 0
    # once the first one is gone, a new one starts fine
    again = Run(cfg, tmp_path / "run2.log")
    again.wait_log("run started")
    assert again.stop()[0] == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_endpoints(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    port = free_port()
    cfg = basic_config(tmp_path, eutils.url, queries=QUERIES_2S, digests=DIGEST_2S, extra=f"health_port: {port}\n")
    run = Run(cfg, tmp_path / "run.log")
    try:
        wait_for(lambda: emls(tmp_path / "outbox"), 15, "a mail")
        wait_for(  # the file is written before the daemon counts the mail sent
            lambda: re.search(r"^litwatch_mails_sent_total [1-9]", _get(f"http://127.0.0.1:{port}/metrics")[1], re.M),
            15,
            "the mail counted in /metrics",
        )
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body.startswith("ok"), body
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404
    finally:
        rc, _ = run.stop()
    assert rc == 0 and status == 200
    values = dict(re.findall(r"^(litwatch_\w+) (\S+)$", metrics, re.M))
    print("\nmetrics:", values)
    assert "# TYPE litwatch_polls_total counter" in metrics and "# TYPE litwatch_outbox_queued gauge" in metrics
    assert int(values["litwatch_polls_total"]) >= 2 and int(values["litwatch_events_total"]) == 4
    assert int(values["litwatch_mails_sent_total"]) >= 1 and values["litwatch_outbox_queued"] == "0"
    assert values["litwatch_poll_errors_total"] == "0" and values["litwatch_mail_failures_total"] == "0"


def test_healthz_is_503_when_the_scheduler_is_not_running(tmp_path: Path) -> None:
    from litwatch.config import Settings
    from litwatch.scheduler import Daemon
    from litwatch.service import Service

    settings = Settings(database=f"sqlite:///{tmp_path / 'x.db'}")
    daemon = Daemon(tmp_path / "litwatch.yaml", settings)
    daemon.service = Service(settings)
    from apscheduler.schedulers.background import BackgroundScheduler

    daemon.scheduler = BackgroundScheduler()  # never started
    from litwatch.web.app import make_app
    from litwatch.web.server import WebServer

    app = make_app(daemon.service, settings, health=daemon.health, metrics=daemon.render_metrics, pages=False)
    server = WebServer(app, port=0).start()
    try:
        status, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        _, metrics = _get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
        daemon.service.close()
    assert status == 503 and "scheduler not running" in body
    assert "litwatch_outbox_queued 0" in metrics


@pytest.mark.slow
def test_sigkill_at_random_moments_delivers_every_event_once(tmp_path: Path, eutils: FakeEutils) -> None:
    """SIGKILL `litwatch run` at random moments while PubMed keeps changing; at the end
    every event is bound to exactly one sent message per recipient, and that message is
    in the file outbox."""
    rng = random.Random(11)
    for i in range(20):
        eutils.add(str(1000 + i), terms="TRAIL", edat=TODAY - timedelta(days=3), title=f"TRAIL paper {i}")
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: 1s\n"
    digests = "digests:\n  - name: d\n    to: [a@example.org, b@example.org]\n    queries: [trail]\n    every: 1s\n"
    cfg = api_key(basic_config(tmp_path, eutils.url, queries=queries, digests=digests))
    cfg.write_text(cfg.read_text().replace("  timeout: 5\n", "  timeout: 5\n  batch_size: 5\n"))
    eutils.delay = 0.02
    kills = 0
    for round_ in range(14):
        # PubMed changes between kills: new papers, and a revised title
        eutils.add(str(2000 + round_), terms="TRAIL", edat=TODAY, mdat=TODAY - timedelta(days=1), title=f"New {round_}")
        if round_ % 3 == 0:
            eutils.change(str(1000 + round_), mdat=TODAY, title=f"TRAIL paper {round_} (revised)")
        run = Run(cfg, tmp_path / f"run{round_}.log")
        time.sleep(rng.uniform(0.8, 3.5))
        if run.proc.poll() is None:
            run.kill()
            kills += 1
    eutils.delay = 0
    polled_before = len(searches(eutils, "TRAIL"))
    final = Run(cfg, tmp_path / "final.log")  # runs until everything is out
    db = sa.create_engine(f"sqlite:///{tmp_path / 'litwatch.db'}")

    def settled() -> bool:
        with db.connect() as c:
            events = c.execute(sa.text("select count(*) from events")).scalar_one()
            bound = c.execute(sa.text("select count(*) from deliveries")).scalar_one()
            queued = c.execute(sa.text("select count(*) from outbox where state != 'sent'")).scalar_one()
        polled = len(searches(eutils, "TRAIL")) >= polled_before + 2
        return polled and events >= 20 + 14 and bound == 2 * events and queued == 0

    try:
        # on a loaded machine every earlier run may have been killed before it created
        # the schema: query the database once this run has opened it
        final.wait_log("run started", timeout=120)
        wait_for(settled, 60, "every event delivered")
    finally:
        rc, _ = final.stop()
    with db.connect() as c:
        events = c.execute(sa.text("select id from events")).scalars().all()
        rows = c.execute(
            sa.text(
                "select d.event_id, d.recipient, o.message_id, o.state, o.mime from deliveries d "
                "join outbox o on o.id = d.outbox_id"
            )
        ).all()
        messages = c.execute(sa.text("select message_id from outbox")).scalars().all()
    db.dispose()
    files = {p.name: p.read_bytes() for p in emls(tmp_path / "outbox")}
    per_event: dict[tuple[int, str], int] = {}
    for event_id, recipient, _mid, state, _mime in rows:
        assert state == "sent"
        per_event[(event_id, recipient)] = per_event.get((event_id, recipient), 0) + 1
    missing_files = [mid for mid in messages if re.sub(r"[^A-Za-z0-9.@_-]", "_", mid.strip("<>")) + ".eml" not in files]
    # every new paper's PubMed link is in exactly one mail per recipient
    texts = [message_from_bytes(b, policy=policy.default) for b in files.values()]
    to_a = [str(m.get_body(("plain",)).get_content()) for m in texts if m["To"] == "a@example.org"]  # type: ignore[union-attr]
    links = [f"https://pubmed.ncbi.nlm.nih.gov/{2000 + r}/" for r in range(14)]
    counts = {link: sum(1 for t in to_a if link in t) for link in links}
    print(
        f"\nSIGKILL loop: {kills} kills, {len(events)} events, {len(rows)} deliveries, "
        f"{len(files)} mails in the outbox, new papers per mail to a: {sorted(set(counts.values()))}"
    )
    assert rc == 0 and kills >= 8
    assert len(events) >= 34
    assert all(per_event.get((e, r)) == 1 for e in events for r in ("a@example.org", "b@example.org"))
    assert len(per_event) == 2 * len(events)
    assert not missing_files and len(files) == len(messages)
    assert all(n == 1 for n in counts.values()), counts
    st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
    assert st["outbox"]["queued"] == 0 and st["digests"][0]["pending_events"] == 0
