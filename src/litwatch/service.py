"""The use cases: poll, digest, status, history. Owns every transaction boundary.

Rules (ARCHITECTURE.md): a poll stores records, versions, events and its watermark in
one transaction, or nothing; a digest commits its outbox row and deliveries before it
sends, then marks the row sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection

from . import events as ev
from .config import DigestSettings, QuerySettings, Settings
from .coordination import Coordinator, RequestBudget
from .errors import LitwatchError, SourceError, StoreError, UsageError, first_line
from .parse.pubmed import parse_pubmed
from .records import PUBMED, FieldChange, NewEvent, Record
from .sources.eutils import ESEARCH_CAP, EutilsClient, SearchResult, prefetched, pubmed_day, window_start
from .store import Current, PendingEvent, Store
from .store.ports import ServicePort
from .store.rows import EventRow, Lease, OutboxMessage, Overflow, PollState

# A poll needs none of the digest side (Jinja2, css-inline, the mail transports, the
# outbox): it is imported where a digest is built or sent, so `litwatch poll` (and each
# poll of `run`) does not pay for it (issue 15). Annotations only, below.
if TYPE_CHECKING:
    from .digest import Renderer
    from .digest.group import DigestData
    from .mail import Transport
    from .outbox import DigestResult, Outbox, Part

log = logging.getLogger(__name__)

NOTICE_TERM = (
    '"published erratum"[pt] OR "retraction of publication"[pt] OR "retraction notice"[pt]'
    ' OR "expression of concern"[pt]'
)
NOTICES = "notices"  # poll_state source of the shared notice search
SHARED = "*"  # poll_state query of sources shared by all queries
# A PMID that a search finds but efetch keeps leaving out is asked for again at every poll
# for this long, then given up (PubMed does delete records) and shown so in `status`.
MISSING_GIVE_UP = timedelta(days=3)
# `status` shows skipped days and given-up records this long; a digest that never went
# out shows the skipped days of this long
REPORT_GAPS_FOR = timedelta(days=30)


def utcnow() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(UTC).replace(tzinfo=None)


# How long `litwatch poll` / `litwatch digest` wait for a query or digest that another
# litwatch process is working on (the daemon's job, another hand-started run) before
# skipping it: they never run it at the same time, and never fail for it.
CLAIM_WAIT = 60.0


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
            head += f", gave up on {len(self.gave_up)} missing for {days} days ({_some(self.gave_up)})"
        for day, count in self.overflowed:
            head += f", modifications of {day} skipped ({count} records, over PubMed's {ESEARCH_CAP} cap)"
        if self.error:
            return f"{head}, errors 1: {self.error}"
        return f"{head}, errors 0" + (f" ({len(self.warnings)} warnings)" if self.warnings else "")


@dataclass
class _Searched:
    entered: list[SearchResult] | None  # None: the search failed
    modified: list[SearchResult] | None
    error: str  # "" when both ran
    marks: dict[str, str]  # the watermarks the searches that ran may move to
    searched: str = ""  # the windows searched, for a person watching (PollProgress)


@dataclass
class _Fetched:
    records: list[Record]
    warnings: list[str]
    missing: list[str] = field(default_factory=list)  # asked for, never answered


class PollProgress(Protocol):
    """What a poll tells a person watching it, per query (`name`): what it searched and
    how many records it will fetch, each batch of records fetched, and what it stored.
    `litwatch poll` draws it as a progress bar on a terminal (cli.py); by default nothing."""

    def searched(self, name: str, searched: str, total: int) -> None: ...

    def fetched(self, name: str, n: int) -> None: ...

    def stored(self, name: str, summary: str) -> None: ...


class _Quiet:
    def searched(self, name: str, searched: str, total: int) -> None:
        pass

    def fetched(self, name: str, n: int) -> None:
        pass

    def stored(self, name: str, summary: str) -> None:
        pass


class Service:
    def __init__(
        self,
        settings: Settings,
        store: ServicePort | None = None,
        now: Callable[[], datetime] = utcnow,
        coordination: Coordinator | None = None,
        progress: PollProgress | None = None,
    ) -> None:
        self.settings = settings
        self.store: ServicePort = store or Store(settings.database)
        self.now = now  # the host's clock (injectable); claims use the database's
        self.coordination = coordination or Coordinator(self.store, clock=now)
        self.progress: PollProgress = progress or _Quiet()
        self._eutils: EutilsClient | None = None

    @cached_property
    def renderer(self) -> Renderer:
        from .digest import Renderer

        return Renderer(self.settings.template_dir)

    @cached_property
    def outbox(self) -> Outbox:
        from .outbox import Outbox

        return Outbox(self.store, self.settings.mail, self.now)

    def reconfigured(self, settings: Settings) -> Service:
        """The service for a reloaded config: same database, same claims."""
        return Service(settings, store=self.store, now=self.now, coordination=self.coordination)

    def close(self) -> None:
        if self._eutils is not None:
            self._eutils.close()
        self.coordination.close()
        self.store.close()

    @property
    def eutils(self) -> EutilsClient:
        if self._eutils is None:
            # one request budget for every process on this database (ARCHITECTURE.md rule 6)
            host = urlsplit(self.settings.pubmed.base_url).netloc
            budget = RequestBudget(self.store, f"eutils:{host}", self.settings.pubmed.rate)
            self._eutils = EutilsClient(self.settings.pubmed, limiter=budget)
        return self._eutils

    # ================================================================== poll

    def poll(self, names: Sequence[str] = (), *, wait: float = CLAIM_WAIT) -> list[PollResult]:
        """`litwatch poll`: each query under the claim the daemon's job takes (waiting up
        to `wait` seconds for one another process holds, then skipping it)."""
        from .tasks import NOTICES_TASK, poll_task

        queries = self._select_queries(names)
        results: list[PollResult] = []
        claims = self.coordination
        with ExitStack() as stack:
            held = []
            for q in queries:
                h = stack.enter_context(claims.hold(poll_task(q.name), start=True, wait=wait))
                if h.claim.won:
                    held.append(q)
                else:
                    results.append(PollResult(q.name, "*", skipped=_busy(h.claim.holder)))
            busy_feeds = set()
            for f in sorted({f for q in held for f in q.feeds}):
                h = stack.enter_context(claims.hold(f"feed:{f}", wait=wait))
                if not h.claim.won:
                    busy_feeds.add(f)
                    results.append(PollResult(f, f"feed:{f}", skipped=_busy(h.claim.holder)))
            results += [self.isolated(q.name, PUBMED, q.name, partial(self.poll_pubmed, q)) for q in held if q.pubmed]
            results += self.poll_feeds([q for q in held if not busy_feeds & set(q.feeds)])
            if any(q.pubmed for q in held) and self.settings.pubmed.notices:
                h = stack.enter_context(claims.hold(NOTICES_TASK, start=True, wait=wait))
                results.append(
                    self.isolated(SHARED, NOTICES, "notices", self.poll_notices)
                    if h.claim.won
                    else PollResult("notices", PUBMED, skipped=_busy(h.claim.holder))
                )
        return results

    def isolated(self, query: str, source: str, name: str, poll: Callable[[], PollResult]) -> PollResult:
        """One source's poll. What it raises — a store error its data causes (a value
        the database refuses), or a bug — is that source's recorded failure: the cycle
        goes on with the other sources (issue 13, case 5)."""
        what = {PUBMED: f"query {name}", NOTICES: "notice search"}.get(source, f"feed {name}")
        try:
            return poll()
        except StoreError as e:
            error = f"{what}: could not store what it fetched: {first_line(e)}"
            log.warning("poll query=%s source=%s: %s", query, source, error)
        except Exception as e:  # noqa: BLE001 - a bug in one source must not end the cycle; logged with its traceback
            log.exception("poll query=%s source=%s: unexpected error", query, source)
            error = f"{what}: unexpected error: {type(e).__name__}: {first_line(e)}"
        self._record_failure(query, source, error, self.now())
        return PollResult(name, PUBMED if source in (PUBMED, NOTICES) else source, error=error)

    def _select_queries(self, names: Sequence[str]) -> list[QuerySettings]:
        return _select("query", "queries", self.settings.queries, names)

    def poll_feeds(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """Feed sources: each feed is fetched once for all queries using it."""
        if not any(q.feeds for q in queries):
            return []
        from .feedpoll import poll_feeds

        return poll_feeds(self, queries)

    def poll_pubmed(self, q: QuerySettings) -> PollResult:
        """Search new records (EDAT) and modified ones (MDAT) since their watermarks, fetch
        what is new or modified plus the PMIDs earlier answers left out, and store it all
        with the watermarks in one transaction. The two searches keep their own progress:
        one failing (or a day of modifications over PubMed's cap, which is reported and
        skipped) does not hold the other back."""
        assert q.pubmed
        result = PollResult(q.name, PUBMED)
        now = self.now()
        what = f"query {q.name}"
        before = self.eutils.requests_made
        with self.store.transaction() as tx:
            state = self.store.poll_state(tx, q.name, PUBMED)
            # PMIDs earlier answers left out: {pmid: first missing}; given-up ones are not
            # asked for again, but stay given up if a search brings them back
            gaps = self.store.missing_pmids(tx, q.name, given_up=True)
            retry = self.store.missing_pmids(tx, q.name)
        found = self._search_pubmed(q.pubmed, state, pubmed_day(now), what)
        try:
            if found.entered is None and found.modified is None:
                raise SourceError(found.error)
            for r in (*(found.entered or ()), *(found.modified or ())):
                result.warnings += [f"{what}: {w}" for w in r.warnings]
            result.overflowed = [(r.overflow_day.isoformat(), r.count) for r in found.modified or () if r.overflow_day]
            entered_ids = _ids(found.entered or [])
            modified_ids = _ids(found.modified or [])
            result.found = len(set(entered_ids) | set(modified_ids))
            with self.store.transaction() as tx:
                known = set(self.store.records_by_pmid(tx, entered_ids))  # keys only: no fields JSON
            fetched = self._fetch_pubmed(
                found.entered or [], entered_ids, known, modified_ids, list(retry), what, q.name, found.searched
            )
            result.warnings += fetched.warnings
            gave_up = self._count_missing(result, fetched.missing, gaps, now, what)
            known_unfetched = [i for i in entered_ids if i in known]

            def apply(tx: Connection) -> None:
                self._apply_pubmed(tx, q, fetched.records, known_unfetched, now, result)
                self.store.found_missing(tx, q.name, [r.key for r in fetched.records])
                self.store.note_missing(tx, q.name, fetched.missing, now)
                self.store.give_up_missing(tx, q.name, gave_up, now)
                for day, count in result.overflowed:
                    self.store.note_overflow(tx, q.name, day, count, now)
                if found.error:  # one search failed: the other's progress is kept, the failure shown
                    self.store.poll_failed(tx, q.name, PUBMED, found.error, now, **found.marks)
                else:
                    self.store.poll_ok(tx, q.name, PUBMED, now, last_error=None, **found.marks)

            self.store.write(apply, what=what)
            result.error = found.error or None
        except SourceError as e:
            result.error = str(e)
            self._record_failure(q.name, PUBMED, str(e), now)
        result.requests = self.eutils.requests_made - before
        self.progress.stored(q.name, _stored(result))
        log.info(
            "poll query=%s source=pubmed found=%d new=%d changed=%d events=%d missing=%d skipped_days=%d "
            "requests=%d error=%s",
            q.name,
            result.found,
            result.new,
            result.changed,
            result.events,
            result.missing,
            len(result.overflowed),
            result.requests,
            result.error or "-",
        )
        return result

    def _search_pubmed(self, term: str, state: PollState | None, today: date, what: str) -> _Searched:
        """The new-record and the modification search, each from its own watermark
        (minus the overlap) to NCBI's `today`; a failed one is None, its error noted."""
        errors: list[str] = []
        mdat_from: date | None = None
        if state is None or not state.watermark:
            entered_from = today - timedelta(days=self.settings.pubmed.first_lookback_days)
            entered = self._search(term, what, "edat", entered_from, today, errors)
            # a first look-back fetches every record it finds: nothing known can have changed
            modified: list[SearchResult] | None = [] if entered is not None else None
        else:
            entered_from = window_start(state.watermark)
            entered = self._search(term, what, "edat", entered_from, today, errors)
            # Known records the query matches that changed since the watermark (errata,
            # retractions, new titles): PubMed bumps their modification date.
            mdat_from = window_start(state.mdat_watermark or state.watermark)
            modified = self._search(term, what, "mdat", mdat_from, today, errors, skip_overflow=True)
        searched = f"entered {_window(entered_from, today)}"
        if mdat_from is not None:
            searched += f", modified {_window(mdat_from, today)}"
        marks = {"watermark": today.isoformat()} if entered is not None else {}
        if modified is not None:
            marks["mdat_watermark"] = today.isoformat()
        return _Searched(entered, modified, "; ".join(dict.fromkeys(errors)), marks, searched)

    def _count_missing(
        self, result: PollResult, missing: list[str], gaps: dict[str, datetime], now: datetime, what: str
    ) -> list[str]:
        """Say how many records the answers left out; return those to give up now."""
        gave_up = sorted(p for p in missing if now - gaps.get(p, now) >= MISSING_GIVE_UP)
        waiting = [p for p in missing if p not in gave_up]
        result.missing, result.gave_up = len(waiting), gave_up
        if waiting:
            result.warnings.append(
                f"{what}: PubMed left {len(waiting)} record(s) out of its answers ({_some(waiting)}): "
                "asked for again at the next poll"
            )
        if gave_up:
            result.warnings.append(
                f"{what}: PubMed has not answered {_some(gave_up)} for {MISSING_GIVE_UP.days} days: "
                "given up (deleted from PubMed?)"
            )
        return gave_up

    def _search(
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

    def _fetch_pubmed(
        self,
        entered: list[SearchResult],
        entered_ids: list[str],
        known: set[str],
        modified_ids: list[str],
        retry: list[str],
        what: str,
        name: str = "",
        searched: str = "",
    ) -> _Fetched:
        """efetch what is new or modified, with as few requests as possible: from the
        history server when every entered id is new, else by id (POST when long). Then
        compare with what was asked: efetch can answer 200 with records left out, so the
        missing PMIDs are asked for once more by id, and what is still missing is
        returned in `missing` for the caller to keep and retry."""
        problems: list[str] = []
        records: list[Record] = []
        modified_set = set(modified_ids)
        entered_set = set(entered_ids)
        eutils = self.eutils
        history: Iterable[bytes] = ()
        if not known and all(r.webenv and r.query_key for r in entered):
            history = (b for r in entered if r.count for b in eutils.efetch_history(r, what=what))
            wanted = list(dict.fromkeys([*entered_ids, *modified_ids, *retry]))
            extra = [i for i in wanted if i not in entered_set]
        else:
            wanted = [i for i in dict.fromkeys([*entered_ids, *modified_ids]) if i not in known or i in modified_set]
            wanted = list(dict.fromkeys([*wanted, *retry]))
            extra = wanted
        self.progress.searched(name, searched, len(wanted))

        def parse_all(bodies: Iterable[bytes]) -> None:
            # the next batch is fetched while this one is parsed (issue 15); the same
            # requests in the same order, through the same client and request budget
            for body in prefetched(bodies):
                n = len(records)
                records.extend(parse_pubmed(body, what=what, problems=problems))
                self.progress.fetched(name, len(records) - n)

        parse_all(chain(history, eutils.efetch_ids(extra, what=what) if extra else ()))
        got = {r.key for r in records if r.source == PUBMED}
        again = [i for i in wanted if i not in got]
        if again:
            log.warning("%s: efetch left out %d of %d records; asking for them again", what, len(again), len(wanted))
            parse_all(eutils.efetch_ids(again, what=f"{what} (records left out)"))
            got = {r.key for r in records if r.source == PUBMED}
        return _Fetched(records, problems, [i for i in wanted if i not in got])

    def _apply_pubmed(
        self,
        tx: Connection,
        q: QuerySettings,
        records: list[Record],
        known_unfetched: list[str],
        now: datetime,
        result: PollResult,
    ) -> None:
        saved = self.save_records(tx, records, now)
        result.new = sum(1 for s in saved if s.status == "created")
        result.changed = sum(1 for s in saved if s.status == "changed")
        result.events = 0
        # records the query matches: fetched ones plus stored ones not fetched again
        matched = {r.key: saved_id for r, saved_id in ((s.record, s.record_id) for s in saved)}
        if known_unfetched:
            matched.update(self.store.records_by_pmid(tx, known_unfetched))
        # changes first: a query matching a changed record for the first time learns of
        # it as new, not as an update of something it never showed
        result.events += self.emit_for_changes(tx, saved, now)
        # what this poll just wrote is the current version of those records: not read back
        stored = {s.record_id: (s.record, s.n) for s in saved if s.status != "same"}
        result.events += self.emit_for_matches(tx, q.name, matched, now, approvals_source=False, stored=stored)
        result.events += self.emit_for_notices(tx, [s.record for s in saved], now)

    # ------------------------------------------------------------------ shared by every source

    def save_records(self, tx: Connection, records: Iterable[Record], now: datetime) -> list[Saved]:
        """Store what is new or changed; an unchanged record writes nothing."""
        by_source: dict[str, dict[str, Record]] = {}
        for r in records:
            by_source.setdefault(r.source, {})[r.key] = r  # the last parse of a key wins
        saved: list[Saved] = []
        for source, recs in by_source.items():
            current = self.store.current(tx, source, recs)
            new: list[tuple[Record, str]] = []
            changed: list[tuple[Current, Record, str, list[list[Any]]]] = []
            for key, rec in recs.items():
                h = ev.fingerprint(rec)
                cur = current.get(key)
                if cur is None:
                    new.append((rec, h))
                elif cur.hash != h:
                    changes = ev.diff(cur.record, rec)
                    changed.append((cur, rec, h, [[c.field, c.old, c.new] for c in changes]))
                    saved.append(Saved(rec, cur.record_id, cur.n + 1, cur.record, changes, status="changed"))
                else:
                    saved.append(Saved(rec, cur.record_id, cur.n, None, [], status="same"))
            ids = self.store.insert_records(tx, new, now)
            self.store.add_versions(tx, changed, now)
            saved += [Saved(rec, ids[rec.key], 1, None, [], status="created") for rec, _ in new]
        return saved

    def emit_for_matches(
        self,
        tx: Connection,
        query: str,
        matched: dict[str, int],
        now: datetime,
        *,
        approvals_source: bool,
        terms: dict[str, tuple[str, ...]] | None = None,
        stored: dict[int, tuple[Record, int]] | None = None,
    ) -> int:
        """`new`/`approval` for records the query matches for the first time. `stored`:
        the current version (record, n) of records the caller has just written, so a first
        poll's thousands of new records are not read back and decoded again (issue 15)."""
        if not matched:
            return 0
        hit_before = self.store.hits_for(tx, matched.values())
        first = {key: rid for key, rid in matched.items() if query not in hit_before.get(rid, set())}
        if not first:
            return 0
        terms = terms or {}
        self.store.add_hits(tx, [(rid, query, terms.get(key, ())) for key, rid in first.items()], now)
        stored = stored or {}
        current = self.store.current_by_id(tx, [rid for rid in first.values() if rid not in stored])
        rows = []
        for rid in first.values():
            record, n = stored[rid] if rid in stored else (current[rid].record, current[rid].n)
            kind = ev.classify_new(record, approvals_source=approvals_source)
            if kind is None:
                continue  # a notice: reported as news about what it names, not as a paper
            rows.append(_row(rid, query, n, NewEvent(kind, f"first:{record.source}:{record.key}")))
        return self.store.add_events(tx, rows, now)

    def emit_for_changes(self, tx: Connection, saved: list[Saved], now: datetime) -> int:
        """Change events to every query that ever matched a changed record."""
        changed = [s for s in saved if s.old is not None]
        if not changed:
            return 0
        queries = self.store.hits_for(tx, [s.record_id for s in changed])
        rows = []
        for s in changed:
            assert s.old is not None
            for e in ev.classify_change(s.old, s.record, s.changes, s.n):
                for query in sorted(queries.get(s.record_id, set())):
                    rows.append(_row(s.record_id, query, s.n, e))
        return self.store.add_events(tx, rows, now)

    def emit_for_notices(self, tx: Connection, records: Iterable[Record], now: datetime) -> int:
        """Notices (errata, retraction notices, expressions of concern) become events of
        the stored records they name, for every query that matched those."""
        pairs = [(kind, pmid, r) for r in records if r.source == PUBMED for kind, pmid in ev.notice_targets(r)]
        if not pairs:
            return 0
        targets = self.store.records_by_pmid(tx, [pmid for _, pmid, _ in pairs])
        if not targets:
            return 0
        current = self.store.current_by_id(tx, targets.values())
        first = self.store.first_versions(tx, targets.values())
        queries = self.store.hits_for(tx, targets.values())
        rows = []
        for kind, pmid, notice in pairs:
            rid = targets.get(pmid)
            if rid is None or ev.known_at_first_sight(first[rid], kind, notice.key):
                continue  # it was a new paper already showing this notice: not news twice
            e = ev.notice_event(kind, current[rid].record, notice)
            for query in sorted(queries.get(rid, set())):
                rows.append(_row(rid, query, current[rid].n, e))
        return self.store.add_events(tx, rows, now)

    def _record_failure(self, query: str, source: str, error: str, now: datetime) -> None:
        try:
            with self.store.transaction() as tx:
                self.store.poll_failed(tx, query, source, error, now)
        except Exception:  # noqa: BLE001 - the failure is reported anyway; don't mask it
            log.exception("could not record the failure of %s/%s", query, source)

    # ------------------------------------------------------------------ notices

    def poll_notices(self) -> PollResult:
        """One search per cycle for erratum, retraction and concern notices entered since
        the watermark; those naming stored records become events. The first cycle only
        sets the watermark: records fetched now already carry their earlier notices."""
        result = PollResult("notices", PUBMED)
        now = self.now()
        today = pubmed_day(now)  # NCBI's day: US Eastern
        before = self.eutils.requests_made
        with self.store.transaction() as tx:
            state = self.store.poll_state(tx, SHARED, NOTICES)
        try:
            if state is None or not state.watermark:
                with self.store.transaction() as tx:
                    self.store.poll_ok(tx, SHARED, NOTICES, now, watermark=today.isoformat())
                return result
            start = window_start(state.watermark)  # a day of overlap: stored notices cost nothing
            found = self.eutils.search_window(
                NOTICE_TERM, what="notice search", datetype="edat", start=start, end=today
            )
            ids = _ids(found)
            result.found = len(ids)
            with self.store.transaction() as tx:
                stored = set(self.store.records_by_pmid(tx, ids))
            todo = [i for i in ids if i not in stored]
            notices: list[Record] = []
            problems: list[str] = []
            for body in prefetched(self.eutils.efetch_ids(todo, what="notice search")) if todo else ():
                notices += parse_pubmed(body, what="notice search", problems=problems)
            result.warnings += problems

            def apply(tx: Connection) -> None:
                targets = self.store.records_by_pmid(tx, [p for r in notices for _, p in ev.notice_targets(r)])
                relevant = [r for r in notices if any(p in targets for _, p in ev.notice_targets(r))]
                saved = self.save_records(tx, relevant, now)
                result.new = sum(1 for s in saved if s.status == "created")
                result.events = self.emit_for_notices(tx, relevant, now)
                self.store.poll_ok(tx, SHARED, NOTICES, now, watermark=today.isoformat(), last_error=None)

            self.store.write(apply, what="notice search")
        except SourceError as e:
            result.error = str(e)
            self._record_failure(SHARED, NOTICES, str(e), now)
        result.requests = self.eutils.requests_made - before
        return result

    # ================================================================== digest

    def digest(
        self,
        names: Sequence[str] = (),
        *,
        dry_run: bool = False,
        html_path: Path | None = None,
        respect_backoff: bool = False,
        retry_failed: bool = False,
        wait: float = CLAIM_WAIT,
    ) -> list[DigestResult]:
        """Send what is queued, then build and send what is pending, digest by digest.
        `retry_failed`: the messages refused for good are queued again first."""
        from .mail import transport_for
        from .tasks import digest_task

        digests = self._select_digests(names)
        results: list[DigestResult] = []
        last_html = ""
        if retry_failed and not dry_run:
            self.outbox.requeue_refused([d.name for d in digests])
        # one SMTP connection for the whole run, opened at the first message (none: no connection)
        with transport_for(self.settings.mail) as transport, ExitStack() as claims:
            for d in digests:
                if dry_run:
                    for res in self._build(d, dry_run=True):
                        results.append(res)
                        last_html = res.html or last_html
                    continue
                # the digest's claim, as the daemon's job takes it (re-entrant there):
                # another process sending it now makes this run wait, then skip it
                held = claims.enter_context(self.coordination.hold(digest_task(d.name), start=True, wait=wait))
                if not held.claim.won:
                    log.warning("digest %s: %s; skipped", d.name, _busy(held.claim.holder))
                    continue
                blocked = self.send_queued(
                    [d.name], respect_backoff=respect_backoff, results=results, transport=transport
                )
                for res in self._build(d, dry_run=False, skip=blocked):
                    last_html = res.html or last_html
                self.send_queued([d.name], respect_backoff=False, results=results, only_new=True, transport=transport)
                with self.store.transaction() as tx:
                    self.store.set_digest_state(tx, d.name, last_run=self.now())
        if html_path is not None and last_html:
            html_path.write_text(last_html, encoding="utf-8")
        return results

    def _select_digests(self, names: Sequence[str]) -> list[DigestSettings]:
        return _select("digest", "digests", self.settings.digests, names)

    def render(
        self, d: DigestSettings, recipient: str, tx: Connection, now: datetime, since: datetime | None = None
    ) -> DigestData | None:
        pending = self.store.pending_events(
            tx, queries=d.queries, kinds=d.events, digest=d.name, recipient=recipient, since=since
        )
        if not pending:
            return None
        return self._group(d, pending, tx, now, max_items=d.max_items)

    def _group(
        self, d: DigestSettings, pending: Sequence[PendingEvent], tx: Connection, now: datetime, *, max_items: int
    ) -> DigestData:
        from .digest import group

        self._fill_notice_titles(tx, pending)
        return group(
            d.name,
            pending,
            max_items=max_items,
            now=now,
            queries=d.queries,
            failing=self.failing_sources(tx, d),
            config=self.settings.source,
        )

    def recipient_since(self, tx: Connection, d: DigestSettings, recipient: str, now: datetime) -> datetime:
        """From when `recipient` is sent the digest's events: as recorded, or, the first
        time, `recipient_start` (what a dry run or `status` shows, not recorded)."""
        since = self.store.recipient_since(tx, d.name, recipient)
        if since is not None:
            return since
        st = self.store.digest_state(tx, d.name)
        return recipient_start(
            sent_before=st is not None and st.last_sent is not None,
            last_run=st.last_run if st is not None else None,
            now=now,
            backfill=d.backfill_window,
        )

    def _fill_notice_titles(self, tx: Connection, pending: Sequence[PendingEvent]) -> None:
        """An erratum first seen as `ErratumIn` on the original names only the notice's
        PMID; when the notice itself is stored, show its title and link too."""
        wanted = {str(p) for e in pending if "notice" not in e.detail for p in e.detail.get("notices", [])}
        if not wanted:
            return
        found = self.store.current(tx, PUBMED, wanted)
        for e in pending:
            pmids = e.detail.get("notices", [])
            if "notice" not in e.detail and pmids and str(pmids[0]) in found:
                n = found[str(pmids[0])].record
                e.detail["notice"] = {"pmid": n.key, "title": n.title, "url": n.web_url, "doi": n.doi}

    def failing_sources(self, tx: Connection, d: DigestSettings) -> list[dict[str, Any]]:
        feeds = {f"feed:{f}" for q in d.queries for f in self.settings.query(q).feeds}
        out = []
        for row in self.store.all_poll_states(tx):
            mine = row.query in d.queries or (row.query == SHARED and (row.source in feeds or row.source == NOTICES))
            if mine and row.failing_since is not None:
                name = row.query if row.query != SHARED else row.source
                if row.query != SHARED:
                    name = f"{row.query} ({row.source})"
                out.append({"name": name, "since": row.failing_since, "error": row.last_error or ""})
        # days whose modifications a query had to skip, since this digest last went out
        st = self.store.digest_state(tx, d.name)
        since = st.last_sent if st is not None and st.last_sent is not None else self.now() - REPORT_GAPS_FOR
        for o in self.store.overflows(tx, d.queries, since=since):
            out.append({"name": f"{o.query} (pubmed modifications)", "since": o.noted_at, "error": _overflow_text(o)})
        return out

    def _build(self, d: DigestSettings, *, dry_run: bool, skip: set[str] = frozenset()) -> list[DigestResult]:  # type: ignore[assignment]
        out = []
        now = self.now()
        texts_seen: set[str] = set()
        for recipient in d.to:
            if recipient in skip:
                continue  # a message to them is still queued; new events wait for the next one
            out += self._build_for(d, recipient, now, dry_run=dry_run, texts_seen=texts_seen)
        return out

    def _build_for(
        self, d: DigestSettings, recipient: str, now: datetime, *, dry_run: bool, texts_seen: set[str]
    ) -> list[DigestResult]:
        """Queue one message per `max_items` pending items for `recipient`, until none is
        left: a backlog goes out now in several mails, not one mail per scheduled run.
        Each message binds its events (deliveries) when queued, so the next round reads
        only what is left. A dry run shows the first message only."""
        if dry_run:
            with self.store.transaction() as tx:
                data = self.render(d, recipient, tx, now, self.recipient_since(tx, d, recipient, now))
                tx.rollback()
            if data is None:
                return []
            res = self._result(d, recipient, data)
            text = self.renderer.text(data)
            if text not in texts_seen:
                res.text = text
                texts_seen.add(text)
            return [res]
        out: list[DigestResult] = []
        while True:
            # Another process (a `litwatch digest` beside the daemon) may bind the same
            # events at the same moment: the unique deliveries stop one of the two, which
            # rolls back and reads again what is left.
            queued, more = self.store.write(
                lambda tx: self._queue_next(tx, d, recipient, now),
                what=f"digest {d.name} for {recipient}",
                attempts=10,
                pause=0.1,
            )
            if queued is None:
                return out
            out.append(queued)
            if not more:
                return out

    def _queue_next(
        self, tx: Connection, d: DigestSettings, recipient: str, now: datetime
    ) -> tuple[DigestResult | None, bool]:
        since = self.store.start_recipient(tx, d.name, recipient, self.recipient_since(tx, d, recipient, now))
        data = self.render(d, recipient, tx, now, since)
        if data is None:
            return None, False
        res = self._result(d, recipient, data)
        part = self._message(d, recipient, data)
        res.message_id = part.message_id
        self.outbox.queue(tx, d.name, recipient, part, now)
        # (no events bound: nothing would change)
        return res, bool(data.more_waiting and data.event_ids)

    def _result(self, d: DigestSettings, recipient: str, data: DigestData) -> DigestResult:
        from .outbox import DigestResult

        subject = self.renderer.subject(data, d.subject)
        return DigestResult(
            d.name,
            recipient,
            items=data.items,
            events=len(data.event_ids),
            subject=subject,
            html=self.renderer.html(data),
        )

    def _message(self, d: DigestSettings, recipient: str, data: DigestData) -> Part:
        from email.policy import SMTP as SMTP_POLICY

        from .mail import build_message
        from .outbox import Part

        subject = self.renderer.subject(data, d.subject)
        msg = build_message(
            mail=self.settings.mail,
            digest=d.name,
            recipient=recipient,
            subject=subject,
            text=self.renderer.text(data),
            html=self.renderer.html(data),
        )
        return Part(
            message_id=str(msg["Message-ID"]),
            subject=subject,
            mime=msg.as_bytes(policy=SMTP_POLICY),  # CRLF line ends, as RFC 5321 wants on the wire
            items=data.items,
            event_ids=list(data.event_ids),
        )

    def split_message(self, tx: Connection, row: OutboxMessage) -> list[Part] | None:
        """A message the server refused as too large (552), rendered again as two
        smaller ones holding the same events: its first half of the items, the rest.
        None when it has one item, or its digest is no longer configured."""
        d = next((x for x in self.settings.digests if x.name == row.digest), None)
        events = self.store.message_events(tx, row.id)
        if d is None or not events:
            return None
        now = self.now()
        whole = self._group(d, events, tx, now, max_items=len(events))
        if whole.items < 2:
            return None
        first = self._group(d, events, tx, now, max_items=(whole.items + 1) // 2)
        taken = set(first.event_ids)
        rest = self._group(d, [e for e in events if e.id not in taken], tx, now, max_items=whole.items)
        return [self._message(d, row.recipient, data) for data in (first, rest)]

    def send_queued(
        self,
        digests: Sequence[str] | None,
        *,
        respect_backoff: bool,
        results: list[DigestResult],
        only_new: bool = False,
        transport: Transport | None = None,
    ) -> set[str]:
        """Send queued messages (outbox.py); returns the recipients whose mail waits."""
        return self.outbox.send(
            digests,
            respect_backoff=respect_backoff,
            results=results,
            only_new=only_new,
            transport=transport,
            split=self.split_message,
        )

    # ================================================================== for the daemon

    @property
    def safe_url(self) -> str:
        return self.store.safe_url

    def ping(self) -> None:
        self.store.ping()

    def outbox_queued(self) -> int:
        with self.store.transaction() as tx:
            return self.store.outbox_summary(tx).queued

    def queued_digests(self) -> list[str]:
        """Digests with a queued message whose retry time has come."""
        with self.store.transaction() as tx:
            return self.store.queued_digests(tx, self.now())

    def task_anchors(self) -> tuple[dict[tuple[str, str], datetime | None], dict[str, datetime | None]]:
        """Each source's last success and each digest's last run, as written (this
        host's clock): the schedule's anchors when no claim has recorded a run yet."""
        with self.store.transaction() as tx:
            states = {(r.query, r.source): r.last_ok for r in self.store.all_poll_states(tx)}
            digests = {}
            for d in self.settings.digests:
                row = self.store.digest_state(tx, d.name)
                digests[d.name] = row.last_run if row is not None else None
        return states, digests

    # ================================================================== history and status

    def history(self, ident: str) -> list[dict[str, Any]]:
        with self.store.transaction() as tx:
            found = self.store.find_records(tx, ident)
            if not found:
                raise UsageError(f"no stored record with PMID, DOI or feed entry id {ident!r}")
            reports = self.store.notice_reports_for(tx, [rid for rid, _, _ in found])
            out = []
            for rid, source, key in found:
                out.append(
                    {
                        "source": source,
                        "key": key,
                        "versions": self.store.versions_of(tx, rid),
                        "notices": reports.get(rid, []),  # which source reported which notice, and when
                    }
                )
            return out

    def status(self) -> dict[str, Any]:
        with self.store.transaction() as tx:
            now = _Now(self.now(), self.store.db_now(tx))
            states = {(r.query, r.source): r for r in self.store.all_poll_states(tx)}
            leases = self.store.leases(tx)
            queries = []
            for q in self.settings.queries:
                rows = [r for (qn, _), r in states.items() if qn == q.name]
                last_ok = max((r.last_ok for r in rows if r.last_ok), default=None)
                errs = [r for r in rows if r.failing_since is not None]
                queries.append(
                    {
                        "name": q.name,
                        "last_success": _iso(last_ok),
                        "last_error": errs[0].last_error if errs else None,
                        "failing_since": _iso(errs[0].failing_since) if errs else None,
                        "next_run": _iso(self._next_poll(q, states, leases, now)),
                        "records": self.store.count_records(tx, q.name),
                        **self._gaps(tx, q.name, now.host),
                    }
                )
            feeds = []
            for f in self.settings.feeds:
                r = states.get((SHARED, f"feed:{f.name}"))
                feeds.append(
                    {
                        "name": f.name,
                        "last_success": _iso(r.last_ok) if r else None,
                        "last_error": r.last_error if r and r.failing_since else None,
                        "failing_since": _iso(r.failing_since) if r else None,
                        "disabled": bool(r.disabled) if r else False,
                    }
                )
            digests = []
            for d in self.settings.digests:
                st = self.store.digest_state(tx, d.name)
                pending, skipped = 0, 0
                for to in d.to:
                    since = self.recipient_since(tx, d, to, now.host)
                    for before in (False, True):
                        n = self.store.count_pending(
                            tx,
                            queries=d.queries,
                            kinds=d.events,
                            digest=d.name,
                            recipient=to,
                            since=since,
                            before=before,
                        )
                        pending, skipped = (pending, max(skipped, n)) if before else (max(pending, n), skipped)
                last_run = st.last_run if st else None
                refused = self.outbox.refused(tx, d.name)
                digests.append(
                    {
                        "name": d.name,
                        "last_sent": _iso(st.last_sent) if st else None,
                        "pending_events": pending,
                        "skipped_events": skipped,
                        "next_run": _iso(self._next_digest(d, last_run, leases, now)),
                        "failed_messages": len(refused),
                    }
                )
            box = self.store.outbox_summary(tx)
            refused = self.outbox.refused(tx)
        return {
            "queries": queries,
            "feeds": feeds,
            "digests": digests,
            "outbox": {
                "queued": box.queued,
                "oldest_queued": _iso(box.oldest_queued),
                "sending": box.sending,
                "failed": box.failed,
                "refused": refused,
            },
        }

    def _gaps(self, tx: Connection, query: str, now: datetime) -> dict[str, Any]:
        """What a query's PubMed polls could not store: PMIDs left out of efetch answers
        (still asked for, or given up) and days of modifications over the cap."""
        rows = self.store.missing_report(tx, query)
        waiting = [r for r in rows if r.gave_up_at is None]
        rows = [r for r in rows if r.gave_up_at is None or r.gave_up_at >= now - REPORT_GAPS_FOR]
        return {
            "missing": [r.pmid for r in waiting],
            "missing_since": _iso(min((r.first_missing for r in waiting), default=None)),
            "gave_up": [
                {"pmid": r.pmid, "missing_since": _iso(r.first_missing), "gave_up_at": _iso(r.gave_up_at)}
                for r in rows
                if r.gave_up_at is not None
            ],
            "skipped_modifications": [
                {"day": o.day, "records": o.count, "noted_at": _iso(o.noted_at), "note": _overflow_text(o)}
                for o in self.store.overflows(tx, [query], since=now - REPORT_GAPS_FOR)
            ],
        }

    def _next_poll(
        self, q: QuerySettings, states: dict[tuple[str, str], PollState], leases: dict[str, Lease], now: _Now
    ) -> datetime:
        """When `litwatch run` polls `q` next: due after the last start by any instance
        (database clock), else after its oldest source's last success (host clock), not
        before the daemon's plan (tasks.py, the function the daemon uses)."""
        from .tasks import plan_of, poll_task

        keys = ([(q.name, PUBMED)] if q.pubmed else []) + [(SHARED, f"feed:{f}") for f in q.feeds]
        oks = [states[k].last_ok if k in states else None for k in keys]
        last_ok = None if any(v is None for v in oks) else min(v for v in oks if v is not None)
        return self._next_run(plan_of(q), leases.get(poll_task(q.name)), last_ok, now)

    def _next_digest(
        self, d: DigestSettings, last_run: datetime | None, leases: dict[str, Lease], now: _Now
    ) -> datetime:
        from .tasks import digest_task, plan_of

        return self._next_run(plan_of(d), leases.get(digest_task(d.name)), last_run, now, wait_first=True)

    def _next_run(
        self, plan: Any, lease: Lease | None, host_anchor: datetime | None, now: _Now, *, wait_first: bool = False
    ) -> datetime:
        """Like with like: the lease's last run with the database's clock (shown as is),
        else the host-written anchor with this host's clock."""
        from .tasks import next_planned

        tz = self.settings.timezone
        planned = lease.next_run if lease is not None else None
        if lease is not None and lease.last_run is not None:
            return next_planned(plan, tz, lease.last_run, planned, now.db, wait_first=wait_first)
        return next_planned(plan, tz, host_anchor, planned, now.host, wait_first=wait_first)


@dataclass(frozen=True)
class _Now:
    host: datetime
    db: datetime


@dataclass
class Saved:
    record: Record
    record_id: int
    n: int
    old: Record | None  # the previous version when this one changed it
    changes: list[FieldChange]
    status: str  # "created", "changed" or "same"


_Named = TypeVar("_Named", QuerySettings, DigestSettings)


def _select(kind: str, plural: str, configured: Sequence[_Named], names: Sequence[str]) -> list[_Named]:
    """The configured items named on the command line, in that order; all when none."""
    if not names:
        return list(configured)
    by_name = {item.name: item for item in configured}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        raise UsageError(f"no {kind} named {unknown[0]!r} in the config ({plural}: {known})")
    return [by_name[n] for n in names]


def recipient_start(*, sent_before: bool, last_run: datetime | None, now: datetime, backfill: timedelta) -> datetime:
    """From when a recipient seen for the first time is sent a digest's events: a digest
    that has sent mail already started them at its last run (what happened since, not
    its history); a new digest's first mail reaches back at most `backfill`."""
    if sent_before and last_run is not None:
        return last_run
    return now - backfill


def _busy(holder: str) -> str:
    return f"another litwatch process ({holder or 'unknown'}) is working on it"


def _stored(result: PollResult) -> str:
    """What a poll stored, for a person watching it (PollProgress.stored)."""
    if result.error:
        return f"failed: {result.error}"
    return f"stored: new {result.new}, changed {result.changed}, events {result.events}"


def _window(start: date, end: date) -> str:
    return f"{start.isoformat()}..{end.isoformat()}"


def _ids(results: list[SearchResult]) -> list[str]:
    return list(dict.fromkeys(i for r in results for i in r.ids))


def _row(record_id: int, query: str, version_n: int, e: NewEvent) -> EventRow:
    return {
        "record_id": record_id,
        "query": query,
        "kind": e.kind,
        "version_n": version_n,
        "dedup": e.dedup,
        "detail": e.detail,
    }


def _some(pmids: Sequence[str], limit: int = 10) -> str:
    return ", ".join(pmids[:limit]) + (f" and {len(pmids) - limit} more" if len(pmids) > limit else "")


def _overflow_text(o: Overflow) -> str:
    return (
        f"{o.count} records modified on {o.day} (US Eastern), over PubMed's limit of {ESEARCH_CAP} for one "
        "search: their changes were not checked; errata, retractions and concerns still come from the notice search"
    )


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value else None


__all__ = ["LitwatchError", "PollProgress", "PollResult", "Service"]
