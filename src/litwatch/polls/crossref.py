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
  "crossref-recheck"), `last_ok`): every stored DOI in batches of `batch_size` a
  request, reading each work's `updated-by` (Retraction Watch's entries are there).

What both found goes to `pipeline.ingest` as one `Batch(crossref=…)`: each notice
becomes a report, and an event of each record with its target DOI for every query
that matched it, unless another source told of it already (`notices.attribute`). Both
rows' progress commits with them; a failure stores nothing and moves neither."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

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


def poll_crossref(store: IngestPort, client: CrossrefClient, now: datetime, every: timedelta) -> PollResult:
    """One Crossref cycle: new notices since the watermark, and the re-check when due."""
    result = PollResult(CROSSREF, CROSSREF)
    today = now.date()  # Crossref's index dates are UTC days
    before = client.requests_made
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, CROSSREF)
        checked = store.poll_state(tx, SHARED, RECHECK)
        stored = store.stored_dois(tx)
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
        try:
            found = client.recheck(sorted(stored), today=today)
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


__all__ = ["CROSSREF", "RECHECK", "poll_crossref", "recheck_due"]
