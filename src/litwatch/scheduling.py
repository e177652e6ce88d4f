"""Pure schedule arithmetic shared by `status` and the scheduler: when a query or
digest is next due, given its `every`/`cron`, the config's time zone and `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Scheduled(Protocol):
    @property
    def every(self) -> str | None: ...

    @property
    def cron(self) -> str | None: ...

    @property
    def interval(self) -> timedelta | None: ...


def next_run(item: Scheduled, timezone: str, last: datetime | None, now: datetime) -> datetime | None:
    """Naive-UTC time `item` is next due: `last + every` (now when never run or
    overdue), or the cron's next fire time after `last` (or after now)."""
    if item.cron:
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(item.cron, timezone=ZoneInfo(timezone))
        after = (last or now).replace(tzinfo=UTC)
        fire = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
        return fire.astimezone(UTC).replace(tzinfo=None) if fire else None
    interval = item.interval
    if interval is None:
        return None
    if last is None:
        return now
    return max(now, last + interval)


def is_due(item: Scheduled, timezone: str, last: datetime | None, now: datetime) -> bool:
    due = next_run(item, timezone, last, now)
    return due is not None and due <= now
