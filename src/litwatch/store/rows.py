"""What the store returns: frozen row types, one per kind of row a caller reads, with
the columns it reads as typed attributes (no SQLAlchemy `Row` leaves `store/`).
Contains no queries. A row type whose table gains a column fails loudly where it is
built (`row_of`), so a schema change cannot pass unnoticed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Row

from ..records import EventRow, PendingEvent, Record  # the vocabulary's; named here as before

R = TypeVar("R")


def row_of(cls: type[R], row: Row[*tuple[Any, ...]]) -> R:
    """A row type from a result row whose columns are exactly its fields."""
    return cls(**row._asdict())


# ---------------------------------------------------------------- records and versions


@dataclass(frozen=True, slots=True)
class Current:
    """A record's current version: id, version number, fingerprint, the record."""

    record_id: int
    n: int
    hash: str
    record: Record


class StoredCurrent(Current):
    """A `Current` read from the database whose `record` is decoded from its JSON on
    first use: most callers only need the keys or compare hashes (an unchanged re-fetch
    never looks at the old record), and decoding was a third of a re-fetch's time
    (bench/RESULTS.md, store benchmark). Not slotted itself: it keeps the undecoded
    fields in its `__dict__` until then."""

    def __init__(self, record_id: int, n: int, hash: str, source: str, key: str, fields: str) -> None:
        object.__setattr__(self, "record_id", record_id)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "hash", hash)
        object.__setattr__(self, "_stored", (source, key, fields))

    def __getattr__(self, name: str) -> Record:  # only for attributes not set yet: `record`
        if name != "record":
            raise AttributeError(name)
        source, key, fields = self.__dict__["_stored"]
        rec = Record.from_fields(source, key, json.loads(fields))
        object.__setattr__(self, "record", rec)
        return rec


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of a record, as `history` shows it."""

    n: int
    fetched_at: datetime
    fields: dict[str, Any]  # Record.fields(): JSON values
    changes: list[list[Any]]  # [[field, old, new], ...] against version n-1


# ---------------------------------------------------------------- events


# ---------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class PollState:
    """A source's progress for a query (query "*": a source shared by every query)."""

    query: str
    source: str
    watermark: str | None
    last_ok: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    failing_since: datetime | None
    etag: str | None
    last_modified: str | None
    url: str | None
    fresh_until: datetime | None
    disabled: bool
    polls: int
    errors: int
    mdat_watermark: str | None


@dataclass(frozen=True, slots=True)
class MissingPmid:
    """A PMID a search found and efetch left out, retried until it arrives or given up."""

    query: str
    pmid: str
    first_missing: datetime
    last_try: datetime
    tries: int
    gave_up_at: datetime | None


@dataclass(frozen=True, slots=True)
class Overflow:
    """A US Eastern day whose modifications went over PubMed's search cap."""

    query: str
    day: str  # ISO date
    count: int
    noted_at: datetime


@dataclass(frozen=True, slots=True)
class DigestState:
    digest: str
    last_run: datetime | None
    last_sent: datetime | None


# ---------------------------------------------------------------- outbox


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message of the outbox, whole (its MIME bytes too)."""

    id: int
    digest: str
    recipient: str
    message_id: str
    subject: str
    mime: bytes
    items: int
    state: str  # queued | sending | sent | refused | split
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime | None
    owner: str | None
    until: datetime | None
    reply: str | None
    refused_at: datetime | None


@dataclass(frozen=True, slots=True)
class SendingMessage:
    """A message claimed for sending; `stale`: its claim ran out (database clock)."""

    id: int
    digest: str
    recipient: str
    subject: str
    message_id: str
    owner: str | None
    until: datetime | None
    stale: bool


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A message the server refused for good (5xx), kept until `--retry-failed`."""

    id: int
    digest: str
    recipient: str
    message_id: str
    subject: str
    items: int
    reply: str | None
    last_error: str | None
    refused_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    queued: int  # waiting: queued or being sent
    oldest_queued: datetime | None
    sending: int
    failed: int  # refused for good


class MessagePart(Protocol):
    """A message to queue in place of one too large for the server (outbox.Part)."""

    @property
    def message_id(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def mime(self) -> bytes: ...
    @property
    def items(self) -> int: ...
    @property
    def event_ids(self) -> Sequence[int]: ...


# ---------------------------------------------------------------- claims


@dataclass(frozen=True, slots=True)
class Lease:
    """A task's lease: held by `owner` while `until` is ahead of the database's clock."""

    task: str
    owner: str
    until: datetime
    last_run: datetime | None  # when the task last started, by any instance
    next_run: datetime | None  # when the daemon plans to run it next
    token: int  # the fencing token: +1 whenever the task changes hands


__all__ = [
    "Current",
    "DigestState",
    "EventRow",
    "Lease",
    "MessagePart",
    "MissingPmid",
    "OutboxMessage",
    "OutboxSummary",
    "Overflow",
    "PendingEvent",
    "PollState",
    "RefusedMessage",
    "SendingMessage",
    "StoredCurrent",
    "StoredVersion",
    "row_of",
]
