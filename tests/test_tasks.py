"""tasks.py's pure decisions about failing sources (issue 22): when one is tried again
(`retry_at`: a minute, then as long as it has been failing, capped at the task's
period), which poll_state rows a task moves, and a task's last success over them.
The schedule itself (plans, cron, DST) is tested in test_scheduler.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from litwatch.config import QuerySettings
from litwatch.tasks import SourceTimes, last_success, next_retry, retry_at, retry_base, task_sources

T0 = datetime(2026, 12, 8, 6, 0)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def failing(since: datetime, last: datetime, **kw: object) -> SourceTimes:
    return SourceTimes(failing_since=since, last_error_at=last, **kw)  # type: ignore[arg-type]


def test_a_failing_source_is_tried_again_after_1_2_4_minutes_then_every_period() -> None:
    tries = [T0]
    for _ in range(9):
        at = retry_at(failing(T0, tries[-1]), MINUTE, 12 * HOUR)
        assert at is not None
        tries.append(at)
    gaps = [(b - a) / MINUTE for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps == [1, 1, 2, 4, 8, 16, 32, 64, 128]
    # never more than the task's own period
    assert retry_at(failing(T0, T0 + 10 * HOUR), MINUTE, 6 * HOUR) == T0 + 16 * HOUR


def test_a_source_not_failing_or_disabled_has_no_retry() -> None:
    assert retry_at(SourceTimes(last_ok=T0), MINUTE, HOUR) is None
    assert retry_at(SourceTimes(), MINUTE, HOUR) is None
    assert retry_at(failing(T0, T0, disabled=True), MINUTE, HOUR) is None  # a feed gone for good


def test_the_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.delenv("LITWATCH_RETRY_SECONDS", raising=False)
    assert retry_base() == MINUTE
    mp.setenv("LITWATCH_RETRY_SECONDS", "2")
    assert retry_base() == timedelta(seconds=2)


def test_a_task_retries_at_its_earliest_failing_source_and_its_anchor_is_its_oldest_success() -> None:
    q = QuerySettings(name="q", pubmed="TRAIL", feeds=["press", "blood"], match="TRAIL")
    keys = task_sources("poll", q)
    assert keys == [("q", "pubmed"), ("*", "feed:press"), ("*", "feed:blood")]
    assert task_sources("notices", None) == [("*", "notices")]
    assert task_sources("crossref", None) == [("*", "crossref")]
    states = {
        ("q", "pubmed"): SourceTimes(last_ok=T0),
        ("*", "feed:press"): failing(T0, T0 + 3 * MINUTE, last_ok=T0 - HOUR),
        ("*", "feed:blood"): failing(T0 + MINUTE, T0 + MINUTE, last_ok=T0 - 2 * HOUR),
    }
    assert next_retry(keys, states, MINUTE, HOUR) == T0 + 2 * MINUTE  # blood's, before press's (T0 + 6 min)
    assert last_success(keys, states) == T0 - 2 * HOUR
    assert last_success(keys, {k: v for k, v in states.items() if k != ("*", "feed:blood")}) is None  # never polled
