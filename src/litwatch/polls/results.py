"""What a poll reports: one `PollResult` per source polled (what `litwatch poll` prints,
what the daemon logs and counts), and `PollProgress`, what a person watching a poll is
told as it goes. Plain data; no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

# A PMID that a search finds but efetch keeps leaving out is asked for again at every poll
# for this long, then given up (PubMed does delete records) and shown so in `status`.
MISSING_GIVE_UP = timedelta(days=3)
ESEARCH_CAP = 10_000  # (sources.eutils.ESEARCH_CAP; repeated so results need no HTTP import)


@dataclass
class PollResult:
    name: str
    source: str
    found: int = 0
    new: int = 0
    changed: int = 0
    events: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    requests: int = 0
    missing: int = 0  # PMIDs PubMed's answers left out, kept to fetch again at later polls
    gave_up: list[str] = field(default_factory=list)  # missing for MISSING_GIVE_UP: no longer asked for
    overflowed: list[tuple[str, int]] = field(default_factory=list)  # (day, count): modifications over the cap
    skipped: str | None = None  # why this poll did not run (another process had it)

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if self.skipped:
            return f"{self.name} [{self.source}]: skipped: {self.skipped}"
        head = (
            f"{self.name} [{self.source}]: found {self.found}, new {self.new}, changed {self.changed}, "
            f"events {self.events}"
        )
        if self.missing:
            head += f", missing {self.missing} (fetched again at the next poll)"
        if self.gave_up:
            days = MISSING_GIVE_UP.days
            head += f", gave up on {len(self.gave_up)} missing for {days} days ({some(self.gave_up)})"
        for day, count in self.overflowed:
            head += f", modifications of {day} skipped ({count} records, over PubMed's {ESEARCH_CAP} cap)"
        if self.error:
            return f"{head}, errors 1: {self.error}"
        return f"{head}, errors 0" + (f" ({len(self.warnings)} warnings)" if self.warnings else "")


class PollProgress(Protocol):
    """What a poll tells a person watching it, per query (`name`): what it searched and
    how many records it will fetch, each batch of records fetched, and what it stored.
    `litwatch poll` draws it as a progress bar on a terminal (cli.py); by default nothing."""

    def searched(self, name: str, searched: str, total: int) -> None: ...

    def fetched(self, name: str, n: int) -> None: ...

    def stored(self, name: str, summary: str) -> None: ...


class Quiet:
    def searched(self, name: str, searched: str, total: int) -> None:
        pass

    def fetched(self, name: str, n: int) -> None:
        pass

    def stored(self, name: str, summary: str) -> None:
        pass


def some(keys: Sequence[str], limit: int = 10) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


__all__ = ["ESEARCH_CAP", "MISSING_GIVE_UP", "PollProgress", "PollResult", "Quiet", "some"]
