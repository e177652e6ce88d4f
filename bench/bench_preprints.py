"""Requests of a preprint feed (issue 27): a first poll and a daily cycle, per server,
counted from the fake api.biorxiv.org (tests/helpers/fake_biorxiv.py) filled with 40
days of postings and journal versions at assumed daily volumes (below; set them to
what the servers' /sum pages say for your categories). The pace (1 request a second)
is not waited for here: only requests are counted.

    .venv/bin/python bench/bench_preprints.py
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from common import table

# per server: (preprints posted a day per category, journal versions linked a day)
VOLUMES = {
    "biorxiv": ({"cancer biology": 25, "immunology": 20}, 70),
    "medrxiv": ({"oncology": 15, "hematology": 3}, 20),
}
TODAY = date(2026, 12, 8)
LOOKBACK = 14  # the example config's lookback_days


def main() -> None:
    from helpers.fake_biorxiv import FakeBiorxiv
    from litwatch.sources.biorxiv import poll_preprints
    from litwatch.sources.http import RateLimiter, RetryPolicy

    rows = []
    with FakeBiorxiv() as api:
        n = 0
        for server, (categories, linked) in VOLUMES.items():
            for back in range(40):
                day = TODAY - timedelta(days=back)
                for category, per_day in categories.items():
                    for _ in range(per_day):
                        n += 1
                        api.post(server, doi=f"10.1101/b.{n}", title="t", date=day, category=category)
                for _ in range(linked):
                    n += 1
                    api.publish(server, f"10.1101/p.{n}", f"10.1000/j.{n}", "J", day)
        for server, (categories, linked) in VOLUMES.items():
            args: dict[str, Any] = {
                "name": server,
                "server": server,
                "url": api.base,
                "categories": tuple(categories),
                "lookback_days": LOOKBACK,
                "policy": RetryPolicy(retries=0, backoff=0, timeout=10, deadline=60),
                "limiter": RateLimiter(1000),
            }
            now = datetime(TODAY.year, TODAY.month, TODAY.day, 6)
            first = poll_preprints(last_until=None, now=now, **args)
            daily = poll_preprints(last_until=TODAY - timedelta(days=1), now=now, **args)
            rows.append(
                [
                    f"{server} {', '.join(sorted(categories))}",
                    f"{sum(categories.values())}/day, {linked} linked/day",
                    f"{first.requests} ({len(first.records)} preprints)",
                    f"{daily.requests} ({daily.window.since}..{daily.window.until})",
                ]
            )
    headers = ["feed", "assumed volume", f"first poll (lookback {LOOKBACK})", "daily cycle"]
    print(table("Preprint feeds: requests per poll", headers, rows))


if __name__ == "__main__":
    main()
