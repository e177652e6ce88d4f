"""The use cases: poll, digest, status, history. Owns every transaction boundary.

Rules (ARCHITECTURE.md): a poll stores records, versions, events and its watermark in
one transaction, or nothing; a digest commits its outbox row and deliveries before it
sends, then marks the row sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import Connection

from .config import DigestSettings, QuerySettings, Settings
from .coordination import Coordinator, RequestBudget
from .errors import LitwatchError, StoreError, UsageError, first_line
from .pipeline import CROSSREF, CROSSREF_RECHECK, NOTICES, SHARED, PollProgress, PollResult, Quiet, record_failure
from .records import PUBMED
from .sources.eutils import ESEARCH_CAP, EutilsClient
from .store import PendingEvent, Store
from .store.ports import ServicePort
from .store.rows import Lease, OutboxMessage, Overflow, PollState
from .store.web import EventView, SentMessage, Unsubscribe

# A poll needs none of the digest side (Jinja2, css-inline, the mail transports, the
# outbox): it is imported where a digest is built or sent, so `litwatch poll` (and each
# poll of `run`) does not pay for it (issue 15). Annotations only, below.
if TYPE_CHECKING:
    from .digest import Renderer
    from .digest.group import DigestData
    from .mail import Transport
    from .outbox import DigestResult, Outbox, Part
    from .sources.crossref import CrossrefClient

log = logging.getLogger(__name__)

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
        self.progress: PollProgress = progress or Quiet()
        self._eutils: EutilsClient | None = None
        self._crossref: CrossrefClient | None = None

    @cached_property
    def renderer(self) -> Renderer:
        from .digest import Renderer

        web = self.settings.web
        return Renderer(self.settings.template_dir, web.base_url if web is not None else None)

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
        if self._crossref is not None:
            self._crossref.close()
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

    @property
    def crossref(self) -> CrossrefClient:
        """The Crossref client (`crossref:` configured): Crossref's own limits from its
        answers, and its list route's pace shared with every process on this database."""
        if self._crossref is None:
            from .sources.crossref import CrossrefClient
            from .sources.http import RetryPolicy

            cfg = self.settings.crossref
            if cfg is None:
                raise UsageError("no `crossref:` section in the config")
            host = urlsplit(cfg.base_url).netloc
            policy = RetryPolicy(retries=cfg.retries, backoff=cfg.backoff, timeout=cfg.timeout, deadline=cfg.deadline)
            self._crossref = CrossrefClient(
                email=cfg.email,
                base_url=cfg.base_url,
                batch_size=cfg.batch_size,
                policy=policy,
                max_bytes=cfg.max_response_mb * 1_000_000,
                budget=RequestBudget(self.store, f"crossref:{host}", 1),
            )
        return self._crossref

    # ================================================================== poll

    def poll(self, names: Sequence[str] = (), *, wait: float = CLAIM_WAIT) -> list[PollResult]:
        """`litwatch poll`: each query under the claim the daemon's job takes (waiting up
        to `wait` seconds for one another process holds, then skipping it)."""
        from .tasks import CROSSREF_TASK, NOTICES_TASK, poll_task

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
            results += self._isolated_cycle(held)
            results += self.poll_feeds([q for q in held if not busy_feeds & set(q.feeds)])
            if any(q.pubmed for q in held) and self.settings.pubmed.notices:
                h = stack.enter_context(claims.hold(NOTICES_TASK, start=True, wait=wait))
                results.append(
                    self.isolated(SHARED, NOTICES, "notices", self.poll_notices)
                    if h.claim.won
                    else PollResult("notices", PUBMED, skipped=_busy(h.claim.holder))
                )
            if held and self.settings.crossref is not None:
                # after the queries and feeds: what they stored this cycle is watched too
                h = stack.enter_context(claims.hold(CROSSREF_TASK, start=True, wait=wait))
                results.append(
                    self.isolated(SHARED, CROSSREF, "crossref", self.poll_crossref)
                    if h.claim.won
                    else PollResult("crossref", CROSSREF, skipped=_busy(h.claim.holder))
                )
        return results

    def isolated(self, query: str, source: str, name: str, poll: Callable[[], PollResult]) -> PollResult:
        """One source's poll. What it raises — a store error its data causes (a value
        the database refuses), or a bug — is that source's recorded failure: the cycle
        goes on with the other sources (issue 13, case 5)."""
        what = {PUBMED: f"query {name}", NOTICES: "notice search", CROSSREF: "Crossref"}.get(source, f"feed {name}")
        try:
            return poll()
        except StoreError as e:
            error = f"{what}: could not store what it fetched: {first_line(e)}"
            log.warning("poll query=%s source=%s: %s", query, source, error)
        except Exception as e:  # noqa: BLE001 - a bug in one source must not end the cycle; logged with its traceback
            log.exception("poll query=%s source=%s: unexpected error", query, source)
            error = f"{what}: unexpected error: {type(e).__name__}: {first_line(e)}"
        record_failure(self.store, query, source, error, self.now())
        return PollResult(name, PUBMED if source in (PUBMED, NOTICES) else source, error=error)

    def _select_queries(self, names: Sequence[str]) -> list[QuerySettings]:
        return _select("query", "queries", self.settings.queries, names)

    def poll_pubmed_cycle(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """The PubMed side of a cycle (pubmedpoll.py): one search per query, one fetch of
        the union of what they need, then each query's batch in its own transaction."""
        from .pubmedpoll import PubmedCycle

        todo = [q for q in queries if q.pubmed]
        if not todo:
            return []
        return PubmedCycle(self.settings, self.store, self.eutils, self.now(), self.progress).run(todo)

    def _isolated_cycle(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """The PubMed cycle under `poll`: what it raises (a bug) fails its queries, which
        are recorded as failing; the feeds and the notice search still run."""
        try:
            return self.poll_pubmed_cycle(queries)
        except Exception as e:  # noqa: BLE001 - logged with its traceback, shown per query
            log.exception("poll pubmed: unexpected error")
            error = f"unexpected error: {type(e).__name__}: {first_line(e)}"
            out = []
            for q in queries:
                if q.pubmed:
                    record_failure(self.store, q.name, PUBMED, f"query {q.name}: {error}", self.now())
                    out.append(PollResult(q.name, PUBMED, error=f"query {q.name}: {error}"))
            return out

    def poll_pubmed(self, q: QuerySettings) -> PollResult:
        """One query's PubMed poll: a cycle of one."""
        return self.poll_pubmed_cycle([q])[0]

    def poll_feeds(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """Feed sources: each feed is fetched once for all queries using it; one feed's
        failure, whatever it is, is that feed's reported failure and the others still run."""
        names = list(dict.fromkeys(f for q in queries for f in q.feeds))
        if not names:
            return []  # and feedparser, lxml.html, nh3... stay unimported (#22: a first poll's fixed cost)
        from .feedkinds import poll_any_feed

        return [
            self.isolated(
                SHARED,
                f"feed:{n}",
                n,
                # openFDA's request budgets are kept in this database, shared by every process
                partial(poll_any_feed, self.settings, self.store, self.settings.feed(n), self.now(), claims=self.store),
            )
            for n in names
        ]

    def poll_notices(self) -> PollResult:
        from .pubmedpoll import poll_notices

        return poll_notices(self.store, self.eutils, self.now())

    def poll_crossref(self) -> PollResult:
        """The Crossref source's cycle (crossrefpoll.py): new notices, and the re-check
        of every stored DOI when `crossref.every` has passed."""
        from .crossrefpoll import poll_crossref

        assert self.settings.crossref is not None
        return poll_crossref(self.store, self.crossref, self.now(), self.settings.crossref.interval)

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
        from .outbox import build_failed
        from .tasks import digest_task

        digests = self._select_digests(names)
        results: list[DigestResult] = []
        last_html = ""
        if retry_failed and not dry_run:
            results += self.outbox.requeue_refused({d.name: d.to for d in digests})
        # one SMTP connection for the whole run, opened at the first message (none: no connection)
        with transport_for(self.settings.mail) as transport, ExitStack() as claims:
            for d in digests:
                if dry_run:
                    try:
                        built = self._build(d, dry_run=True)
                    except Exception as e:  # noqa: BLE001 - that digest's failure, never the end of the run
                        built = [build_failed(d.name, d.to, e)]
                    for res in built:
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
                try:
                    for res in self._build(d, dry_run=False, skip=blocked):
                        last_html = res.html or last_html
                except Exception as e:  # noqa: BLE001 - that digest's failure, never the end of the run
                    results.append(build_failed(d.name, d.to, e))
                    continue
                self.send_queued([d.name], respect_backoff=False, results=results, only_new=True, transport=transport)
                with self.store.transaction() as tx:
                    self.store.set_digest_state(tx, d.name, last_run=self.store.db_now(tx))
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
            stale=self.stale_sources(tx, d),
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
            # the earlier of the database's clock and ours: events are stamped by the
            # polling host's clock, so a wrong clock may start a new recipient earlier
            # (a few events more), never later (events skipped)
            now=min(self.store.db_now(tx), now),
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
            mine = row.query in d.queries or (
                row.query == SHARED and (row.source in feeds or row.source in (NOTICES, CROSSREF))
            )
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

    def stale_sources(self, tx: Connection, d: DigestSettings) -> list[dict[str, Any]]:
        """The digest's feeds whose data has stopped moving (kind ema: the file's newest
        `last_updated_date` is older than `stale_days`), for its footer: {"name", "note"}."""
        from .feedkinds import stale_note

        names = dict.fromkeys(f for q in d.queries for f in self.settings.query(q).feeds)
        now = self.now()
        out = []
        for name in names:
            feed = self.settings.feed(name)
            if feed.kind != "ema":
                continue
            note = stale_note(feed, self.store.poll_state(tx, SHARED, f"feed:{name}"), now)
            if note:
                out.append({"name": name, "note": note})
        return out

    def _build(self, d: DigestSettings, *, dry_run: bool, skip: set[str] = frozenset()) -> list[DigestResult]:  # type: ignore[assignment]
        out = []
        now = self.now()
        texts_seen: set[str] = set()
        stopped = {u.recipient.lower() for u in self.unsubscribed(d.name)}  # issue 26
        for recipient in d.to:
            if recipient in skip:
                continue  # a message to them is still queued; new events wait for the next one
            if recipient.lower() in stopped:
                continue  # unsubscribed: their events stay undelivered, nobody else's are touched
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
            if not queued:
                return out
            out += queued
            if not more:
                return out

    def _queue_next(
        self, tx: Connection, d: DigestSettings, recipient: str, now: datetime
    ) -> tuple[list[DigestResult], bool]:
        """The next mail for `recipient`, queued with its deliveries; as numbered parts,
        all in this transaction, when it would be larger than a mail client shows whole
        (digest/fit.py, issue 26)."""
        from .digest.fit import fit

        since = self.store.start_recipient(tx, d.name, recipient, self.recipient_since(tx, d, recipient, now))
        pending = self.store.pending_events(
            tx, queries=d.queries, kinds=d.events, digest=d.name, recipient=recipient, since=since
        )
        if not pending:
            return [], False
        data = self._group(d, pending, tx, now, max_items=d.max_items)
        parts = fit(
            data,
            pending,
            regroup=lambda events, n: self._group(d, events, tx, now, max_items=n),
            size=lambda p: max(len(self.renderer.html(p).encode()), len(self.renderer.text(p).encode())),
            event_id=lambda e: e.id,
        )
        out = []
        for n, part_data in enumerate(parts, 1):
            numbered = (n, len(parts)) if len(parts) > 1 else None
            res = self._result(d, recipient, part_data, numbered)
            part = self._message(d, recipient, part_data, numbered)
            res.message_id = part.message_id
            self.outbox.queue(tx, d.name, recipient, part, now)
            out.append(res)
        # (no events bound: nothing would change)
        return out, bool(data.more_waiting and data.event_ids)

    def _subject(self, d: DigestSettings, data: DigestData, numbered: tuple[int, int] | None) -> str:
        subject = self.renderer.subject(data, d.subject)
        return f"{subject} ({numbered[0]} of {numbered[1]})" if numbered else subject

    def _result(
        self, d: DigestSettings, recipient: str, data: DigestData, numbered: tuple[int, int] | None = None
    ) -> DigestResult:
        from .outbox import DigestResult

        subject = self._subject(d, data, numbered)
        return DigestResult(
            d.name,
            recipient,
            items=data.items,
            events=len(data.event_ids),
            subject=subject,
            html=self.renderer.html(data),
        )

    def _message(
        self, d: DigestSettings, recipient: str, data: DigestData, numbered: tuple[int, int] | None = None
    ) -> Part:
        from email.policy import SMTP as SMTP_POLICY

        from .mail import build_message
        from .outbox import Part
        from .unsubscribe import unsubscribe_url

        subject = self._subject(d, data, numbered)
        msg = build_message(
            mail=self.settings.mail,
            digest=d.name,
            recipient=recipient,
            subject=subject,
            text=self.renderer.text(data),
            html=self.renderer.html(data),
            unsubscribe=unsubscribe_url(self.settings, d.name, recipient),  # issue 26
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

    # ================================================================== web view (issue 26)

    def web_events(self, **filters: Any) -> list[EventView]:
        """The events page: filters as `Store.events_page` takes them."""
        with self.store.transaction() as tx:
            return self.store.events_page(tx, **filters)

    def web_record(self, ident: str) -> list[dict[str, Any]]:
        """`history`, with each record's events and the mails they went out in."""
        found = self.history(ident)
        with self.store.transaction() as tx:
            for rec, (rid, _, _) in zip(found, self.store.find_records(tx, ident), strict=True):
                rec["id"] = rid
                rec["events"] = self.store.record_events(tx, rid)
                rec["messages"] = self.store.record_messages(tx, rid)
        return found

    def web_archive(self, digest: str, before_id: int | None = None) -> list[SentMessage]:
        with self.store.transaction() as tx:
            return self.store.digest_messages(tx, digest, before_id=before_id)

    def web_message(self, outbox_id: int) -> tuple[SentMessage, bytes] | None:
        with self.store.transaction() as tx:
            return self.store.message_mime(tx, outbox_id)

    def web_events_per_week(self, weeks: int = 12) -> dict[tuple[str, str, datetime], int]:
        since = self.now() - timedelta(weeks=weeks)
        with self.store.transaction() as tx:
            return self.store.events_per_week(tx, since)

    def unsubscribe(self, digest: str, recipient: str, via: str) -> bool:
        """Stop `recipient`'s mail from `digest` at once; False when already stopped."""
        done = bool(
            self.store.write(
                lambda tx: self.store.unsubscribe(tx, digest, recipient, self.now(), via), what="unsubscribe"
            )
        )
        log.info("unsubscribe digest=%s via=%s changed=%s", digest, via, done)
        return done

    def resubscribe(self, digest: str, recipient: str) -> bool:
        return bool(
            self.store.write(lambda tx: self.store.resubscribe(tx, digest, recipient, self.now()), what="resubscribe")
        )

    def unsubscribed(self, digest: str | None = None) -> list[Unsubscribe]:
        with self.store.transaction() as tx:
            return self.store.unsubscribed(tx, digest)

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
            return self.store.queued_digests(tx, self.store.db_now(tx))

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
        from .feedkinds import stale_note

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
                        "stale": stale_note(f, r, now.host),  # kind ema: its data stopped moving
                    }
                )
            sources = []
            if self.settings.crossref is not None:
                r = states.get((SHARED, CROSSREF))
                checked = states.get((SHARED, CROSSREF_RECHECK))
                sources.append(
                    {
                        "name": "crossref",
                        "last_success": _iso(r.last_ok) if r else None,
                        "last_error": r.last_error if r and r.failing_since else None,
                        "failing_since": _iso(r.failing_since) if r else None,
                        "last_recheck": _iso(checked.last_ok) if checked else None,
                        "recheck_note": checked.last_error if checked else None,
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
            unsubscribed = [
                {"digest": u.digest, "recipient": u.recipient, "since": _iso(u.at), "via": u.via}
                for u in self.store.unsubscribed(tx)
            ]
        return {
            "queries": queries,
            "feeds": feeds,
            "sources": sources,
            "digests": digests,
            "unsubscribed": unsubscribed,  # issue 26: stopped by their link or `litwatch unsubscribe`
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


def _overflow_text(o: Overflow) -> str:
    return (
        f"{o.count} records modified on {o.day} (US Eastern), over PubMed's limit of {ESEARCH_CAP} for one "
        "search: their changes were not checked; errata, retractions and concerns still come from the notice search"
    )


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value else None


__all__ = ["LitwatchError", "PollProgress", "PollResult", "Service"]
