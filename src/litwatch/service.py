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
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection

from . import events as ev
from .config import DigestSettings, QuerySettings, Settings
from .coordination import Coordinator, RequestBudget
from .digest import Renderer, group
from .digest.group import DigestData
from .errors import DeliveryError, LitwatchError, SourceError, UsageError
from .mail import RecipientRefused, Transport, build_message, transport_for
from .parse.pubmed import parse_pubmed
from .records import PUBMED, FieldChange, NewEvent, Record
from .sources.eutils import EutilsClient, SearchResult
from .store import Current, PendingEvent, Store

log = logging.getLogger(__name__)

NOTICE_TERM = (
    '"published erratum"[pt] OR "retraction of publication"[pt] OR "retraction notice"[pt]'
    ' OR "expression of concern"[pt]'
)
NOTICES = "notices"  # poll_state source of the shared notice search
SHARED = "*"  # poll_state query of sources shared by all queries


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
        if self.error:
            return f"{head}, errors 1: {self.error}"
        return f"{head}, errors 0" + (f" ({len(self.warnings)} warnings)" if self.warnings else "")


@dataclass
class DigestResult:
    name: str
    recipient: str
    items: int = 0
    events: int = 0
    subject: str = ""
    message_id: str = ""
    sent: bool = False
    error: str | None = None
    permanent: bool = False  # the error: not retried
    text: str = ""
    html: str = ""

    def line(self) -> str:
        if self.error and self.permanent:
            return f"{self.name} → {self.recipient}: {self.subject}: FAILED permanently, not retried: {self.error}"
        if self.error:
            return (
                f"{self.name} → {self.recipient}: {self.subject or 'queued message'}: FAILED, kept queued: {self.error}"
            )
        return (
            f"{self.name} → {self.recipient}: {self.subject} ({self.items} items){'' if self.sent else ' [not sent]'}"
        )


@dataclass
class _Fetched:
    records: list[Record]
    warnings: list[str]


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        now: Callable[[], datetime] = utcnow,
        coordination: Coordinator | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or Store(settings.database)
        self.now = now  # the host's clock (injectable); claims use the database's
        self.coordination = coordination or Coordinator(self.store, clock=now)
        self._eutils: EutilsClient | None = None
        self.renderer = Renderer(settings.template_dir)

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
            results += [self.poll_pubmed(q) for q in held if q.pubmed]
            results += self.poll_feeds([q for q in held if not busy_feeds & set(q.feeds)])
            if any(q.pubmed for q in held) and self.settings.pubmed.notices:
                h = stack.enter_context(claims.hold(NOTICES_TASK, start=True, wait=wait))
                results.append(
                    self.poll_notices() if h.claim.won else PollResult("notices", PUBMED, skipped=_busy(h.claim.holder))
                )
        return results

    def _select_queries(self, names: Sequence[str]) -> list[QuerySettings]:
        return _select("query", "queries", self.settings.queries, names)

    def poll_feeds(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """Feed sources: each feed is fetched once for all queries using it."""
        if not any(q.feeds for q in queries):
            return []
        from .feedpoll import poll_feeds

        return poll_feeds(self, queries)

    def poll_pubmed(self, q: QuerySettings) -> PollResult:
        assert q.pubmed
        result = PollResult(q.name, PUBMED)
        now = self.now()
        today = now.date()
        what = f"query {q.name}"
        before = self.eutils.requests_made
        with self.store.transaction() as tx:
            state = self.store.poll_state(tx, q.name, PUBMED)
        first = state is None or not state.watermark
        start = (
            today - timedelta(days=self.settings.pubmed.first_lookback_days)
            if first
            else date.fromisoformat(state.watermark)
        )
        try:
            entered = self.eutils.search_window(q.pubmed, what=what, datetype="edat", start=start, end=today)
            # Known records the query matches that changed since the watermark (errata,
            # retractions, new titles): PubMed bumps their modification date.
            modified = (
                [] if first else self.eutils.search_window(q.pubmed, what=what, datetype="mdat", start=start, end=today)
            )
            for r in (*entered, *modified):
                result.warnings += [f"{what}: {w}" for w in r.warnings]
            entered_ids = _ids(entered)
            modified_ids = _ids(modified)
            result.found = len(set(entered_ids) | set(modified_ids))
            with self.store.transaction() as tx:
                known = set(self.store.records_by_pmid(tx, entered_ids))  # keys only: no fields JSON
            fetched = self._fetch_pubmed(entered, entered_ids, known, modified_ids, what)
            result.warnings += fetched.warnings
            known_unfetched = [i for i in entered_ids if i in known]

            def apply(tx: Connection) -> None:
                self._apply_pubmed(tx, q, fetched.records, known_unfetched, now, result)
                self.store.poll_ok(tx, q.name, PUBMED, now, watermark=today.isoformat(), last_error=None)

            self.store.write(apply, what=what)
        except SourceError as e:
            result.error = str(e)
            self._record_failure(q.name, PUBMED, str(e), now)
        result.requests = self.eutils.requests_made - before
        log.info(
            "poll query=%s source=pubmed found=%d new=%d changed=%d events=%d requests=%d error=%s",
            q.name,
            result.found,
            result.new,
            result.changed,
            result.events,
            result.requests,
            result.error or "-",
        )
        return result

    def _fetch_pubmed(
        self, entered: list[SearchResult], entered_ids: list[str], known: set[str], modified_ids: list[str], what: str
    ) -> _Fetched:
        """efetch what is new or modified, with as few requests as possible: from the
        history server when every entered id is new, else by id (POST when long)."""
        problems: list[str] = []
        records: list[Record] = []
        modified_set = set(modified_ids)
        if not known and all(r.webenv and r.query_key for r in entered):
            batches = [b for r in entered if r.count for b in self.eutils.efetch_history(r, what=what)]
            extra = [i for i in dict.fromkeys(modified_ids) if i not in set(entered_ids)]
        else:
            extra = [i for i in dict.fromkeys([*entered_ids, *modified_ids]) if i not in known or i in modified_set]
            batches = []
        for body in batches:
            records += parse_pubmed(body, what=what, problems=problems)
        if extra:
            for body in self.eutils.efetch_ids(extra, what=what):
                records += parse_pubmed(body, what=what, problems=problems)
        return _Fetched(records, problems)

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
        result.events += self.emit_for_matches(tx, q.name, matched, now, approvals_source=False)
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
    ) -> int:
        """`new`/`approval` for records the query matches for the first time."""
        if not matched:
            return 0
        hit_before = self.store.hits_for(tx, matched.values())
        first = {key: rid for key, rid in matched.items() if query not in hit_before.get(rid, set())}
        if not first:
            return 0
        terms = terms or {}
        self.store.add_hits(tx, [(rid, query, terms.get(key, ())) for key, rid in first.items()], now)
        current = self.store.current_by_id(tx, first.values())
        rows = []
        for rid in first.values():
            cur = current[rid]
            kind = ev.classify_new(cur.record, approvals_source=approvals_source)
            if kind is None:
                continue  # a notice: reported as news about what it names, not as a paper
            rows.append(_row(rid, query, cur.n, NewEvent(kind, f"first:{cur.record.source}:{cur.record.key}")))
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
        today = now.date()
        before = self.eutils.requests_made
        with self.store.transaction() as tx:
            state = self.store.poll_state(tx, SHARED, NOTICES)
        try:
            if state is None or not state.watermark:
                with self.store.transaction() as tx:
                    self.store.poll_ok(tx, SHARED, NOTICES, now, watermark=today.isoformat())
                return result
            start = date.fromisoformat(state.watermark)
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
            for body in self.eutils.efetch_ids(todo, what="notice search") if todo else ():
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
        wait: float = CLAIM_WAIT,
    ) -> list[DigestResult]:
        from .tasks import digest_task

        digests = self._select_digests(names)
        results: list[DigestResult] = []
        last_html = ""
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

    def render(self, d: DigestSettings, recipient: str, tx: Connection, now: datetime) -> DigestData | None:
        pending = self.store.pending_events(tx, queries=d.queries, kinds=d.events, digest=d.name, recipient=recipient)
        if not pending:
            return None
        self._fill_notice_titles(tx, pending)
        return group(
            d.name,
            pending,
            max_items=d.max_items,
            now=now,
            queries=d.queries,
            failing=self.failing_sources(tx, d),
            config=self.settings.source,
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
        out: list[DigestResult] = []
        while True:
            with self.store.transaction() as tx:
                data = self.render(d, recipient, tx, now)
                if data is None:
                    return out
                subject = self.renderer.subject(data, d.subject)
                text = self.renderer.text(data)
                html = self.renderer.html(data)
                res = DigestResult(
                    d.name, recipient, items=data.items, events=len(data.event_ids), subject=subject, html=html
                )
                if dry_run:
                    if text not in texts_seen:
                        res.text = text
                        texts_seen.add(text)
                    out.append(res)
                    tx.rollback()
                    return out
                msg = build_message(
                    mail=self.settings.mail, digest=d.name, recipient=recipient, subject=subject, text=text, html=html
                )
                res.message_id = str(msg["Message-ID"])
                self.store.queue_message(
                    tx,
                    digest=d.name,
                    recipient=recipient,
                    message_id=res.message_id,
                    subject=subject,
                    mime=msg.as_bytes(policy=SMTP_POLICY),  # CRLF line ends, as RFC 5321 wants on the wire
                    items=data.items,
                    event_ids=data.event_ids,
                    now=now,
                )
            out.append(res)
            if not data.more_waiting or not data.event_ids:  # (no events bound: nothing would change)
                return out

    def send_queued(
        self,
        digests: Sequence[str] | None,
        *,
        respect_backoff: bool,
        results: list[DigestResult],
        only_new: bool = False,
        transport: Transport | None = None,
    ) -> set[str]:
        """Send queued messages (oldest first) over one connection (`transport`'s, if
        given). Returns the recipients whose message stays queued: it failed now, or
        it waits for its retry time (`respect_backoff`). `only_new`: just the messages
        never tried, those queued by this run; the others had their try."""
        now = self.now()
        with self.store.transaction() as tx:
            queued = self.store.queued_messages(tx, digests=digests, now=None)
        # a message waiting for its retry time holds back its recipient (nothing newer goes first)
        blocked = {r.recipient for r in queued if respect_backoff and r.next_attempt_at and r.next_attempt_at > now}
        queued = [r for r in queued if r.recipient not in blocked and not (only_new and r.attempts)]
        if not queued:
            return blocked
        down: str | None = None
        try:
            with ExitStack() as stack:
                transport = transport or stack.enter_context(transport_for(self.settings.mail))
                for row in queued:
                    res = DigestResult(
                        row.digest, row.recipient, items=row.items, subject=row.subject, message_id=row.message_id
                    )
                    results.append(res)
                    if down is not None:
                        res.error = down
                        self._failed(row, down, permanent=False, now=now)
                        blocked.add(row.recipient)
                        continue
                    try:
                        transport.send(bytes(row.mime), row.recipient, row.message_id)
                    except DeliveryError as e:
                        res.error, res.permanent = str(e), e.permanent
                        self._failed(row, str(e), permanent=e.permanent, now=now)
                        if not e.permanent:
                            blocked.add(row.recipient)
                            if not isinstance(e, RecipientRefused):  # one full mailbox holds up no one else
                                down = str(e)  # the server is unwell: don't hammer it with the rest
                        continue
                    with self.store.transaction() as tx:
                        self.store.mark_sent(tx, row.id, self.now())
                        self.store.set_digest_state(tx, row.digest, last_sent=self.now())
                    res.sent = True
        except DeliveryError as e:  # the transport could not even start (e.g. directory)
            for row in queued:
                self._failed(row, str(e), permanent=False, now=now)
                results.append(DigestResult(row.digest, row.recipient, subject=row.subject, error=str(e)))
                blocked.add(row.recipient)
        log.info("digest send digests=%s queued=%d failed=%d", ",".join(digests or ["*"]), len(queued), len(blocked))
        return blocked

    def _failed(self, row: Any, error: str, *, permanent: bool, now: datetime) -> None:
        attempts = int(row.attempts) + 1
        retry_at = None if permanent else now + timedelta(seconds=min(6 * 3600, 60 * 2 ** min(attempts - 1, 10)))
        with self.store.transaction() as tx:
            self.store.mark_failed(tx, row.id, error, permanent=permanent, retry_at=retry_at)

    # ================================================================== for the daemon

    @property
    def safe_url(self) -> str:
        return self.store.safe_url

    def ping(self) -> None:
        self.store.ping()

    def outbox_queued(self) -> int:
        with self.store.transaction() as tx:
            return int(self.store.outbox_summary(tx)["queued"])

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
            out = []
            for rid, source, key in found:
                out.append({"source": source, "key": key, "versions": self.store.versions_of(tx, rid)})
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
                pending = max(
                    (
                        self.store.count_pending(tx, queries=d.queries, kinds=d.events, digest=d.name, recipient=to)
                        for to in d.to
                    ),
                    default=0,
                )
                last_run = st.last_run if st else None
                digests.append(
                    {
                        "name": d.name,
                        "last_sent": _iso(st.last_sent) if st else None,
                        "pending_events": pending,
                        "next_run": _iso(self._next_digest(d, last_run, leases, now)),
                        "failed_messages": len(self.store.failed_messages(tx, d.name)),
                    }
                )
            box = self.store.outbox_summary(tx)
        return {
            "queries": queries,
            "feeds": feeds,
            "digests": digests,
            "outbox": {"queued": box["queued"], "oldest_queued": _iso(box["oldest_queued"]), "failed": box["failed"]},
        }

    def _next_poll(
        self, q: QuerySettings, states: dict[tuple[str, str], Any], leases: dict[str, Any], now: _Now
    ) -> datetime:
        """When `litwatch run` polls `q` next: due after the last start by any instance
        (database clock), else after its oldest source's last success (host clock), not
        before the daemon's plan (tasks.py, the function the daemon uses)."""
        from .tasks import plan_of, poll_task

        keys = ([(q.name, PUBMED)] if q.pubmed else []) + [(SHARED, f"feed:{f}") for f in q.feeds]
        oks = [states[k].last_ok if k in states else None for k in keys]
        last_ok = None if any(v is None for v in oks) else min(v for v in oks if v is not None)
        return self._next_run(plan_of(q), leases.get(poll_task(q.name)), last_ok, now)

    def _next_digest(self, d: DigestSettings, last_run: datetime | None, leases: dict[str, Any], now: _Now) -> datetime:
        from .tasks import digest_task, plan_of

        return self._next_run(plan_of(d), leases.get(digest_task(d.name)), last_run, now, wait_first=True)

    def _next_run(
        self, plan: Any, lease: Any, host_anchor: datetime | None, now: _Now, *, wait_first: bool = False
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


def _busy(holder: str) -> str:
    return f"another litwatch process ({holder or 'unknown'}) is working on it"


def _ids(results: list[SearchResult]) -> list[str]:
    return list(dict.fromkeys(i for r in results for i in r.ids))


def _row(record_id: int, query: str, version_n: int, e: NewEvent) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "query": query,
        "kind": e.kind,
        "version_n": version_n,
        "dedup": e.dedup,
        "detail": e.detail,
    }


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value else None


__all__ = ["DigestResult", "LitwatchError", "PollResult", "Service"]
