"""The daemon's decisions without a daemon: when a task is due (tasks.py, pure, `now`
given) and the claim on the database that makes instances run each due task once."""

from __future__ import annotations

import os
import subprocess
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from litwatch.config import Settings
from litwatch.coordination import Coordinator
from litwatch.scheduler import build_tasks, single_instance_lock
from litwatch.store import Store
from litwatch.tasks import NOTICES_TASK, Plan, first_run, next_planned, notices_plan

NOW = datetime(2026, 11, 25, 9, 0, 0)  # a Wednesday
H = timedelta(hours=1)


def test_interval_due_with_a_small_tolerance() -> None:
    p = Plan(every=timedelta(seconds=10))
    assert p.is_due(None, "UTC", NOW)
    assert not p.is_due(NOW - timedelta(seconds=8), "UTC", NOW)
    assert p.is_due(NOW - timedelta(seconds=9.5), "UTC", NOW)  # a timer a moment early
    assert p.tolerance("UTC", NOW) == timedelta(seconds=1)
    assert Plan(every=24 * H).tolerance("UTC", NOW) == timedelta(seconds=5)


def test_cron_due_in_the_config_time_zone() -> None:
    p = Plan(cron="0 7 * * *")
    # 07:00 in Berlin is 06:00 UTC in November
    assert p.after(NOW - 4 * H, "Europe/Berlin") == datetime(2026, 11, 25, 6, 0)
    assert p.is_due(NOW - 4 * H, "Europe/Berlin", NOW)  # 05:00 UTC last run: 06:00 passed
    assert not p.is_due(NOW - 2 * H, "Europe/Berlin", NOW)  # ran at 07:00 UTC, after today's
    assert p.period("UTC", NOW) == 24 * H


def test_first_run_catches_up_once_overdue() -> None:
    every = Plan(every=6 * H)
    assert first_run(every, None, "UTC", NOW) == NOW  # never polled: now
    assert first_run(every, NOW - 7 * H, "UTC", NOW) == NOW  # down longer than the interval
    assert first_run(every, NOW - 2 * H, "UTC", NOW) == NOW + 4 * H  # when due
    assert first_run(every, None, "UTC", NOW, wait_first=True) == NOW + 6 * H  # a new digest waits
    weekly = Plan(cron="0 7 * * MON")
    assert first_run(weekly, datetime(2026, 11, 16, 7), "UTC", NOW) == NOW  # Monday's was missed
    assert first_run(weekly, datetime(2026, 11, 23, 7), "UTC", NOW) == datetime(2026, 11, 30, 7)


def test_next_planned_never_before_the_daemons_plan() -> None:
    every = Plan(every=H)
    assert next_planned(every, "UTC", NOW - 10 * 60 * timedelta(seconds=1), None, NOW) == NOW + 50 * 60 * timedelta(
        seconds=1
    )
    assert next_planned(every, "UTC", NOW - H, NOW + 5 * H, NOW) == NOW + 5 * H
    assert next_planned(every, "UTC", None, None, NOW, wait_first=True) == NOW + H


def test_tasks_from_the_config() -> None:
    s = Settings.model_validate(
        {
            "queries": [
                {"name": "a", "pubmed": "x", "every": "6h"},
                {"name": "b", "pubmed": "y", "cron": "*/30 * * * *"},
                {"name": "c", "feeds": ["f"], "match": "z"},
            ],
            "feeds": [{"name": "f", "url": "https://example.org/rss"}],
            "digests": [{"name": "d", "to": ["a@example.org"], "queries": ["a"]}],
        }
    )
    tasks = build_tasks(s, NOW)
    assert sorted(tasks) == ["digest:d", NOTICES_TASK, "poll:a", "poll:b", "poll:c"]
    assert tasks["digest:d"].plan == Plan(every=24 * H)  # neither every nor cron: daily
    assert tasks["poll:c"].plan == Plan(every=24 * H)
    assert notices_plan(s, NOW) == Plan(cron="*/30 * * * *")  # as often as the most frequent PubMed query


def test_claim_runs_a_due_task_once_across_racing_instances(store_url: str) -> None:
    store = Store(store_url)
    every = Plan(every=timedelta(seconds=30))
    won: list[Coordinator] = []
    barrier = threading.Barrier(6)
    ttl = timedelta(seconds=60)

    def due(last: datetime | None, now: datetime) -> bool:
        return every.is_due(last, "UTC", now)

    def instance(name: str) -> None:
        c = Coordinator(store, owner=name, ttl=ttl, heartbeat=False)
        barrier.wait()
        claim = c.claim("poll:q", due=due)
        if claim.won:
            won.append(c)
            with store.transaction(fenced=False) as tx:
                store.release_lease(tx, "poll:q", name, claim.token, next_run=NOW)

    threads = [threading.Thread(target=instance, args=(f"i{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    # released, but ran just now: not due for anyone
    again = Coordinator(store, owner="other", ttl=ttl).claim("poll:q", due=due)
    assert not again.won and not again.busy and again.last_run is not None
    with store.transaction() as tx:
        row = store.leases(tx)["poll:q"]
    assert row.next_run == NOW and row.last_run == again.last_run
    store.close()


def test_a_dead_holders_lease_expires_and_renewal_keeps_it(store_url: str) -> None:
    store = Store(store_url)
    ttl = timedelta(seconds=60)
    a = Coordinator(store, owner="a", ttl=ttl, heartbeat=False)
    b = Coordinator(store, owner="b", ttl=ttl, heartbeat=False)
    with a.hold("digest:d") as held:
        assert held.claim.won and held.claim.token == 1
        assert b.claim("digest:d").busy
        assert a.renew() == []
        with store.transaction(fenced=False) as tx:  # a dies; its lease runs out
            tx.execute(store_leases_expire())
        claim = b.claim("digest:d")
        assert claim.won and claim.token == 2  # the fencing token moved on
        assert a.renew() == ["digest:d"]  # a learns it lost it
    # on SQLite a new `run` frees what dead processes of this host held, not a live one's
    import socket

    live = Coordinator(store, owner=f"{socket.gethostname()}:{os.getpid()}:x", heartbeat=False)
    gone = Coordinator(store, owner=f"{socket.gethostname()}:{_exited_pid()}:y", heartbeat=False)
    assert live.claim("poll:a").won and gone.claim("poll:b").won
    assert Coordinator(store).free_dead() == 1
    assert gone.claim("poll:b").won and not Coordinator(store).claim("poll:a").won
    store.close()


def _exited_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def store_leases_expire() -> object:
    from litwatch.store.schema import leases

    return leases.update().values(until=datetime(2000, 1, 1))


def test_a_claim_held_by_a_dead_process_of_this_host_is_taken_at_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILLed `poll`, `digest` or `run` on this host holds nothing: the next claim
    takes its task at once, not a lease time later. The same owner name on another host
    (LITWATCH_HOSTNAME) holds until its lease runs out."""
    monkeypatch.setenv("LITWATCH_HOSTNAME", "here")
    store = Store(store_url)
    pid = _exited_pid()
    assert Coordinator(store, owner=f"here:{pid}:y", heartbeat=False).claim("digest:d").won
    assert Coordinator(store, owner=f"elsewhere:{pid}:y", heartbeat=False).claim("poll:q").won
    assert Coordinator(store, owner=f"here:{os.getpid()}:x", heartbeat=False).claim("poll:live").won
    me = Coordinator(store, owner="here:1:z", heartbeat=False)
    assert me.claim("digest:d").won
    assert me.claim("poll:q").busy and me.claim("poll:live").busy
    store.close()


def test_sqlite_single_instance_lock(tmp_path: Path) -> None:
    from litwatch.errors import StoreError

    url = f"sqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "x.db").touch()
    held = single_instance_lock(url)
    assert held is not None
    with pytest.raises(StoreError, match="another `litwatch run` is already using"):
        single_instance_lock(url)
    os.link(tmp_path / "x.db", tmp_path / "y.db")  # another name of the same file
    with pytest.raises(StoreError, match="another `litwatch run` is already using"):
        single_instance_lock(f"sqlite:///{tmp_path / 'y.db'}")
    held.close()
    single_instance_lock(url).close()  # type: ignore[union-attr]
    assert single_instance_lock("postgresql+psycopg://u@h/db") is None
