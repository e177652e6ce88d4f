"""The facade: litwatch's use cases — poll, digest, status, history — each a few lines
handing the work to its room (polls/cycle.py, digest/build.py, status.py). The CLI,
the daemon and the web view call these and nothing below them, so one use case has one
path whoever asks (the daemon's polls go through the same cycle as `litwatch poll`).

Rules (ARCHITECTURE.md): a poll stores records, versions, events and its watermark in
one transaction, or nothing; a digest commits its outbox row and deliveries before it
sends, then marks the row sent."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import DigestSettings, QuerySettings, Settings
from .coordination import Coordinator
from .errors import LitwatchError, UsageError
from .polls.cycle import Clients, PollCycle
from .polls.results import PollProgress, PollResult, Quiet
from .store import Store
from .store.ports import ServicePort
from .store.web import EventView, SentMessage, Unsubscribe
from .tasks import SourceTimes

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .digest import Renderer
    from .digest.build import Digests
    from .mail import Transport
    from .outbox import DigestResult, Outbox
    from .sources.crossref import CrossrefClient
    from .sources.eutils import EutilsClient
    from .status import StatusView


def utcnow() -> datetime:
    """Naive UTC, as stored."""
    return datetime.now(UTC).replace(tzinfo=None)


log = logging.getLogger(__name__)

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
        self.clients = Clients(settings, self.store)
        self._digests: Digests | None = None

    def reconfigured(self, settings: Settings) -> Service:
        """The service for a reloaded config: same database, same claims."""
        return Service(settings, store=self.store, now=self.now, coordination=self.coordination)

    def close(self) -> None:
        self.clients.close()
        self.coordination.close()
        self.store.close()

    # ================================================================== poll

    @property
    def cycle(self) -> PollCycle:
        return PollCycle(self.settings, self.store, self.coordination, self.clients, self.now, self.progress)

    def poll(self, names: Sequence[str] = (), *, wait: float = CLAIM_WAIT) -> list[PollResult]:
        """`litwatch poll`: the named queries (all by default) under the claims the
        daemon's jobs take (waiting up to `wait` seconds for one another process holds,
        then skipping it), then the notice search and Crossref: one cycle."""
        cycle = self.cycle
        with contextlib.ExitStack() as stack:
            held, skipped = cycle.claim_queries(
                stack, _select("query", "queries", self.settings.queries, names), wait=wait
            )
            return skipped + cycle.run(held, notices=any(q.pubmed for q in held), crossref=bool(held), wait=wait)

    def poll_queries(
        self, queries: Sequence[QuerySettings], *, wait: float, should_stop: Callable[[], bool] = lambda: False
    ) -> list[PollResult]:
        """A daemon job's poll of `queries` (claimed by the job): the same cycle."""
        return self.cycle.run(queries, wait=wait, should_stop=should_stop)

    def poll_shared(self, kind: str) -> list[PollResult]:
        """A daemon job's poll of a shared source, "notices" or "crossref" (claimed by
        the job, so the cycle's claim is re-entered): the same cycle."""
        return self.cycle.run([], notices=kind == "notices", crossref=kind == "crossref")

    def poll_pubmed(self, q: QuerySettings) -> PollResult:
        """One query's PubMed poll: a cycle of one."""
        return self.cycle.pubmed([q])[0]

    def poll_crossref(self) -> PollResult:
        return self.cycle.crossref()

    @property
    def eutils(self) -> EutilsClient:
        return self.clients.eutils

    @property
    def crossref(self) -> CrossrefClient:
        return self.clients.crossref

    # ================================================================== digest

    @property
    def digests(self) -> Digests:
        # the digest side (Jinja2, css-inline, the mail transports) is loaded only where a
        # digest is built or sent: `litwatch poll` does not pay for it (issue 15)
        if self._digests is None:
            from .digest.build import Digests

            self._digests = Digests(self.settings, self.store, self.coordination, self.now)
        return self._digests

    @property
    def renderer(self) -> Renderer:
        return self.digests.renderer

    @property
    def outbox(self) -> Outbox:
        return self.digests.outbox

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
        return self.digests.run(
            _select("digest", "digests", self.settings.digests, names),
            dry_run=dry_run,
            html_path=html_path,
            respect_backoff=respect_backoff,
            retry_failed=retry_failed,
            wait=wait,
        )

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
        return self.digests.send_queued(
            digests, respect_backoff=respect_backoff, results=results, only_new=only_new, transport=transport
        )

    def stale_sources(self, tx: Connection, d: DigestSettings) -> list[dict[str, Any]]:
        return self.digests.stale_sources(tx, d)

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

    def task_anchors(self) -> tuple[dict[tuple[str, str], SourceTimes], dict[str, datetime | None]]:
        """Each source's last success and failures, and each digest's last run, as
        written (this host's clock): the schedule's anchors when no claim has recorded a
        run yet, and when a failing source is tried again."""
        with self.store.transaction() as tx:
            states = {
                (r.query, r.source): SourceTimes(r.last_ok, r.failing_since, r.last_error_at, bool(r.disabled))
                for r in self.store.all_poll_states(tx)
            }
            digests = {}
            for d in self.settings.digests:
                row = self.store.digest_state(tx, d.name)
                digests[d.name] = row.last_run if row is not None else None
        return states, digests

    # ================================================================== history and status

    def history(self, ident: str) -> list[dict[str, Any]]:
        return self._status().history(ident)

    def status(self) -> dict[str, Any]:
        return self._status().status()

    def _status(self) -> StatusView:
        from .status import StatusView

        return StatusView(self.settings, self.store, self.digests)


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


__all__ = ["LitwatchError", "PollProgress", "PollResult", "Service"]
