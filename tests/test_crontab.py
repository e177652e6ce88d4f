"""`cron:` means crontab(5) (issue 24): day-of-week numbers 0-7 (0 and 7 Sunday), in
ranges, lists and steps, as the daemon, `status` and `check` all see them; names as
before; across daylight saving in the config's zone; `check` shows the next times."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import basic_config, invoke
from helpers.fake_eutils import FakeEutils
from litwatch.config import loads
from litwatch.tasks import Plan, next_planned

TUESDAY = datetime(2026, 12, 8, 12, 0)  # naive UTC


def days(cron: str, zone: str = "UTC", n: int = 5, now: datetime = TUESDAY) -> list[str]:
    """The next `n` fire times as the daemon's timers and `status` compute them, shown
    as wall-clock times in `zone`."""
    out, at = [], now
    for _ in range(n):
        at = Plan(cron=cron).after(at, zone)
        out.append(at.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).strftime("%a %d %H:%M"))
    return out


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 7 * * 1", ["Mon 14 07:00", "Mon 21 07:00"]),  # Monday, not Tuesday
        ("0 7 * * 1-5", ["Wed 09 07:00", "Thu 10 07:00", "Fri 11 07:00", "Mon 14 07:00", "Tue 15 07:00"]),
        ("0 7 * * 0", ["Sun 13 07:00", "Sun 20 07:00"]),
        ("0 7 * * 7", ["Sun 13 07:00", "Sun 20 07:00"]),  # refused before
        ("0 7 * * 5-7", ["Fri 11 07:00", "Sat 12 07:00", "Sun 13 07:00", "Fri 18 07:00", "Sat 19 07:00"]),
        ("0 7 * * 0,3", ["Wed 09 07:00", "Sun 13 07:00", "Wed 16 07:00", "Sun 20 07:00", "Wed 23 07:00"]),
        ("0 7 * * */3", ["Wed 09 07:00", "Sat 12 07:00", "Sun 13 07:00", "Wed 16 07:00", "Sat 19 07:00"]),
        ("0 7 * * 1-5/2", ["Wed 09 07:00", "Fri 11 07:00", "Mon 14 07:00", "Wed 16 07:00", "Fri 18 07:00"]),
        ("0 7 * * MON", ["Mon 14 07:00", "Mon 21 07:00"]),  # names as before
        ("0 7 * * mon-fri", ["Wed 09 07:00", "Thu 10 07:00", "Fri 11 07:00", "Mon 14 07:00", "Tue 15 07:00"]),
        ("0 7 15 * 1", ["Mon 14 07:00", "Tue 15 07:00", "Mon 21 07:00", "Mon 28 07:00", "Mon 04 07:00"]),  # OR
    ],
)
def test_day_of_week_numbers_mean_what_crontab_says(cron: str, expected: list[str]) -> None:
    got = days(cron)
    print(f"{cron!r}: {got[:3]}")
    assert got[: len(expected)] == expected


def test_crontab_across_daylight_saving_in_the_configs_zone() -> None:
    # Europe/Berlin skips 02:00-03:00 on Sunday 2027-03-28 and repeats it on 2027-10-31
    spring = days("30 2 * * 0", "Europe/Berlin", 2, datetime(2027, 3, 25))
    assert spring == ["Sun 28 03:00", "Sun 04 02:30"]
    from litwatch.tasks import next_times

    autumn = [t.isoformat() for t in next_times(Plan(cron="30 2 * * 7"), "Europe/Berlin", datetime(2027, 10, 28), 2)]
    assert autumn == ["2027-10-31T02:30:00+02:00", "2027-11-07T02:30:00+01:00"]  # once, at its first occurrence
    # `status`'s next run of a Monday digest is a Monday in the zone, summer and winter
    assert next_planned(Plan(cron="0 7 * * 1"), "America/New_York", None, None, TUESDAY, wait_first=True) == (
        datetime(2026, 12, 14, 12, 0)
    )


def test_a_day_of_week_beyond_seven_is_a_config_error() -> None:
    with pytest.raises(Exception, match="0-7"):
        loads(
            "database: sqlite:///x.db\npubmed:\n  email: a@b.org\nmail:\n  transport: file\n  directory: o\n"
            '  from: "x <x@example.org>"\nqueries:\n  - name: q\n    pubmed: x\n    cron: "0 7 * * 8"\n'
            "digests:\n  - name: d\n    to: [a@example.org]\n    queries: [q]\n"
        )


def test_check_prints_each_schedules_next_three_times_in_the_configs_zone(tmp_path: Path, eutils: FakeEutils) -> None:
    digests = '\ndigests:\n  - name: weekly\n    to: [a@example.org]\n    queries: [trail]\n    cron: "0 7 * * 1"\n'
    cfg = basic_config(tmp_path, eutils.url, digests=digests, extra="timezone: Europe/Berlin\n")
    r = invoke("--config", str(cfg), "check")
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if "digest weekly" in x]
    assert line.startswith('schedule of digest weekly: cron "0 7 * * 1" in Europe/Berlin: next Mon ')
    assert line.count("Mon ") == 3 and line.count("07:00 CET") == 3
    assert "schedule of query trail: every 1d (default), from each run" in r.stdout
    assert not (tmp_path / "litwatch.db").exists()  # check stores nothing
