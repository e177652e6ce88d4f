"""The Crossref source (SPEC.md `crossref:`): corrections, retractions, expressions of
concern and other updates that Crossref (the publisher, Retraction Watch) knows about
the DOIs litwatch has stored — of PubMed records and feed items alike.

Once a cycle, under its own poll_state row (SHARED, "crossref"):

- **new notices**: the update notices Crossref indexed since the watermark (minus a
  day of overlap: reports are kept once, so the overlap is free), kept when their
  target is a stored DOI. The stored DOIs are read once, as a set: no request and no
  query a notice. The first cycle only sets the watermark, like the PubMed notice
  search: what is older is found by the re-check.
- **stored DOIs re-checked** every `crossref.every` (its own row, (SHARED,
  "crossref-recheck"), `last_ok`): the stored DOIs due (`recheck_plan`: tiered by how
  long litwatch has held them, daily, weekly, monthly) in batches of `batch_size` a
  request, reading each work's `updated-by` (Retraction Watch's entries are there).

What both found goes to `pipeline.ingest` as one `Batch(crossref=…)`: each notice
becomes a report, and an event of each record with its target DOI for every query
that matched it, unless another source told of it already (`notices.attribute`). Both
rows' progress commits with them; a failure stores nothing and moves neither."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from ..errors import SourceError
from ..ingest import Batch, Progress, ingest, record_failure
from ..records import CROSSREF, SHARED, Notice
from ..records import CROSSREF_RECHECK as RECHECK
from ..sources.crossref import CrossrefClient, unchecked_note
from ..sources.eutils import window_start
from ..store.ports import IngestPort
from .results import PollResult

log = logging.getLogger(__name__)

# A re-check due "every 1d" after a run at 06:00:03 is due at the 06:00:00 cycle too:
# cycles and clocks wobble by a little (a tenth of the period, at most an hour).
RECHECK_SLACK = timedelta(hours=1)


def recheck_due(last_ok: datetime | None, every: timedelta, now: datetime) -> bool:
    return last_ok is None or now - last_ok >= every - min(every / 10, RECHECK_SLACK)


# How often a stored DOI is re-checked, by how long ago litwatch first stored it (issue
# 28): (younger than, every so many days). Retractions come years after publication, so
# no work is ever dropped; an old one is checked monthly. New notices Crossref indexes
# are found daily whatever the age (`new_notices`): the tiers delay only what the
# re-check alone finds (an `updated-by` with no newly indexed notice, e.g. Retraction
# Watch's), by at most the tier's period.
RECHECK_TIERS: tuple[tuple[timedelta | None, int], ...] = (
    (timedelta(days=90), 1),
    (timedelta(days=730), 7),
    (None, 30),
)


def recheck_period(first_seen: datetime, now: datetime) -> int:
    """Every how many days a DOI first stored at `first_seen` is re-checked."""
    for younger_than, days in RECHECK_TIERS:
        if younger_than is None or now - first_seen < younger_than:
            return days
    return RECHECK_TIERS[-1][1]


def recheck_plan(held: Mapping[str, datetime], now: datetime, last: date | None) -> list[str]:
    """The stored DOIs (→ first stored) due for a re-check today, sorted: each is due on
    one day of its tier's period, its slot (a hash of the DOI, so the tier's DOIs are
    spread evenly over the days), and is due today if that day came since the last
    re-check (`last`, a UTC day; None: every DOI). A re-check that did not run for a
    day or more catches up every slot it missed."""
    today = now.date()
    gap = (today - last).days if last is not None else None
    due = []
    for doi, first in held.items():
        period = recheck_period(first, now)
        if gap is None or gap >= period or period <= 1:
            due.append(doi)
            continue
        slot = int.from_bytes(hashlib.sha256(doi.encode()).digest()[:4], "big") % period
        if any((today.toordinal() - k) % period == slot for k in range(max(gap, 0))):
            due.append(doi)
    return sorted(due)


def _day(watermark: str | None) -> date | None:
    try:
        return date.fromisoformat(watermark) if watermark else None
    except ValueError:
        return None


def poll_crossref(store: IngestPort, client: CrossrefClient, now: datetime, every: timedelta) -> PollResult:
    """One Crossref cycle: new notices since the watermark, and the re-check when due."""
    result = PollResult(CROSSREF, CROSSREF)
    today = now.date()  # Crossref's index dates are UTC days
    before = client.requests_made
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, CROSSREF)
        checked = store.poll_state(tx, SHARED, RECHECK)
        held = store.doi_first_seen(tx)
    stored = set(held)
    progress: list[Progress] = []
    notices: dict[Notice, None] = {}  # ordered set: one notice seen from both sides is one
    errors: list[str] = []
    moved: dict[str, object] = {}  # the watermark, when the new-notice search ran
    try:  # the two halves fail apart: a refused re-check never stops the new-notice search
        if state is not None and state.watermark:
            found = client.new_notices(window_start(state.watermark), today=today, stored=stored)
            notices.update(dict.fromkeys(found.notices))
        moved["watermark"] = today.isoformat()
    except SourceError as e:
        errors.append(f"new notices: {e}")
    if recheck_due(checked.last_ok if checked is not None else None, every, now):
        due = recheck_plan(held, now, _day(checked.watermark if checked is not None else None))
        log.info("crossref: re-checking %d of %d stored DOIs (tiered by age)", len(due), len(held))
        try:
            found = client.recheck(due, today=today)
        except SourceError as e:
            errors.append(f"re-check: {e}")
            progress.append(Progress(SHARED, RECHECK, {}, error=str(e)))
        else:
            notices.update(dict.fromkeys(found.notices))
            progress.append(Progress(SHARED, RECHECK, {"watermark": today.isoformat(), **unchecked_note(found)}))
            if found.missing:
                log.info("crossref: %d stored DOIs are not Crossref's", len(found.missing))
    if not errors and client.requests_made == before:
        # nothing to ask yet (a first cycle before any DOI is stored): one request all
        # the same, so a Crossref that does not answer is a failure, not a success
        try:
            client.probe(today)
        except SourceError as e:
            errors.append(str(e))
            moved.clear()
    result.error = "; ".join(errors) or None
    progress.append(Progress(SHARED, CROSSREF, moved, error=result.error))
    try:
        result.found = len(notices)
        batch = Batch(CROSSREF, CROSSREF, crossref=tuple(notices), progress=progress)
        done = store.write(lambda tx: ingest(store, tx, batch, now), what="crossref")
        result.events = done.events
    except SourceError as e:
        result.error = str(e)
        record_failure(store, SHARED, CROSSREF, str(e), now)
    finally:
        result.requests = client.requests_made - before
    return result


__all__ = ["CROSSREF", "RECHECK", "RECHECK_TIERS", "poll_crossref", "recheck_due", "recheck_period", "recheck_plan"]
