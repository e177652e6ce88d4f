"""The daemon's tasks and when each is due: pure schedule decisions over an anchor (when
the task last ran, by any instance) and `now`, shared by `scheduler` and `status`.

Task names are the keys of the `leases` table: `poll:<query>`, `poll:*notices` (the
shared erratum/retraction notice search), `poll:*crossref` (the Crossref source) and
`digest:<name>`. Query and digest names
cannot contain `*` or `:` (config `_NAME`), so the names never collide."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from . import crontab
from .config import DigestSettings, QuerySettings, Settings
from .records import CROSSREF, NOTICES, SHARED, query_keys

NOTICES_TASK = "poll:*notices"
CROSSREF_TASK = "poll:*crossref"
DEFAULT_DIGEST_EVERY = timedelta(days=1)  # a digest with neither `every` nor `cron`
MAX_TOLERANCE = timedelta(seconds=5)
DEFAULT_RETRY_SECONDS = 60.0  # a failing source is tried again a minute later, then 2, 4, ...


def poll_task(query: str) -> str:
    return f"poll:{query}"


def digest_task(digest: str) -> str:
    return f"digest:{digest}"


@dataclass(frozen=True)
class Plan:
    """A schedule: `every` (an interval) or `cron` (in the config's time zone)."""

    every: timedelta | None = None
    cron: str | None = None

    def after(self, anchor: datetime, timezone: str) -> datetime:
        """Naive-UTC time the task is due after a run at `anchor` (naive UTC): the pure
        next-run function the daemon's timers, its claims and `status` all use."""
        if self.every is not None:
            return anchor + self.every
        assert self.cron is not None
        return next_cron(self.cron, ZoneInfo(timezone), anchor)

    def period(self, timezone: str, now: datetime) -> timedelta:
        """The interval, or for a cron the gap between its next two fire times."""
        if self.every is not None:
            return self.every
        first = self.after(now, timezone)
        return self.after(first, timezone) - first

    def tolerance(self, timezone: str, now: datetime) -> timedelta:
        """How early a task may run: instances' timers and clocks differ by a little, and a
        timer firing a few milliseconds before `anchor + every` must not skip a cycle.
        A tenth of the period, at most 5 s; runs are never closer than period - tolerance."""
        return min(self.period(timezone, now) / 10, MAX_TOLERANCE)

    def due_at(self, anchor: datetime | None, timezone: str, now: datetime) -> datetime:
        return now if anchor is None else self.after(anchor, timezone)

    def is_due(self, anchor: datetime | None, timezone: str, now: datetime) -> bool:
        return self.due_at(anchor, timezone, now) - self.tolerance(timezone, now) <= now


def next_cron(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first fire time of `cron` (crontab(5): `crontab.triggers`; wall-clock times in
    `zone`) strictly after `after` (naive UTC), as naive UTC. Across a daylight-saving change each wall-clock time fires
    once (cron(8)'s rule): one inside the repeated hour fires at its first occurrence
    only; one inside the skipped hour fires at the first valid time after it (02:30 on
    the night Europe/Berlin skips 02:00-03:00 fires at 03:00 CEST)."""
    wall_clock = crontab.triggers(cron, UTC)  # UTC has no DST: plain wall-clock times (crontab(5)'s days)
    wall = _to_wall(after, zone)
    while True:
        start = (wall + timedelta(microseconds=1)).replace(tzinfo=UTC)
        fire = min(t.get_next_fire_time(None, start) for t in wall_clock)
        wall = fire.replace(tzinfo=None)
        at = _from_wall(wall, zone)
        if at > after:
            return at


def _to_wall(utc: datetime, zone: ZoneInfo) -> datetime:
    return utc.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def _from_wall(wall: datetime, zone: ZoneInfo) -> datetime:
    """Naive UTC of a wall-clock time: its first occurrence when repeated (fold=0); when
    it does not exist (the skipped hour), the moment the clocks jumped past it."""
    at = wall.replace(tzinfo=zone, fold=0).astimezone(UTC).replace(tzinfo=None)
    if _to_wall(at, zone) == wall:
        return at
    # skipped: find the jump, the first minute whose wall clock is past `wall`
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(tzinfo=None)  # before the jump
    while _to_wall(lo, zone) < wall:
        lo += timedelta(minutes=1)
    return lo.replace(second=0, microsecond=0)


class PlanTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger firing at `Plan.after` (the same pure function `status`
    and the claims use), so the daemon's timers keep the DST rules of `next_cron`."""

    def __init__(self, plan: Plan, timezone: str) -> None:
        self.plan = plan
        self.timezone = timezone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        base = previous_fire_time if previous_fire_time is not None else now - timedelta(microseconds=1)
        naive = base.astimezone(UTC).replace(tzinfo=None)
        return self.plan.after(naive, self.timezone).replace(tzinfo=UTC)

    def __str__(self) -> str:
        return f"plan[{self.plan.cron or self.plan.every}]"


def plan_of(item: QuerySettings | DigestSettings) -> Plan:
    if item.cron:
        return Plan(cron=item.cron)
    if isinstance(item, DigestSettings):
        return Plan(every=item.interval or DEFAULT_DIGEST_EVERY)
    return Plan(every=item.interval or timedelta(hours=24))


def notices_plan(settings: Settings, now: datetime) -> Plan | None:
    """The shared notice search runs as often as the most frequent PubMed query."""
    plans = [plan_of(q) for q in settings.queries if q.pubmed]
    if not plans or not settings.pubmed.notices:
        return None
    return min(plans, key=lambda p: p.period(settings.timezone, now))


def crossref_plan(settings: Settings, now: datetime) -> Plan | None:
    """The Crossref source runs as often as the most frequent query (PubMed or feeds:
    both store DOIs); its re-check of every stored DOI keeps its own `crossref.every`."""
    plans = [plan_of(q) for q in settings.queries]
    if not plans or settings.crossref is None:
        return None
    return min(plans, key=lambda p: p.period(settings.timezone, now))


def next_times(plan: Plan, timezone: str, now: datetime, n: int = 3) -> list[datetime]:
    """The next `n` times `plan` is due after `now` (naive UTC), as aware times in
    `timezone`: what `litwatch check` shows for each schedule."""
    zone, out, at = ZoneInfo(timezone), [], now
    for _ in range(n):
        at = plan.after(at, timezone)
        out.append(at.replace(tzinfo=UTC).astimezone(zone))
    return out


def first_run(
    plan: Plan, anchor: datetime | None, timezone: str, now: datetime, *, wait_first: bool = False
) -> datetime:
    """When the daemon first runs a task at start (naive UTC): at once when overdue (the
    catch-up after a stop longer than the interval), else when due. `wait_first`: a task
    never run waits one period first (a digest sent at start would find nothing yet)."""
    if anchor is None:
        return plan.after(now, timezone) if wait_first else now
    return now if plan.is_due(anchor, timezone, now) else plan.after(anchor, timezone)


def next_planned(
    plan: Plan,
    timezone: str,
    anchor: datetime | None,
    planned: datetime | None,
    now: datetime,
    *,
    wait_first: bool = False,
) -> datetime:
    """`status`'s "next run", as the daemon will do it: when due after the last run by
    any instance, but not before the time a running daemon has planned (`planned`,
    from the leases table); overdue times are shown as they are."""
    if anchor is None:
        due = planned or first_run(plan, None, timezone, now, wait_first=wait_first)
    else:
        due = plan.after(anchor, timezone)
    return max(due, planned) if planned is not None else due


# ====================================================================== failing sources


@dataclass(frozen=True)
class SourceTimes:
    """What the schedule reads of a source's poll_state row (host clock, as written)."""

    last_ok: datetime | None = None
    failing_since: datetime | None = None
    last_error_at: datetime | None = None
    disabled: bool = False


def retry_base() -> timedelta:
    """The first wait before a failing source is tried again: LITWATCH_RETRY_SECONDS,
    default 60 (tests shorten it)."""
    seconds = float(os.environ.get("LITWATCH_RETRY_SECONDS", DEFAULT_RETRY_SECONDS))
    return timedelta(seconds=max(0.1, seconds))


def retry_at(times: SourceTimes, base: timedelta, period: timedelta) -> datetime | None:
    """When a failing source is tried again (host clock), or None when it is not failing
    (or disabled: a feed gone for good waits for its config to change). A minute after
    the first failure, then after as long as it has been failing, so 1, 2, 4, 8 ...
    minutes apart, never more than its task's period: a brief network problem at start
    costs minutes, not a whole interval (issue 22)."""
    if times.failing_since is None or times.last_error_at is None or times.disabled:
        return None
    delay = min(period, max(base, times.last_error_at - times.failing_since))
    return times.last_error_at + delay


def task_sources(kind: str, query: QuerySettings | None) -> list[tuple[str, str]]:
    """The poll_state rows a task's poll moves: a query's PubMed search and feeds, the
    notice search's, Crossref's; none for a digest."""
    if kind == "notices":
        return [(SHARED, NOTICES)]
    if kind == "crossref":
        return [(SHARED, CROSSREF)]
    if query is None:
        return []
    return query_keys(query.name, bool(query.pubmed), query.feeds)


def last_success(keys: Sequence[tuple[str, str]], states: Mapping[tuple[str, str], SourceTimes]) -> datetime | None:
    """The oldest last success over `keys` (a source never polled makes it None: poll now)."""
    found = [states[k].last_ok if k in states else None for k in keys]
    if not found or any(v is None for v in found):
        return None
    return min(v for v in found if v is not None)


def next_retry(
    keys: Sequence[tuple[str, str]], states: Mapping[tuple[str, str], SourceTimes], base: timedelta, period: timedelta
) -> datetime | None:
    """The earliest retry of the failing sources among `keys` (host clock), or None."""
    found = [r for k in keys if k in states and (r := retry_at(states[k], base, period)) is not None]
    return min(found, default=None)
