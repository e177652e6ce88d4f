"""The Crossref re-check tiered by age (issue 28): a DOI litwatch first stored less than
90 days ago is checked at every re-check, one held up to two years weekly, an older
one monthly — never dropped (retractions come years later), and spread evenly over the
days of its period so that a day's re-check costs a steady share of the history."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from litwatch.polls.crossref import recheck_period, recheck_plan

NOW = datetime(2026, 12, 8, 6, 0)


def held(n: int, age_days: int, prefix: str) -> dict[str, datetime]:
    return {f"10.1000/{prefix}.{i}": NOW - timedelta(days=age_days) for i in range(n)}


def test_tiers_by_age() -> None:
    assert recheck_period(NOW - timedelta(days=10), NOW) == 1
    assert recheck_period(NOW - timedelta(days=200), NOW) == 7
    assert recheck_period(NOW - timedelta(days=3 * 365), NOW) == 30


def test_a_first_re_check_checks_every_doi() -> None:
    dois = {**held(50, 10, "new"), **held(50, 200, "mid"), **held(50, 2000, "old")}
    assert recheck_plan(dois, NOW, None) == sorted(dois)


def test_each_doi_is_checked_once_a_period_and_the_days_share_the_work() -> None:
    recent, mid, old = held(300, 10, "new"), held(7_000, 200, "mid"), held(30_000, 2000, "old")
    dois = {**recent, **mid, **old}
    checks: Counter[str] = Counter()
    per_day = []
    for day in range(30):
        now = NOW + timedelta(days=day)
        # ages move with the clock: keep each DOI in its tier for the test
        due = recheck_plan(dois, now, (now - timedelta(days=1)).date())
        checks.update(due)
        per_day.append(len(due))
    assert all(checks[d] == 30 for d in recent)
    assert {checks[d] for d in mid} <= {4, 5} and sum(checks[d] for d in mid) == pytest.approx(7_000 * 30 / 7, rel=0.02)
    assert all(checks[d] == 1 for d in old)
    # a day's share: the recent ones, ~1/7 of the weekly tier, ~1/30 of the monthly one
    assert max(per_day) < 300 + 7_000 / 7 * 1.2 + 30_000 / 30 * 1.2
    assert min(per_day) > 300 + 7_000 / 7 * 0.8 + 30_000 / 30 * 0.8


def test_a_missed_re_check_catches_up_every_slot_it_missed() -> None:
    dois = {**held(5_000, 200, "mid"), **held(5_000, 2000, "old")}
    last = NOW.date() - timedelta(days=3)
    days = [recheck_plan(dois, NOW - timedelta(days=k), (NOW - timedelta(days=k + 1)).date()) for k in range(3)]
    assert set(recheck_plan(dois, NOW, last)) == {d for due in days for d in due}
    # a gap as long as the period: the whole tier
    assert set(dois) - set(recheck_plan(dois, NOW, NOW.date() - timedelta(days=7))) <= set(held(5_000, 2000, "old"))
    assert set(recheck_plan(dois, NOW, date(2000, 1, 1))) == set(dois)
