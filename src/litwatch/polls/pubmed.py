"""PubMed as a source of the poll pipeline: the queries due in one cycle, and the
shared notice search.

A cycle makes as few requests as it can (issue 15):

1. one esearch per query, for records entered since its `edat` watermark OR modified
   since its `mdat` watermark (each minus a day of overlap, `window_start`): PubMed's
   syntax ORs the two date ranges. Only where that answer reaches the 10,000-id cap,
   or the search fails, are the two searched on their own (`search_window` splits a
   window over the cap by date; a day of modifications over it is reported and
   skipped), so each keeps its own progress;
2. one efetch of the union of what every query needs — PMIDs found, and those earlier
   answers left out — each PMID once however many queries found it, from the history
   server when one query alone needs records, else by id (POST when long); batch k+1
   is fetched while batch k is parsed. PMIDs an answer leaves out are asked for once
   more, then kept per query to ask for at later polls (`MISSING_GIVE_UP`);
3. per query, one `Batch` — what it found, its records, the watermarks its searches
   may move to — ingested in its own transaction: one query's failure to store is its
   own, the others' records and watermarks commit.

A record that the OR'd search finds and litwatch holds already may have been modified
or only entered within the overlap; one search cannot tell which. It is not fetched
again if a poll fetched it after its last modification day had ended, nor twice the
same day (`_unchanged`, issue 28): a quiet poll fetches what is new, and a known record
once more the day after the day it was fetched and modified. Windows are NCBI's days."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import chain

from sqlalchemy.engine import Connection

from ..config import QuerySettings, Settings
from ..errors import SourceError, StoreError, first_line
from ..events import notice_targets
from ..ingest import Batch, Progress, ingest, record_failure
from ..parse.pubmed import parse_pubmed
from ..records import NOTICES, PUBMED, SHARED, Record
from ..sources.eutils import EutilsClient, SearchResult, prefetched, pubmed_day, window_start
from ..store.ports import IngestPort
from .results import MISSING_GIVE_UP, PollProgress, PollResult, some

log = logging.getLogger(__name__)

# Known records last fetched before today that an answer brings back: up to this many
# are fetched again rather than asking which changed (one more esearch). A request
# costs NCBI more than 20 records of ~10 KB; a day's overlap of a broad query, far more.
REFETCH_RATHER = 20

NOTICE_TERM = (
    '"published erratum"[pt] OR "retraction of publication"[pt] OR "retraction notice"[pt]'
    ' OR "expression of concern"[pt]'
)


@dataclass
class _Query:
    """One query's part of a cycle, from its search to its batch."""

    q: QuerySettings
    result: PollResult
    what: str
    gaps: dict[str, datetime] = field(default_factory=dict)  # missing PMIDs: first missing (given up too)
    retry: list[str] = field(default_factory=list)  # missing PMIDs still asked for
    found: list[str] = field(default_factory=list)  # every PMID its searches found
    wanted: list[str] = field(default_factory=list)  # PMIDs to fetch for it
    known_unfetched: list[str] = field(default_factory=list)  # stored PMIDs it matched, not fetched
    marks: dict[str, str] = field(default_factory=dict)  # watermarks its searches may move to
    error: str = ""  # a search failed ("" when every search ran)
    searched: str = ""  # the windows searched, for a person watching
    history: list[SearchResult] = field(default_factory=list)  # results fetchable from the history server
    failed: bool = False  # nothing to store: both searches, or the fetch, failed


class PubmedCycle:
    """The PubMed queries due in one cycle; `run` returns one result per query."""

    def __init__(
        self,
        settings: Settings,
        store: IngestPort,
        eutils: EutilsClient,
        now: datetime,
        progress: PollProgress,
    ) -> None:
        self.settings = settings
        self.store = store
        self.eutils = eutils
        self.now = now
        self.progress = progress

    def run(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        before = self.eutils.requests_made
        parts = [_Query(q, PollResult(q.name, PUBMED), f"query {q.name}") for q in queries if q.pubmed]
        for p in parts:
            self._search(p)
        records = self._fetch([p for p in parts if not p.failed])
        for p in parts:
            if not p.failed:
                self._store(p, records)
        spent = self.eutils.requests_made - before
        for p in parts:
            # requests are shared: the cycle's are counted on its first query
            p.result.requests = spent if p is parts[0] else 0
            self.progress.stored(p.q.name, _stored(p.result))
            r = p.result
            log.info(
                "poll query=%s source=pubmed found=%d new=%d changed=%d events=%d missing=%d skipped_days=%d "
                "requests=%d error=%s",
                p.q.name,
                r.found,
                r.new,
                r.changed,
                r.events,
                r.missing,
                len(r.overflowed),
                r.requests,
                r.error or "-",
            )
        return [p.result for p in parts]

    # ------------------------------------------------------------------ 1. search

    def _search(self, p: _Query) -> None:
        q, today = p.q, pubmed_day(self.now)
        assert q.pubmed
        with self.store.transaction() as tx:
            state = self.store.poll_state(tx, q.name, PUBMED)
            # PMIDs earlier answers left out: {pmid: first missing}; given-up ones are not
            # asked for again, but stay given up if a search brings them back
            p.gaps = self.store.missing_pmids(tx, q.name, given_up=True)
            p.retry = list(self.store.missing_pmids(tx, q.name))
        errors: list[str] = []
        entered: list[SearchResult] | None
        modified: list[SearchResult] | None
        if state is None or not state.watermark:
            entered_from = today - timedelta(days=self.settings.pubmed.first_lookback_days)
            entered = self._window(q.pubmed, p.what, "edat", entered_from, today, errors)
            # a first look-back fetches every record it finds: nothing known can have changed
            modified = [] if entered is not None else None
            p.searched = f"entered {_window(entered_from, today)}"
            p.found = _ids(entered or [])
            with self.store.transaction() as tx:
                known = set(self.store.records_by_pmid(tx, p.found))  # another query's: keys only
            p.wanted = [i for i in p.found if i not in known]
            p.known_unfetched = [i for i in p.found if i in known]
            p.history = list(entered or []) if not known else []
        else:
            entered_from = window_start(state.watermark)
            # known records the query matches that changed since (errata, retractions,
            # new titles): PubMed bumps their modification date
            modified_from = window_start(state.mdat_watermark or state.watermark)
            p.searched = f"entered {_window(entered_from, today)}, modified {_window(modified_from, today)}"
            both = self._both(q.pubmed, p.what, entered_from, modified_from, today)
            if both is not None:
                entered, modified = [both], [both]
                p.found = list(both.ids)
                # entered or modified: which, this search cannot tell; what is known
                # and fetched since its last modification day is not fetched again
                p.wanted, p.known_unfetched = self._unchanged(p, p.found, modified_from, today)
                p.history = [both] if not p.known_unfetched else []
            else:
                entered = self._window(q.pubmed, p.what, "edat", entered_from, today, errors)
                modified = self._window(q.pubmed, p.what, "mdat", modified_from, today, errors, skip_overflow=True)
                entered_ids, modified_ids = _ids(entered or []), _ids(modified or [])
                p.found = list(dict.fromkeys([*entered_ids, *modified_ids]))
                with self.store.transaction() as tx:
                    checked = self.store.pubmed_checked(tx, p.found)  # keys and times only: no fields JSON
                mod = set(modified_ids)
                # known and not modified since the window: unchanged; modified, but
                # fetched today: fetched once more tomorrow, when its day has ended
                skip = {i for i, at in checked.items() if i not in mod or pubmed_day(at) >= today}
                p.wanted = [i for i in p.found if i not in skip]
                p.known_unfetched = [i for i in p.found if i in skip]
                p.history = list(entered or []) if not skip.intersection(entered_ids) else []
        p.error = "; ".join(dict.fromkeys(errors))
        if entered is None and modified is None:
            p.failed = True
            p.result.error = p.error
            record_failure(self.store, q.name, PUBMED, p.error, self.now)
            return
        if entered is not None:
            p.marks["watermark"] = today.isoformat()
        if modified is not None:
            p.marks["mdat_watermark"] = today.isoformat()
        for r in {id(r): r for r in (*(entered or ()), *(modified or ()))}.values():
            p.result.warnings += [f"{p.what}: {w}" for w in r.warnings]
        p.result.overflowed = [(r.overflow_day.isoformat(), r.count) for r in modified or () if r.overflow_day]
        p.result.found = len(p.found)
        p.wanted = list(dict.fromkeys([*p.wanted, *p.retry]))
        self.progress.searched(q.name, p.searched, len(p.wanted))

    def _unchanged(self, p: _Query, found: list[str], modified_from: date, today: date) -> tuple[list[str], list[str]]:
        """Split what the OR'd search found into what to fetch and the known records
        that did not change since a poll last fetched them: (fetch, skip).

        PubMed's modification dates are whole US Eastern days, so a record fetched on
        day F may have changed later on F: it is fetched again if it was modified on
        or after F — once, after F has ended, never twice the same day (a change later
        on the day of a fetch is fetched the next day; the modification window's day
        of overlap holds it). For the known records last fetched before today, one
        modification search from the earliest of their days (`search_modified`) tells
        which were modified since: only when more than `REFETCH_RATHER` of them, else
        fetching them is cheaper than asking. A record last fetched before the
        modification window is fetched: it is in the answer because it changed. If
        that search fails or reaches the cap, every one of them is fetched."""
        with self.store.transaction() as tx:
            checked = {i: pubmed_day(at) for i, at in self.store.pubmed_checked(tx, found).items()}
        if not checked:
            return list(found), []
        again = {i for i, day in checked.items() if day < modified_from}
        undecided = {i: day for i, day in checked.items() if modified_from <= day < today}
        if len(undecided) > REFETCH_RATHER:
            since = min(undecided.values())
            what = f"{p.what} (which known records changed)"
            try:
                modified = self.eutils.search_modified(p.q.pubmed or "", what=what, start=since, end=today)
            except SourceError as e:
                log.warning("%s: %s; fetching the %d known records again", what, e, len(undecided))
                modified = None
            if modified is None:
                again.update(undecided)
            else:
                mod = set(modified.ids)
                again.update(i for i in undecided if i in mod)
        else:
            again.update(undecided)
        skip = set(checked) - again
        return [i for i in found if i not in skip], [i for i in found if i in skip]

    def _both(self, term: str, what: str, entered_from: date, modified_from: date, end: date) -> SearchResult | None:
        """The one OR'd search; None when it overflows or fails (then each on its own)."""
        try:
            return self.eutils.search_changed(
                term, what=what, entered_from=entered_from, modified_from=modified_from, end=end
            )
        except SourceError as e:
            log.warning("%s: %s; searching new and modified records separately", what, e)
            return None

    def _window(
        self,
        term: str,
        what: str,
        datetype: str,
        start: date,
        end: date,
        errors: list[str],
        *,
        skip_overflow: bool = False,
    ) -> list[SearchResult] | None:
        """One dated search; None (and the error noted) when it failed. Errors say which
        search failed: each keeps its own progress."""
        what += " (new records)" if datetype == "edat" else " (modifications)"
        try:
            return self.eutils.search_window(
                term, what=what, datetype=datetype, start=start, end=end, skip_overflow=skip_overflow
            )
        except SourceError as e:
            errors.append(str(e))
            return None

    # ------------------------------------------------------------------ 2. fetch

    def _fetch(self, parts: list[_Query]) -> dict[str, Record]:
        """Fetch the union of what `parts` want, each PMID once. A failure fails every
        query that wanted records (nothing of theirs is stored); the others go on."""
        needing = [p for p in parts if p.wanted]
        if not needing:
            return {}
        wanted = list(dict.fromkeys(i for p in needing for i in p.wanted))
        users: dict[str, list[str]] = {}
        for p in needing:
            for i in p.wanted:
                users.setdefault(i, []).append(p.q.name)
        what = needing[0].what if len(needing) == 1 else f"queries {', '.join(p.q.name for p in needing)}"
        records: dict[str, Record] = {}
        problems: list[str] = []

        def parse_all(bodies: Iterable[bytes]) -> None:
            # the next batch is fetched while this one is parsed; the same requests in
            # the same order, through the same client and request budget
            for body in prefetched(bodies):
                got = parse_pubmed(body, what=what, problems=problems)
                counts: dict[str, int] = {}
                for r in got:
                    if r.source == PUBMED and r.key not in records:
                        for name in users.get(r.key, ()):
                            counts[name] = counts.get(name, 0) + 1
                    records[r.key] = r
                for name, n in counts.items():
                    self.progress.fetched(name, n)

        try:
            single = needing[0] if len(needing) == 1 else None
            if single is not None and single.history and all(r.webenv and r.query_key for r in single.history):
                from_history = set(i for r in single.history for i in r.ids)
                extra = [i for i in wanted if i not in from_history]
                bodies: Iterator[bytes] = chain(
                    (b for r in single.history if r.count for b in self.eutils.efetch_history(r, what=what)),
                    self.eutils.efetch_ids(extra, what=what) if extra else iter(()),
                )
            else:
                bodies = self.eutils.efetch_ids(wanted, what=what)
            parse_all(bodies)
            again = [i for i in wanted if i not in records]
            if again:
                log.warning(
                    "%s: efetch left out %d of %d records; asking for them again", what, len(again), len(wanted)
                )
                parse_all(self.eutils.efetch_ids(again, what=f"{what} (records left out)"))
        except SourceError as e:
            for p in needing:
                p.failed = True
                p.result.error = str(e)
                record_failure(self.store, p.q.name, PUBMED, str(e), self.now)
            return {}
        for p in needing:
            p.result.warnings += problems
        return records

    # ------------------------------------------------------------------ 3. store

    def _store(self, p: _Query, fetched: dict[str, Record]) -> None:
        q, now, result = p.q, self.now, p.result
        mine = [fetched[i] for i in p.wanted if i in fetched]
        missing = [i for i in p.wanted if i not in fetched]
        gave_up = self._count_missing(p, missing)
        got = [r.key for r in mine]
        matches: dict[tuple[str, str], tuple[str, ...]] = {(PUBMED, k): () for k in got}
        matches.update({(PUBMED, k): () for k in p.known_unfetched})

        def bookkeeping(tx: Connection, ids: dict[tuple[str, str], int]) -> None:
            self.store.mark_checked(tx, [ids[PUBMED, k] for k in got if (PUBMED, k) in ids], now)
            self.store.found_missing(tx, q.name, got)
            self.store.note_missing(tx, q.name, missing, now)
            self.store.give_up_missing(tx, q.name, gave_up, now)
            for day, count in result.overflowed:
                self.store.note_overflow(tx, q.name, day, count, now)

        batch = Batch(
            name=q.name,
            source=PUBMED,
            records=mine,
            matches={q.name: matches},
            notices=True,
            # one search failed: the other's progress is kept, the failure shown
            progress=[Progress(q.name, PUBMED, dict(p.marks), error=p.error or None)],
            bookkeeping=[bookkeeping],
        )
        try:
            done = self.store.write(lambda tx: ingest(self.store, tx, batch, now), what=p.what)
        except StoreError as e:
            result.error = f"{p.what}: could not store what it fetched: {first_line(e)}"
            log.warning("poll query=%s source=pubmed: %s", q.name, result.error)
            record_failure(self.store, q.name, PUBMED, result.error, now)
            return
        result.new, result.changed, result.events = done.new, done.changed, done.events
        result.error = p.error or None

    def _count_missing(self, p: _Query, missing: list[str]) -> list[str]:
        """Say how many records the answers left out; return those to give up now."""
        now, what, result = self.now, p.what, p.result
        gave_up = sorted(i for i in missing if now - p.gaps.get(i, now) >= MISSING_GIVE_UP)
        waiting = [i for i in missing if i not in gave_up]
        result.missing, result.gave_up = len(waiting), gave_up
        if waiting:
            result.warnings.append(
                f"{what}: PubMed left {len(waiting)} record(s) out of its answers ({some(waiting)}): "
                "asked for again at the next poll"
            )
        if gave_up:
            result.warnings.append(
                f"{what}: PubMed has not answered {some(gave_up)} for {MISSING_GIVE_UP.days} days: "
                "given up (deleted from PubMed?)"
            )
        return gave_up


def poll_notices(store: IngestPort, eutils: EutilsClient, now: datetime, *, reached: bool = False) -> PollResult:
    """One search per cycle for erratum, retraction and concern notices entered or
    modified since the watermark (PubMed may add a notice's link to the original after
    it was entered); those naming stored records are stored and become events. The
    first cycle only sets the watermark: records fetched now already carry their
    earlier notices. It does so once NCBI has answered (`reached`: it did in this
    cycle; else one search of today, its answer unused): a first search NCBI never
    answered is a failure, tried again, not a success (issue 22)."""
    result = PollResult("notices", PUBMED)
    today = pubmed_day(now)  # NCBI's day: US Eastern
    before = eutils.requests_made
    with store.transaction() as tx:
        state = store.poll_state(tx, SHARED, NOTICES)
    progress = [Progress(SHARED, NOTICES, {"watermark": today.isoformat()})]
    try:
        if state is None or not state.watermark:
            if not reached:
                eutils.esearch(
                    NOTICE_TERM,
                    what="notice search",
                    datetype="edat",
                    mindate=today,
                    maxdate=today,
                    retmax=0,
                    usehistory=False,
                )
            store.write(lambda tx: ingest(store, tx, Batch("notices", NOTICES, progress=progress), now), what="notices")
            return result
        start = window_start(state.watermark)  # a day of overlap: stored notices cost nothing
        found = eutils.search_entered_or_modified(NOTICE_TERM, what="notice search", start=start, end=today)
        ids = _ids(found)
        result.found = len(ids)
        with store.transaction() as tx:
            stored = set(store.records_by_pmid(tx, ids))
        todo = [i for i in ids if i not in stored]
        notices: list[Record] = []
        problems: list[str] = []
        for body in prefetched(eutils.efetch_ids(todo, what="notice search")) if todo else ():
            notices += parse_pubmed(body, what="notice search", problems=problems)
        result.warnings += problems

        def apply(tx: Connection) -> int:
            # only notices naming a record litwatch holds are kept (read in this transaction)
            targets = store.records_by_pmid(tx, [pmid for r in notices for _, pmid in notice_targets(r)])
            relevant = [r for r in notices if any(pmid in targets for _, pmid in notice_targets(r))]
            done = ingest(store, tx, Batch("notices", NOTICES, records=relevant, notices=True, progress=progress), now)
            result.new = done.new
            return done.events

        result.events = store.write(apply, what="notice search")
    except SourceError as e:
        result.error = str(e)
        record_failure(store, SHARED, NOTICES, str(e), now)
    finally:
        result.requests = eutils.requests_made - before
    return result


def _stored(result: PollResult) -> str:
    """What a poll stored, for a person watching it (PollProgress.stored)."""
    if result.error:
        return f"failed: {result.error}"
    return f"stored: new {result.new}, changed {result.changed}, events {result.events}"


def _window(start: date, end: date) -> str:
    return f"{start.isoformat()}..{end.isoformat()}"


def _ids(results: list[SearchResult]) -> list[str]:
    return list(dict.fromkeys(i for r in results for i in r.ids))


__all__ = ["NOTICE_TERM", "PubmedCycle", "poll_notices"]
