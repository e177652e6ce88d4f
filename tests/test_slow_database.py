"""Instances that reach PostgreSQL slower than others, or not at all for a while
(issue 23): real `litwatch run` subprocesses, the fake E-utilities server, and a TCP
proxy in front of PostgreSQL that adds latency (tests/helpers/proxy.py).

- NCBI's shared rate holds whatever one instance's latency to the database: three
  instances, one of them behind 0, 25, 50 or 100 ms of extra one-way latency, never
  start more than 3 requests within any 1 s window;
- a process stopped (SIGSTOP) while it holds the request budget's row lock stalls the
  others for a few seconds at most, not until it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import TODAY, Run, basic_config, daemon_env, pg_schema_url, wait_for
from helpers.fake_eutils import FakeEutils
from helpers.proxy import latency_proxy

RUN_FOR = 30.0  # seconds of three instances polling, per latency


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_schema_url()


def _config(tmp_path: Path, eutils: FakeEutils, db: str, name: str, queries: int = 9, every: str = "2s") -> Path:
    qs = "queries:\n" + "".join(f"  - name: q{i}\n    pubmed: term{i}\n    every: {every}\n" for i in range(queries))
    cfg = basic_config(tmp_path, eutils.url, db=db, queries=qs, digests="")
    text = cfg.read_text().replace("pubmed:\n", "pubmed:\n  notices: false\n", 1)
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _max_per_window(times: list[float], window: float = 1.0) -> tuple[int, int]:
    """The most request starts within any `window` seconds, and in how many windows
    (starting at a request) more than 3 fell."""
    best, over, hi = 0, 0, 0
    for lo, t in enumerate(times):
        while hi < len(times) and times[hi] < t + window:
            hi += 1
        best = max(best, hi - lo)
        over += hi - lo > 3
    return best, over


@pytest.mark.slow
@pytest.mark.parametrize("latency_ms", [0, 25, 50, 100])
def test_the_shared_rate_holds_when_one_instance_reaches_the_database_slowly(
    tmp_path: Path, eutils: FakeEutils, pg_url: str, latency_ms: int
) -> None:
    for i in range(9):
        eutils.add(str(1000 + i), terms=f"term{i}", edat=TODAY - timedelta(days=1), title=f"P{i}")
    with latency_proxy(("127.0.0.1", 5432), latency_ms / 1000) as proxy:
        fast = _config(tmp_path, eutils, pg_url, "fast.yaml")
        slow = _config(tmp_path, eutils, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), "slow.yaml")
        runs = [Run(cfg, tmp_path / f"run{n}.log") for n, cfg in enumerate([fast, fast, slow])]
        try:
            for r in runs:
                r.wait_log("run started", timeout=90)
            start = time.monotonic()
            time.sleep(RUN_FOR)
            end = time.monotonic()
        finally:
            # an instance 100 ms from its database takes longer than 10 s to give its
            # leases up one by one after SIGTERM: round trips, not work
            codes = [r.stop(timeout=30)[0] for r in runs]
    with eutils.lock:
        times = sorted(r.at for r in eutils.requests if start <= r.at < end)
    best, over = _max_per_window(times)
    print(
        f"\nrate with one instance at +{latency_ms} ms one-way to PostgreSQL: {len(times)} requests in "
        f"{RUN_FOR:.0f}s, max {best} in any 1 s window ({over} windows over 3)"
    )
    assert codes == [0, 0, 0]
    assert len(times) > RUN_FOR  # they did poll
    assert best <= 3, f"{best} requests within 1 s ({over} windows)"


HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy as sa
    from litwatch.store import Store

    store = Store(sys.argv[1])
    with store.transaction(immediate=True, fenced=False) as tx:
        store.budget_starts(tx, sys.argv[2])  # the budget's row, locked FOR UPDATE
        print("holding", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # a frozen VM, a paused container
        print("resumed", flush=True)
    """
)


@pytest.mark.slow
def test_a_stopped_holder_of_the_budget_row_stalls_the_others_a_few_seconds(
    tmp_path: Path, eutils: FakeEutils, pg_url: str
) -> None:
    """Two `litwatch run` instances poll; a third process takes the request budget's row
    lock and is stopped (SIGSTOP) holding it, for 40 s. The others go on polling after
    a few seconds (the database ends the stopped one's idle transaction), not after 40."""
    for i in range(4):
        eutils.add(str(1000 + i), terms=f"term{i}", edat=TODAY - timedelta(days=1), title=f"P{i}")
    cfg = _config(tmp_path, eutils, pg_url, "litwatch.yaml", queries=4, every="1s")
    runs = [Run(cfg, tmp_path / f"run{n}.log") for n in range(2)]
    holder = None
    try:
        for r in runs:
            r.wait_log("run started", timeout=90)
        wait_for(lambda: len(eutils.requests) > 10, 60, "the instances polling")
        budget = f"eutils:{urlsplit(eutils.url).netloc}"  # the row every E-utilities request reserves in
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, pg_url, budget], stdout=subprocess.PIPE, text=True, env=daemon_env()
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        stopped_at = time.monotonic()
        wait_for(lambda: _state(holder) == "T", 10, "the holder stopped")
        time.sleep(40)
        resumed_at = time.monotonic()
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(timeout=30)
    finally:
        if holder is not None and holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
        codes = [r.stop()[0] for r in runs]
    with eutils.lock:
        times = sorted(r.at for r in eutils.requests if stopped_at - 5 <= r.at <= resumed_at)
    gaps = [b - a for a, b in zip([stopped_at, *times], [*times, resumed_at], strict=True)]
    stall = max(gaps)
    after = [t for t in times if t > stopped_at + 15]
    print(
        f"\nholder of the budget row stopped 40 s: longest stall {stall:.1f} s, "
        f"{len(after)} requests in the last 25 s of it"
    )
    assert codes == [0, 0]
    assert stall < 15, f"the others stalled {stall:.1f} s"
    assert len(after) >= 10


def _state(proc: subprocess.Popen[str]) -> str:
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""
