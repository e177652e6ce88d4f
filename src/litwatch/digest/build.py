"""Building digests: for each digest and recipient, the pending events since they were
last sent (`store.pending_events`), grouped (`group`, pure) and rendered (`Renderer`),
queued in the outbox with the deliveries that bind them in one transaction, then sent
(outbox.py). Also what a digest's footer says of its sources: those failing, and the
feeds whose data stopped moving.

Rule (ARCHITECTURE.md 2): a digest first writes its outbox row and the deliveries that
bind its events in one transaction, then sends, then marks the row sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from ..config import DigestSettings, Settings
from ..coordination import Coordinator, busy
from ..outbox import DigestResult, Outbox, Part
from ..polls.feedkinds import stale_note
from ..records import CROSSREF, NOTICES, PUBMED, SHARED, PendingEvent, feed_source
from ..store.ports import ServicePort
from ..store.rows import OutboxMessage, Overflow
from ..tasks import digest_task
from .group import DigestData, group
from .render import Renderer

if TYPE_CHECKING:
    from ..mail import Transport

log = logging.getLogger(__name__)

# `status` shows skipped days and given-up records this long; a digest that never went
# out shows the skipped days of this long
REPORT_GAPS_FOR = timedelta(days=30)


class Digests:
    """The digests of one config over one store: build, queue, send."""

    def __init__(
        self, settings: Settings, store: ServicePort, coordination: Coordinator, now: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.store = store
        self.coordination = coordination
        self.now = now

    @cached_property
    def renderer(self) -> Renderer:
        web = self.settings.web
        return Renderer(self.settings.template_dir, web.base_url if web is not None else None)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.store, self.settings.mail, self.now)

    def run(
        self,
        digests: Sequence[DigestSettings],
        *,
        dry_run: bool = False,
        html_path: Path | None = None,
        respect_backoff: bool = False,
        retry_failed: bool = False,
        wait: float = 0.0,
    ) -> list[DigestResult]:
        """Send what is queued, then build and send what is pending, digest by digest.
        `retry_failed`: the messages refused for good are queued again first."""
        from ..mail import transport_for
        from ..outbox import build_failed

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
                    log.warning("digest %s: %s; skipped", d.name, busy(held.claim.holder))
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
        feeds = {feed_source(f) for q in d.queries for f in self.settings.query(q).feeds}
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
            out.append({"name": f"{o.query} (pubmed modifications)", "since": o.noted_at, "error": overflow_text(o)})
        return out

    def stale_sources(self, tx: Connection, d: DigestSettings) -> list[dict[str, Any]]:
        """The digest's feeds whose data has stopped moving (kind ema: the file's newest
        `last_updated_date` is older than `stale_days`), for its footer: {"name", "note"}."""

        names = dict.fromkeys(f for q in d.queries for f in self.settings.query(q).feeds)
        now = self.now()
        out = []
        for name in names:
            feed = self.settings.feed(name)
            if feed.kind != "ema":
                continue
            note = stale_note(feed, self.store.poll_state(tx, SHARED, feed_source(name)), now)
            if note:
                out.append({"name": name, "note": note})
        return out

    def _build(self, d: DigestSettings, *, dry_run: bool, skip: set[str] = frozenset()) -> list[DigestResult]:  # type: ignore[assignment]
        out = []
        now = self.now()
        texts_seen: set[str] = set()
        with self.store.transaction() as tx:
            stopped = {u.recipient.lower() for u in self.store.unsubscribed(tx, d.name)}  # issue 26
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
        from .fit import fit

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

        from ..mail import build_message
        from ..unsubscribe import unsubscribe_url

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


def recipient_start(*, sent_before: bool, last_run: datetime | None, now: datetime, backfill: timedelta) -> datetime:
    """From when a recipient seen for the first time is sent a digest's events: a digest
    that has sent mail already started them at its last run (what happened since, not
    its history); a new digest's first mail reaches back at most `backfill`."""
    if sent_before and last_run is not None:
        return last_run
    return now - backfill


def overflow_text(o: Overflow) -> str:
    from ..sources.eutils import ESEARCH_CAP

    return (
        f"{o.count} records modified on {o.day} (US Eastern), over PubMed's limit of {ESEARCH_CAP} for one "
        "search: their changes were not checked; errata, retractions and concerns still come from the notice search"
    )


__all__ = ["REPORT_GAPS_FOR", "Digests", "overflow_text", "recipient_start"]
