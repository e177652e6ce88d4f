"""Three `litwatch run` instances on one PostgreSQL (a fresh schema) share 12 queries
polled every 5 s and 4 digests every 10 s against the fake E-utilities server and a
real SMTP server: every query is polled once per interval in total (counted on the
fake server), every digest run and every message happens once (counted on the SMTP
server by Message-ID); then one instance is SIGKILLed and the others take over its
work once its leases expire."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import TODAY, Run, basic_config, pg_schema_url, smtp_mail, smtp_port, wait_for
from helpers.fake_eutils import FakeEutils
from test_daemon import api_key, searches

# 12 queries every 5 s ask ~6 requests/s of the 10/s NCBI budget that all instances share
# (an edat and an mdat search each, plus fetches); 20 asked more than the budget allows
QUERIES = 12
PER_DIGEST = QUERIES // 4
EVERY = 5.0
DIGEST_EVERY = 10.0
TTL = 6  # LITWATCH_LEASE_SECONDS: how long a dead instance's task stays claimed
STEADY = 45.0  # seconds of three instances working together


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_schema_url()


def _config(tmp_path: Path, eutils: FakeEutils, db: str, port: int) -> Path:
    queries = "queries:\n" + "".join(
        f"  - name: q{i:02d}\n    pubmed: term{i:02d}\n    every: {int(EVERY)}s\n" for i in range(QUERIES)
    )
    digests = "digests:\n" + "".join(
        f"  - name: d{k}\n    to: [team{k}@example.org]\n"
        f"    queries: [{', '.join(f'q{i:02d}' for i in range(k * PER_DIGEST, (k + 1) * PER_DIGEST))}]\n"
        f"    every: {int(DIGEST_EVERY)}s\n"
        for k in range(4)
    )
    cfg = api_key(basic_config(tmp_path, eutils.url, db=db, mail=smtp_mail(port), queries=queries, digests=digests))
    cfg.write_text(cfg.read_text().replace("pubmed:\n", "pubmed:\n  notices: false\n", 1))
    return cfg


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _digest_runs(runs: list[Run]) -> Counter[str]:
    return Counter(m for r in runs for m in re.findall(r"digest name=(d\d) ", r.log))


@pytest.mark.slow
def test_three_instances_poll_and_mail_once(tmp_path: Path, eutils: FakeEutils, smtp: Any, pg_url: str) -> None:
    for i in range(QUERIES):
        for j in range(2):
            eutils.add(f"{(i + 1) * 1000 + j}", terms=f"term{i:02d}", edat=TODAY - timedelta(days=2), title=f"T{i} {j}")
    eutils.delay = 0.15  # a poll takes a moment, so instances hold leases when one is killed
    cfg = _config(tmp_path, eutils, pg_url, smtp_port(smtp))
    env = {"LITWATCH_LEASE_SECONDS": str(TTL)}
    runs = [Run(cfg, tmp_path / f"run{n}.log", env={**env, "LITWATCH_HOSTNAME": f"host{n}"}) for n in range(3)]
    try:
        for r in runs:
            r.wait_log("run started", timeout=30)
        start = time.monotonic()
        # new papers keep appearing, so digests have something to send
        added = 0
        while time.monotonic() - start < STEADY:
            i = added % QUERIES
            eutils.add(f"{90000 + added}", terms=f"term{i:02d}", edat=TODAY, mdat=TODAY - timedelta(days=1), title="N")
            added += 1
            time.sleep(1.0)
        steady_end = time.monotonic()
        polls = {f"term{i:02d}": [t for t in searches(eutils, f"term{i:02d}") if start <= t < steady_end]
                 for i in range(QUERIES)}  # fmt: skip
        digest_runs_steady = _digest_runs(runs)

        # SIGKILL the instance holding the most leases right now
        eng = sa.create_engine(pg_url)
        with eng.connect() as c:
            held = c.execute(sa.text("select task, owner from leases where until > now() at time zone 'utc'")).all()
        pids = Counter(int(owner.split(":")[1]) for _, owner in held)
        victim = max(runs, key=lambda r: pids.get(r.proc.pid, 0))
        victim_tasks = [t for t, owner in held if int(owner.split(":")[1]) == victim.proc.pid]
        victim.kill()
        killed_at = time.monotonic()

        def taken_over() -> bool:
            with eng.connect() as c:
                left = c.execute(
                    sa.text("select count(*) from leases where owner like :o and until > now() at time zone 'utc'"),
                    {"o": f"%:{victim.proc.pid}:%"},
                ).scalar_one()
            return left == 0 and all(
                any(t > killed_at for t in searches(eutils, f"term{i:02d}")) for i in range(QUERIES)
            )

        wait_for(taken_over, TTL + 3 * EVERY, "the others taking over")
        takeover = {
            task: min(t for t in searches(eutils, "term" + task.removeprefix("poll:q")) if t > killed_at) - killed_at
            for task in victim_tasks
            if task.startswith("poll:q")
        }
        time.sleep(EVERY)  # one more full cycle by two instances
        after_end = time.monotonic()
        with eng.connect() as c:
            events = c.execute(sa.text("select count(*) from events")).scalar_one()
            bound = c.execute(sa.text("select count(*), count(distinct (event_id, recipient)) from deliveries")).one()
        eng.dispose()
    finally:
        codes = [r.stop()[0] for r in runs if r.proc.poll() is None]
    all_polls = {i: searches(eutils, f"term{i:02d}") for i in range(QUERIES)}
    double = {term: sum(1 for g in _gaps(ts) if g < EVERY / 2) for term, ts in polls.items()}
    double_after = {i: sum(1 for g in _gaps([t for t in ts if t > killed_at]) if g < EVERY / 2)
                    for i, ts in all_polls.items()}  # fmt: skip
    max_gap_after = max(max(_gaps([t for t in ts if t > killed_at - EVERY]), default=0) for ts in all_polls.values())
    message_ids = Counter(str(m["Message-ID"]) for m in smtp.received.messages)
    per_instance = [len(re.findall(r"poll query=q\d\d ", r.log)) for r in runs]
    expected = STEADY / EVERY
    print(
        f"\nthree instances, {QUERIES} queries every {EVERY:g}s for {STEADY:g}s (expected ~{expected:g} polls each):"
        f"\n  polls per query: {sorted(Counter(len(ts) for ts in polls.values()).items())} (polls: count of queries)"
        f"\n  double polls (two polls of a query < {EVERY / 2:g}s apart): {sum(double.values())}"
        f"\n  polls per instance: {per_instance}"
        f"\n  digest runs in {STEADY:g}s: {dict(sorted(digest_runs_steady.items()))}"
        f"\n  mails received: {sum(message_ids.values())}, distinct Message-IDs: {len(message_ids)}, "
        f"double mails: {sum(n - 1 for n in message_ids.values())}"
        f"\n  events: {events}, deliveries: {bound[0]} (distinct {bound[1]})"
        f"\n  SIGKILL of the instance holding {len(victim_tasks)} leases {victim_tasks}: "
        f"takeover after {', '.join(f'{v:.1f}s' for v in takeover.values()) or '-'} (lease TTL {TTL}s), "
        f"longest gap between polls of a query around the kill {max_gap_after:.1f}s, "
        f"double polls after the kill: {sum(double_after.values())}"
    )
    assert codes == [0, 0]
    assert sum(double.values()) == 0, double
    for term, ts in polls.items():
        assert expected - 2 <= len(ts) <= expected + 1, (term, len(ts), _gaps(ts))
    assert all(expected / 2 - 2 <= n <= expected / 2 + 1 for n in digest_runs_steady.values()), digest_runs_steady
    assert message_ids and all(n == 1 for n in message_ids.values())
    assert bound[0] == bound[1]
    assert sum(double_after.values()) == 0
    assert max_gap_after <= EVERY + TTL + EVERY / 2 + 1
    assert all(v <= TTL + EVERY / 2 + 2 for v in takeover.values()), takeover
    assert after_end - killed_at < TTL + 4 * EVERY
