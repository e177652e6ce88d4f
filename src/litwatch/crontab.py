"""`cron:` schedules as crontab(5) means them, on APScheduler 3's `CronTrigger`.

APScheduler 3 numbers the days of the week from Monday (0) to Sunday (6); crontab(5)
from Sunday: 0 and 7 are Sunday, 1 is Monday. `triggers` rewrites every number of
the day-of-week field (alone, in a range, a list or a step) as the day names both
agree on, so `0 7 * * 1` fires on Mondays and `1-5` Monday to Friday; names (MON,
mon-fri) are passed as they are. crontab(5)'s other rule is kept too: when both the
day of the month and the day of the week are restricted (neither is `*`), a day
matching either fires (`0 7 1 * MON`: the 1st of the month and every Monday).
"""

from __future__ import annotations

import re
from datetime import tzinfo
from typing import Any

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMERIC = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def weekday_field(field: str) -> str:
    """crontab(5)'s day-of-week field in APScheduler's terms: numbers → names."""
    out: list[str] = []
    for item in field.split(","):
        m = _NUMERIC.match(item.strip())
        if m is None:  # a name, a name range, or something CronTrigger will judge
            out.append(item.strip())
            continue
        span, step_text = m.group(1), m.group(2)
        if span == "*":
            if step_text is None:
                out.append("*")
                continue
            lo, hi = 0, 7
        elif "-" in span:
            lo, hi = (int(x) for x in span.split("-"))
        else:
            lo = int(span)
            hi = 7 if step_text is not None else lo  # `1/2`: from 1 to the end, every 2nd
        step = int(step_text) if step_text is not None else 1
        if not (0 <= lo <= 7 and 0 <= hi <= 7) or lo > hi or step == 0:
            raise ValueError(f"day of week {item.strip()!r}: use 0-7 (0 and 7 are Sunday) or names (MON)")
        out += [_DAYS[d] for d in range(lo, hi + 1, step)]
    return ",".join(dict.fromkeys(out))


def triggers(expr: str, timezone: tzinfo) -> list[Any]:
    """The APScheduler `CronTrigger`s whose earliest next fire time is `expr`'s (one,
    or two when crontab(5) ORs the day of the month and the day of the week)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5 (minute hour day month weekday)")
    minute, hour, day, month, dow = fields
    week = weekday_field(dow)

    def one(d: str, w: str) -> Any:
        return CronTrigger(minute=minute, hour=hour, day=d, month=month, day_of_week=w, timezone=timezone)

    if day != "*" and dow != "*":
        return [one(day, "*"), one("*", week)]
    return [one(day, week)]
