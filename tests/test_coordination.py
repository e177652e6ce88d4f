"""Coordination between processes sharing one database (coordination.py): the NCBI
request budget they share, claims on the database's clock whatever the hosts' clocks
say, the fencing token that stops a holder which lost its claim, cron times across
daylight-saving changes, and the health endpoint's binding, timeout and reasons."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import TODAY, basic_config, daemon_env, invoke, wait_for
from helpers.budget import peak, read_slots, recorded_slots, slot_env
from helpers.fake_eutils import FakeEutils
from litwatch.config import Settings, load

BERLIN = "Europe/Berlin"


# ----------------------------------------------------------------------------- DST


def _fires(cron: str, start: datetime, n: int, tz: str = BERLIN) -> list[datetime]:
    from litwatch.tasks import Plan

    plan, out, at = Plan(cron=cron), [], start
    for _ in range(n):
        at = plan.after(at, tz)
        out.append(at)
    return out


def test_cron_in_the_repeated_hour_fires_once() -> None:
    # 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice
    fires = _fires("30 2 * * *", datetime(2026, 10, 24, 12, 0), 3)
    print("\n02:30 Europe/Berlin around the night clocks go back (UTC):", [f.isoformat() for f in fires])
    assert fires == [datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 26, 1, 30), datetime(2026, 10, 27, 1, 30)]


def test_cron_in_the_skipped_hour_fires_once_at_the_first_valid_time() -> None:
    # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist
    fires = _fires("30 2 * * *", datetime(2026, 3, 28, 12, 0), 3)
    print("\n02:30 Europe/Berlin around the night clocks go forward (UTC):", [f.isoformat() for f in fires])
    # 03:00 CEST is 01:00 UTC
    assert fires == [datetime(2026, 3, 29, 1, 0), datetime(2026, 3, 30, 0, 30), datetime(2026, 3, 31, 0, 30)]


def test_the_daemons_timer_and_status_use_the_same_next_run() -> None:
    from datetime import UTC

    from litwatch.tasks import Plan, PlanTrigger, next_planned

    plan = Plan(cron="30 2 * * *")
    trigger = PlanTrigger(plan, BERLIN)
    now = datetime(2026, 10, 25, 0, 31)  # just after the first 02:30
    fire = trigger.get_next_fire_time(None, now.replace(tzinfo=UTC))
    assert fire.replace(tzinfo=None) == datetime(2026, 10, 26, 1, 30)  # not again at 02:30 CET
    assert next_planned(plan, BERLIN, datetime(2026, 10, 25, 0, 30), None, now) == fire.replace(tzinfo=None)


# ----------------------------------------------------------------------------- health


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


def test_health_binds_loopback_times_out_idle_clients_and_keeps_detail_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from litwatch.scheduler import Daemon
    from litwatch.service import Service
    from litwatch.web import server as web_server
    from litwatch.web.app import make_app

    monkeypatch.setattr(web_server, "REQUEST_DEADLINE", 1.0)
    assert Settings().health_bind == "127.0.0.1"
    settings = Settings(database=f"sqlite:///{tmp_path / 'x.db'}")
    daemon = Daemon(tmp_path / "litwatch.yaml", settings)
    daemon.service = Service(settings)
    daemon.scheduler = BackgroundScheduler()
    daemon.scheduler.start(paused=True)
    daemon.service.coordination.start()
    # the database goes away: a URL naming a host and a user that cannot be reached
    daemon.service.store.engine = sa.create_engine("postgresql+psycopg://secretuser@127.0.0.1:9/nodb")
    app = make_app(daemon.service, settings, health=daemon.health, metrics=daemon.render_metrics, pages=False)
    server = web_server.WebServer(app, port=0).start()
    idle: list[socket.socket] = []
    try:
        assert server.sock is not None and server.sock.getsockname()[0] == "127.0.0.1"
        status, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        # idle connections cost no thread, and each is dropped at the request deadline
        for _ in range(30):
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        during = _get(f"http://127.0.0.1:{server.port}/healthz")[0]
        wait_for(lambda: all(map(_closed_by_peer, idle)), 30, "the 30 idle connections closed by the server")
        after = _get(f"http://127.0.0.1:{server.port}/healthz")[0]
    finally:
        for s in idle:
            s.close()
        server.stop()
        daemon.scheduler.shutdown(wait=False)
        daemon.service.close()
    assert status == 503 and body == "unhealthy: database does not answer\n", body
    assert "port 9" not in body and "secretuser" not in body
    assert "database does not answer: " in caplog.text and "port 9" in caplog.text  # the detail is in the log
    assert during == 503 and after == 503  # answered beside 30 idle connections, and after


def test_health_bind_in_the_config(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url, extra="health_port: 8080\nhealth_bind: 0.0.0.0\n")
    assert load(cfg).health_bind == "0.0.0.0"
    deploy = Path(__file__).resolve().parents[1] / "deploy" / "litwatch.yaml"
    assert "health_bind: 0.0.0.0" in deploy.read_text()


# ----------------------------------------------------------------------------- the request budget


@pytest.mark.timeout(60)  # a guard against a slot that waits (a few ms each here), not a measurement
def test_what_a_budget_slot_costs(store_url: str) -> None:
    """One reservation per E-utilities request: measure it where it never has to wait."""
    from litwatch.coordination import RequestBudget
    from litwatch.store import Store

    store = Store(store_url)
    budget = RequestBudget(store, "eutils:cost", per_second=1_000_000)
    budget.wait()  # the row exists
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        budget.wait()
    per = (time.perf_counter() - start) / n * 1000
    store.close()
    print(f"\nrequest budget on {store_url.split(':', 1)[0]}: {per:.2f} ms per request slot ({n} slots)")


def test_the_budget_keeps_threads_of_several_processes_under_the_rate(store_url: str) -> None:
    from litwatch.coordination import BUDGET_MARGIN, RequestBudget
    from litwatch.store import Store

    stores = [Store(store_url) for _ in range(3)]  # three processes' own connection pools

    def worker(store: Store) -> None:
        budget = RequestBudget(store, "eutils:test", per_second=3)
        for _ in range(4):
            budget.wait()

    # the slots as reserved on the database's clock: when a thread wakes up from its
    # wait depends on the machine's load, the slot it was given does not
    with ExitStack() as stack:
        recorded = [stack.enter_context(recorded_slots(s)) for s in stores]
        threads = [threading.Thread(target=worker, args=(s,)) for s in stores for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in stores:
        s.close()
    slots = sorted(t for r in recorded for t in r["eutils:test"])
    print(
        f"\n24 requests from 6 threads of 3 pools: {len(slots) / (slots[-1] - slots[0]):.2f}/s, "
        f"peak {peak(slots)} in 1 s, {peak(slots, 1.1)} in 1.1 s"
    )
    assert len(slots) >= 24  # a thread late to its slot takes another: every slot counts below
    assert peak(slots, 1.0 + BUDGET_MARGIN - 0.001) <= 3  # the margin kept as well


def _config_many(tmp_path: Path, eutils: FakeEutils, db: str, n: int, every: str = "") -> Path:
    queries = "queries:\n" + "".join(
        f"  - name: q{i}\n    pubmed: term{i}\n" + (f"    every: {every}\n" if every else "") for i in range(n)
    )
    digests = "digests:\n  - name: d\n    to: [team@example.org]\n    queries: [q0]\n"
    return basic_config(tmp_path, eutils.url, db=db, queries=queries, digests=digests)


def test_two_polls_back_to_back_keep_to_ncbis_rate(tmp_path: Path, eutils: FakeEutils) -> None:
    """Two `litwatch poll` at once on SQLite, no API key (3/s): together they reserve at
    most 3 request starts in any 1.1 s, and what NCBI refuses is retried."""
    import subprocess
    import sys

    from litwatch.coordination import BUDGET_MARGIN

    for i in range(8):
        eutils.add(str(1000 + i), terms=f"term{i}", edat=TODAY - timedelta(days=1), title=f"P{i}")
    eutils.limit = 3
    cfg = _config_many(tmp_path, eutils, f"sqlite:///{tmp_path / 'litwatch.db'}", 8)
    assert invoke("--config", str(cfg), "status").returncode == 0  # schema in place
    log = tmp_path / "slots.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "poll"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=slot_env(log, daemon_env()),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    span = eutils.requests[-1].at - eutils.requests[0].at
    print(
        f"\ntwo polls at once: {len(eutils.requests)} requests in {span:.1f}s "
        f"({len(eutils.requests) / span:.2f}/s, peak {eutils.peak_per_second()} in one second), "
        f"refused with 429: {eutils.refused} (retried); exit codes {[p.returncode for p in procs]}"
    )
    # the pace as reserved, not the fake's refusals (a late arrival on a loaded machine
    # is refused, then retried): see helpers/budget.py
    slots = read_slots(log, "eutils:")
    assert len(slots) >= len(eutils.requests)  # one late to its slot takes another
    assert peak(slots, 1.0 + BUDGET_MARGIN - 0.001) <= 3
    assert all(p.returncode == 0 for p in procs), outs


# ----------------------------------------------------------------------------- clocks and claims


def _daemon(settings: Settings, tmp_path: Path, now: Any) -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler

    from litwatch.scheduler import Daemon, build_tasks
    from litwatch.service import Service

    d = Daemon(tmp_path / "litwatch.yaml", settings)
    d.service = Service(settings, now=now)  # this host's clock
    d.scheduler = BackgroundScheduler()  # never started: its timers are not under test
    d.tasks = build_tasks(settings, datetime.now())
    return d


def _wait_until_due(daemon: Any, task: str) -> None:
    """Until `task` is due again by the database's clock (what a claim checks)."""
    store, plan, tz = daemon.service.store, daemon.tasks[task].plan, daemon.settings.timezone

    def due() -> bool:
        with store.transaction(fenced=False) as tx:
            return bool(plan.is_due(store.leases(tx)[task].last_run, tz, store.db_now(tx)))

    wait_for(due, 30, f"{task} due again")


def _wait_lease_out(store: Any, task: str) -> None:
    """Until the lease on `task` has run out by the database's clock."""

    def out() -> bool:
        with store.transaction(fenced=False) as tx:
            return bool(store.leases(tx)[task].until <= store.db_now(tx))

    wait_for(out, 30, f"the lease on {task} run out")


def test_a_host_whose_clock_runs_fast_delays_no_one(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    """Instance A's host clock is an hour fast, B's and C's are right (C's an hour slow).
    A polls; once the interval has passed by the database's clock, B polls; then
    neither A nor C polls again before the next interval."""
    from litwatch.service import utcnow

    eutils.add("1", terms="term0", edat=TODAY, title="P")
    settings = load(_config_many(tmp_path, eutils, store_url, 1, every="2s"))
    hour = timedelta(hours=1)
    a = _daemon(settings, tmp_path, lambda: utcnow() + hour)
    b = _daemon(settings, tmp_path, utcnow)
    c = _daemon(settings, tmp_path, lambda: utcnow() - hour)

    def polls() -> int:
        from helpers.fake_eutils import is_poll_search

        return sum(1 for r in eutils.requests if is_poll_search(r))

    try:
        a._run_task("poll:q0")
        after_a = polls()
        _wait_until_due(a, "poll:q0")  # 2 s after A's run by the database's clock
        b._run_task("poll:q0")
        after_b = polls()
        a._run_task("poll:q0")
        c._run_task("poll:q0")
        after_all = polls()
    finally:
        for d in (a, b, c):
            d.service.close()
    print(f"\nclock skew +1h/0/-1h: polls after A {after_a}, after B {after_b}, after A and C again {after_all}")
    assert (after_a, after_b, after_all) == (1, 2, 2)


def test_a_holder_that_lost_its_lease_stops_before_commit(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    """A's heartbeat stalls; its lease runs out and B takes the query over. A's poll
    then reaches its committing transaction: refused (LeaseLost), nothing of it stored;
    B's poll stores the records once."""
    from litwatch.coordination import Coordinator, LeaseLost
    from litwatch.service import Service
    from litwatch.store import Store

    for i in range(3):
        eutils.add(str(10 + i), terms="term0", edat=TODAY, title=f"P{i}")
    settings = load(_config_many(tmp_path, eutils, store_url, 1, every="1h"))
    store_a, store_b = Store(store_url), Store(store_url)
    a = Service(settings, store=store_a, coordination=Coordinator(store_a, ttl=timedelta(seconds=1), heartbeat=False))
    b = Service(settings, store=store_b)
    q = settings.queries[0]
    try:
        with a.coordination.hold("poll:q0", start=True) as held_a:
            assert held_a.claim.won
            _wait_lease_out(store_a, "poll:q0")  # no heartbeat: the lease runs out
            with b.coordination.hold("poll:q0", start=True) as held_b:
                assert held_b.claim.won and held_b.claim.token == held_a.claim.token + 1
                with pytest.raises(LeaseLost) as lost:
                    a.poll_pubmed(q)
                with store_a.transaction(fenced=False) as tx:
                    stored_after_a = tx.execute(sa.text("select count(*) from records")).scalar_one()
                    state_after_a = store_a.poll_state(tx, "q0", "pubmed")
                result = b.poll_pubmed(q)
        with store_b.transaction() as tx:
            stored = tx.execute(sa.text("select count(*) from records")).scalar_one()
            events = tx.execute(sa.text("select count(*) from events")).scalar_one()
    finally:
        a.close()
        b.close()
    print(
        f"\nlost lease: A stopped with {lost.value!s}; A stored {stored_after_a}, B stored {stored} ({events} events)"
    )
    assert stored_after_a == 0 and state_after_a is None
    assert result.ok and stored == 3 and events == 3


def test_poll_and_digest_wait_for_a_claim_held_elsewhere_then_skip(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    """`litwatch poll`/`digest` beside another process working on the same query and
    digest: they wait for its claim (here: not at all), skip, and report it; they never
    poll or send at the same time."""
    from litwatch.coordination import Coordinator
    from litwatch.service import Service
    from litwatch.store import Store

    eutils.add("1", terms="term0", edat=TODAY, title="P")
    eutils.add("2", terms="term1", edat=TODAY, title="Q")
    settings = load(_config_many(tmp_path, eutils, store_url, 2))
    other_store = Store(store_url)
    other = Coordinator(other_store, heartbeat=False)
    svc = Service(settings)
    try:
        with other.hold("poll:q0", start=True):
            results = svc.poll(wait=0.5)
        lines = [r.line() for r in results]
        searched = {r.params.get("term") for r in eutils.requests if r.utility == "esearch"}
        svc.poll(["q0"])  # free now: q0's record becomes an event for digest d
        with other.hold("digest:d", start=True):
            digests = svc.digest(wait=0.5)
        after = svc.digest()
    finally:
        svc.close()
        other_store.close()
    print("\npoll beside a holder:", lines, "digest beside a holder:", digests)
    assert lines[0].startswith("q0 [*]: skipped: another litwatch process (") and lines[0].endswith(
        ") is working on it"
    )
    assert all(r.ok for r in results) and "term0" not in searched and "term1" in searched
    assert digests == [] and [(r.recipient, r.sent) for r in after] == [("team@example.org", True)]


def test_queries_due_together_under_run_share_one_cycle(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    """Under `run`, PubMed queries whose jobs fire within seconds of each other share a
    cycle (issue 15): one search each, one efetch of the union of what they found; their
    own jobs then find them polled and not due."""
    for i in range(6):  # each PMID found by two of the three queries
        eutils.add(str(500 + i), terms={f"term{i % 3}", f"term{(i + 1) % 3}"}, edat=TODAY, title=f"P{i}")
    from litwatch.service import utcnow

    settings = load(_config_many(tmp_path, eutils, store_url, 3, every="1h"))
    d = _daemon(settings, tmp_path, utcnow)
    d.scheduler.start(paused=True)  # real jobs with their next run times; none fires
    try:
        d._schedule()
        d._run_task("poll:q0")
        after_q0 = [r.utility for r in eutils.requests]
        d._run_task("poll:q1")
        d._run_task("poll:q2")
        after_all = [r.utility for r in eutils.requests]
        hits = d.service.status()["queries"]
    finally:
        d.scheduler.shutdown(wait=False)
        d.service.close()
    print(f"\nrequests of the shared cycle: {after_q0}")
    assert after_q0.count("esearch") == 3 and after_q0.count("efetch") == 1
    assert after_all == after_q0  # q1 and q2 were polled in q0's cycle: not due again
    assert [q["records"] for q in hits] == [4, 4, 4]


def test_a_digest_waits_only_for_its_catch_up_polls_even_when_they_share_a_cycle(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    """At start every poll is catching up and a digest over them waits for them. When one
    query's cycle takes the other along, the other's own job finds it held and looks again
    later (30 s): the shared cycle is still the other's catch-up, so the digest goes out as
    soon as it ends, not after that second look (the catch-up digest CI once missed)."""
    for i in range(2):
        eutils.add(str(700 + i), terms=f"term{i}", edat=TODAY, title=f"P{i}")
    cfg = _config_many(tmp_path, eutils, store_url, 2, every="1h")
    cfg.write_text(cfg.read_text().replace("queries: [q0]", "queries: [q0, q1]"))
    from litwatch.service import utcnow

    d = _daemon(load(cfg), tmp_path, utcnow)
    d.scheduler.start(paused=True)  # real jobs with their next run times; none fires
    try:
        d._schedule()
        eutils.delay = 0.5  # q0's cycle (with q1 along) takes a while
        cycle = threading.Thread(target=d._run_task, args=["poll:q0"])
        cycle.start()
        wait_for(lambda: eutils.count("esearch"), 10, "q0's cycle under way")
        d._run_task("poll:q1")  # q1's own job meanwhile: held by q0's cycle, looks again later
        cycle.join(30)
        eutils.delay = 0
        d._run_task("digest:d")
        outbox = list((tmp_path / "outbox").glob("*.eml"))
    finally:
        d.scheduler.shutdown(wait=False)
        d.service.close()
    print(f"\ncatch-up digest after a shared cycle: {len(outbox)} mail(s)")
    assert len(outbox) == 1 and "P1" in outbox[0].read_text(encoding="utf-8")


def test_a_lease_of_an_earlier_process_with_the_same_pid_is_taken_at_once(store_url: str) -> None:
    """A lease recorded by a process that had this very PID (a restart as PID 1 in a
    container), or by a PID now another process's, or before the host rebooted, is a
    dead holder's: taken at once, not after its time runs out."""
    import os

    from litwatch.coordination import Coordinator
    from litwatch.store import Store

    def started(pid: int | str) -> str:  # clock ticks since boot (/proc/<pid>/stat)
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]

    host, pid, process = socket.gethostname(), str(os.getpid()), "0badc0de"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    start, init_start = started(pid), started(1)
    store = Store(store_url)
    try:
        me = Coordinator(store, heartbeat=False)
        earlier = {
            "this pid, an earlier process": f"{host}:{pid}:{boot}.{start}.{process}.abcd",
            "pid 1, another process": f"{host}:1:{boot}.{int(init_start) + 1}.{process}.abcd",
            "before a reboot": f"{host}:1:{'f' * 8}.{init_start}.{process}.abcd",
        }
        for n, (what, owner) in enumerate(earlier.items()):
            task = f"poll:earlier{n}"
            with store.transaction(fenced=False) as tx:
                store.lock_lease(tx, task)
                store.take_lease(tx, task, owner=owner, until=store.db_now(tx) + timedelta(hours=1), token=7)
            claim = me.claim(task)
            assert claim.won and claim.token == 8, f"{what}: {claim}"
        alive = f"{host}:1:{boot}.{init_start}.{process}.abcd"  # PID 1 as it is: alive
        with store.transaction(fenced=False) as tx:
            store.lock_lease(tx, "poll:alive")
            store.take_lease(tx, "poll:alive", owner=alive, until=store.db_now(tx) + timedelta(hours=1), token=1)
        assert me.claim("poll:alive").busy
    finally:
        store.close()
