"""What the rest of litwatch needs of the store, as Protocols: code that polls or
ingests depends on `IngestPort`, code that builds or sends digests on `DigestPort` /
`OutboxPort`, coordination on `ClaimsPort`; `Store` provides them all (mypy checks,
where `Service` assigns it). A test or a later backend can provide one alone.

Every method taking `tx` runs in the caller's `transaction()` (or `write`, which
reruns it on a conflict). Every method raises `StoreError` for a database error —
`StoreConflict` when another writer got there first and a rerun resolves it — and
never a SQLAlchemy exception."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection

from ..records import NoticeEvent, NoticeReport, Record
from .rows import (
    Current,
    DigestState,
    EventRow,
    Lease,
    MessagePart,
    MissingPmid,
    OutboxMessage,
    OutboxSummary,
    Overflow,
    PendingEvent,
    PollState,
    RefusedMessage,
    SendingMessage,
    StoredVersion,
)
from .versions import Change

T = TypeVar("T")


class Transactions(Protocol):
    def transaction(self, *, immediate: bool = False, fenced: bool = True) -> AbstractContextManager[Connection]:
        """One transaction, committed at the end of the block (after this thread's fences)."""
        ...

    def write(self, fn: Callable[[Connection], T], *, what: str, attempts: int = ..., pause: float = ...) -> T:
        """`fn` in one transaction, rerun from scratch on a `StoreConflict`."""
        ...


class IngestPort(Transactions, Protocol):
    """What polling needs: save what a source fetched as versions, see what is stored,
    note which queries matched it, add the events that follow, move the progress."""

    # records and versions
    def current(self, tx: Connection, source: str, keys: Iterable[str]) -> dict[str, Current]: ...
    def current_by_id(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Current]: ...
    def first_versions(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Record]: ...
    def insert_records(self, tx: Connection, new: Sequence[tuple[Record, str]], now: datetime) -> dict[str, int]: ...
    def add_versions(self, tx: Connection, changed: Sequence[Change], now: datetime) -> None: ...
    def records_by_pmid(self, tx: Connection, pmids: Iterable[str]) -> dict[str, int]: ...

    # hits and events
    def hits_for(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, set[str]]: ...
    def add_hits(self, tx: Connection, rows: Sequence[tuple[int, str, tuple[str, ...]]], now: datetime) -> None: ...
    def add_events(self, tx: Connection, rows: Sequence[EventRow], now: datetime) -> int: ...

    # progress
    def poll_state(self, tx: Connection, query: str, source: str) -> PollState | None: ...
    def poll_ok(self, tx: Connection, query: str, source: str, now: datetime, **values: object) -> None: ...
    def poll_failed(
        self, tx: Connection, query: str, source: str, error: str, now: datetime, **values: object
    ) -> None: ...
    def note_matched(self, tx: Connection, query: str, source: str, marker: str) -> None: ...
    def missing_pmids(self, tx: Connection, query: str, *, given_up: bool = False) -> dict[str, datetime]: ...
    def note_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None: ...
    def give_up_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None: ...
    def found_missing(self, tx: Connection, query: str, pmids: Iterable[str]) -> None: ...
    def note_overflow(self, tx: Connection, query: str, day: str, count: int, now: datetime) -> bool: ...
    def set_feed_entries(self, tx: Connection, source: str, record_ids: Iterable[int], seen_at: datetime) -> None: ...
    def feed_entries(self, tx: Connection, source: str) -> tuple[datetime | None, list[int]]: ...


class NoticesPort(Protocol):
    """What attributing a notice to one event needs (`litwatch.notices` decides): the
    reports stored of each record's notices, the events of notice kinds to match a new
    report against, and recording reports (one per record, source, kind and notice)."""

    def add_notice_reports(
        self, tx: Connection, reports: Sequence[NoticeReport], now: datetime
    ) -> list[NoticeReport]: ...
    def notice_reports_for(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, list[NoticeReport]]: ...
    def notice_events_for(
        self, tx: Connection, record_ids: Iterable[int], kinds: Sequence[str]
    ) -> dict[int, list[NoticeEvent]]: ...


class OutboxPort(Transactions, Protocol):
    """What sending needs: queue a message with its events, claim it, mark the outcome."""

    def queue_message(
        self,
        tx: Connection,
        *,
        digest: str,
        recipient: str,
        message_id: str,
        subject: str,
        mime: bytes,
        items: int,
        event_ids: Sequence[int],
        now: datetime,
    ) -> int: ...
    def queued_messages(
        self, tx: Connection, *, digests: Sequence[str] | None, now: datetime | None
    ) -> list[OutboxMessage]: ...
    def messages(self, tx: Connection, ids: Sequence[int]) -> list[OutboxMessage]: ...
    def sending(self, tx: Connection, *, digests: Sequence[str] | None) -> list[SendingMessage]: ...
    def claim_message(self, tx: Connection, outbox_id: int, owner: str, ttl: timedelta) -> bool: ...
    def release_claim(self, tx: Connection, outbox_id: int, owner: str | None) -> bool: ...
    def mark_sent(self, tx: Connection, outbox_id: int, owner: str, now: datetime) -> bool: ...
    def mark_failed(self, tx: Connection, outbox_id: int, owner: str, error: str, *, retry_at: datetime) -> bool: ...
    def mark_refused(
        self, tx: Connection, outbox_id: int, owner: str, error: str, reply: str, now: datetime
    ) -> bool: ...
    def split_message(
        self, tx: Connection, outbox_id: int, owner: str, parts: Sequence[MessagePart], now: datetime
    ) -> list[int]: ...
    def refused_messages(self, tx: Connection, digest: str | None = None) -> list[RefusedMessage]: ...
    def requeue_refused(self, tx: Connection, digests: Sequence[str] | None) -> list[RefusedMessage]: ...
    def set_digest_state(
        self, tx: Connection, digest: str, *, last_run: datetime | None = None, last_sent: datetime | None = None
    ) -> None: ...


class DigestPort(OutboxPort, Protocol):
    """What building a digest needs: the events still to deliver to a recipient (and
    from when), the digest's own state, and the sources failing to mention."""

    def pending_events(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
    ) -> list[PendingEvent]: ...
    def message_events(self, tx: Connection, outbox_id: int) -> list[PendingEvent]: ...
    def recipient_since(self, tx: Connection, digest: str, recipient: str) -> datetime | None: ...
    def start_recipient(self, tx: Connection, digest: str, recipient: str, since: datetime) -> datetime: ...
    def digest_state(self, tx: Connection, digest: str) -> DigestState | None: ...
    def current(self, tx: Connection, source: str, keys: Iterable[str]) -> dict[str, Current]: ...
    def all_poll_states(self, tx: Connection) -> list[PollState]: ...
    def overflows(self, tx: Connection, queries: Iterable[str], *, since: datetime | None = None) -> list[Overflow]: ...


class ClaimsPort(Protocol):
    """What coordination needs: leases on the database's clock, fences checked before
    each commit, and the shared request budget."""

    fences: ContextVar[tuple[Callable[[Connection], None], ...]]

    def transaction(self, *, immediate: bool = False, fenced: bool = True) -> AbstractContextManager[Connection]: ...
    def db_now(self, tx: Connection) -> datetime: ...
    def lock_lease(self, tx: Connection, task: str) -> Lease | None: ...
    def take_lease(
        self, tx: Connection, task: str, *, owner: str, until: datetime, token: int, last_run: datetime | None = None
    ) -> None: ...
    def renew_leases(self, tx: Connection, owner: str, held: dict[str, int], until: datetime) -> set[str]: ...
    def lease_held(self, tx: Connection, task: str, owner: str, token: int) -> bool: ...
    def release_lease(
        self, tx: Connection, task: str, owner: str, token: int, *, next_run: datetime | None = None
    ) -> None: ...
    def plan(self, tx: Connection, task: str, when: datetime) -> None: ...
    def leases(self, tx: Connection) -> dict[str, Lease]: ...
    def budget_starts(self, tx: Connection, name: str) -> tuple[float, list[float]]: ...
    def set_budget_starts(self, tx: Connection, name: str, starts: Sequence[float]) -> None: ...


class StatusPort(Protocol):
    """What `status`, `history` and the daemon's health read."""

    @property
    def safe_url(self) -> str: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
    def count_records(self, tx: Connection, query: str) -> int: ...
    def count_pending(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
        before: bool = False,
    ) -> int: ...
    def outbox_summary(self, tx: Connection) -> OutboxSummary: ...
    def queued_digests(self, tx: Connection, now: datetime) -> list[str]: ...
    def missing_report(self, tx: Connection, query: str) -> list[MissingPmid]: ...
    def find_records(self, tx: Connection, ident: str) -> list[tuple[int, str, str]]: ...
    def versions_of(self, tx: Connection, record_id: int) -> list[StoredVersion]: ...


class ServicePort(IngestPort, NoticesPort, DigestPort, ClaimsPort, StatusPort, Protocol):
    """Everything the service's use cases reach (it hands the parts on: `ClaimsPort` to
    coordination, `OutboxPort` to the outbox)."""


__all__ = [
    "ClaimsPort",
    "DigestPort",
    "IngestPort",
    "NoticesPort",
    "OutboxPort",
    "ServicePort",
    "StatusPort",
    "Transactions",
]
