"""What the web view reads (events, a record's events and mails, a digest's archive,
events per week) and the unsubscribed recipients it and the CLI write (issue 26)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import StoreCore
from .schema import deliveries, digest_recipients, events, outbox, records, unsubscribes, versions


@dataclass(frozen=True)
class EventView:
    id: int
    record_id: int
    query: str
    kind: str
    created_at: datetime
    source: str
    key: str
    title: str


@dataclass(frozen=True)
class SentMessage:
    id: int
    digest: str
    recipient: str
    subject: str
    state: str
    items: int
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Unsubscribe:
    digest: str
    recipient: str
    at: datetime
    via: str


def _title(fields: str) -> str:
    try:
        return str(json.loads(fields).get("title") or "")
    except (ValueError, AttributeError):
        return ""


_MESSAGE_COLUMNS = (
    outbox.c.id,
    outbox.c.digest,
    outbox.c.recipient,
    outbox.c.subject,
    outbox.c.state,
    outbox.c["items"],
    outbox.c.created_at,
    outbox.c.sent_at,
)


class WebStore(StoreCore):
    # ------------------------------------------------------------------ unsubscribes

    def unsubscribe(self, tx: Connection, digest: str, recipient: str, now: datetime, via: str) -> bool:
        """Stop `recipient`'s mail from `digest`, and drop what is still queued for them
        (its events go back to undelivered); False when they already were stopped."""
        found = tx.execute(
            sa.select(unsubscribes.c.digest).where(
                unsubscribes.c.digest == digest, unsubscribes.c.recipient == recipient
            )
        ).first()
        if found is not None:
            return False
        tx.execute(
            self._insert_ignore(unsubscribes, ["digest", "recipient"]),
            {"digest": digest, "recipient": recipient, "at": now, "via": via},
        )
        # At once: a message still queued for them (a server was down) does not go out.
        # One being sent now (claimed) is not stopped; its claim holds it.
        queued = [
            r.id
            for r in tx.execute(
                sa.select(outbox.c.id).where(
                    outbox.c.digest == digest, outbox.c.recipient == recipient, outbox.c.state == "queued"
                )
            )
        ]
        if queued:
            tx.execute(sa.delete(deliveries).where(deliveries.c.outbox_id.in_(queued)))
            tx.execute(sa.delete(outbox).where(outbox.c.id.in_(queued), outbox.c.state == "queued"))
        return True

    def resubscribe(self, tx: Connection, digest: str, recipient: str, now: datetime) -> bool:
        """Resume their mail with the digest's next one: what happened while they were
        unsubscribed is not sent (their start moves to `now`)."""
        res = tx.execute(
            sa.delete(unsubscribes).where(unsubscribes.c.digest == digest, unsubscribes.c.recipient == recipient)
        )
        if not res.rowcount:
            return False
        tx.execute(
            sa.update(digest_recipients)
            .where(digest_recipients.c.digest == digest, digest_recipients.c.recipient == recipient)
            .values(since=now)
        )
        return True

    def unsubscribed(self, tx: Connection, digest: str | None = None) -> list[Unsubscribe]:
        q = sa.select(unsubscribes).order_by(unsubscribes.c.digest, unsubscribes.c.recipient)
        if digest is not None:
            q = q.where(unsubscribes.c.digest == digest)
        return [Unsubscribe(r.digest, r.recipient, r.at, r.via) for r in tx.execute(q)]

    # ------------------------------------------------------------------ pages

    def events_page(
        self,
        tx: Connection,
        *,
        queries: Sequence[str] = (),
        kinds: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        text: str = "",
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[EventView]:
        """Newest first, `limit` of them, older than `before_id` (keyset paging: a page
        costs the same however deep). `text`: in the version's title or abstract."""
        q = (
            sa.select(
                events.c.id,
                events.c.record_id,
                events.c.query,
                events.c.kind,
                events.c.created_at,
                records.c.source,
                records.c.key,
                versions.c.fields,
            )
            .join(records, records.c.id == events.c.record_id)
            .join(versions, sa.and_(versions.c.record_id == events.c.record_id, versions.c.n == events.c.version_n))
            .order_by(events.c.id.desc())
            .limit(limit)
        )
        if queries:
            q = q.where(events.c.query.in_(list(queries)))
        if kinds:
            q = q.where(events.c.kind.in_(list(kinds)))
        if since is not None:
            q = q.where(events.c.created_at >= since)
        if until is not None:
            q = q.where(events.c.created_at < until)
        if before_id is not None:
            q = q.where(events.c.id < before_id)
        if text:
            like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            q = q.where(sa.func.lower(versions.c.fields).like(like, escape="\\"))
        return [
            EventView(r.id, r.record_id, r.query, r.kind, r.created_at, r.source, r.key, _title(r.fields))
            for r in tx.execute(q)
        ]

    def record_events(self, tx: Connection, record_id: int) -> list[EventView]:
        q = (
            sa.select(events.c.id, events.c.query, events.c.kind, events.c.created_at, events.c.version_n)
            .where(events.c.record_id == record_id)
            .order_by(events.c.id)
        )
        return [
            EventView(r.id, record_id, r.query, r.kind, r.created_at, "", "", f"version {r.version_n}")
            for r in tx.execute(q)
        ]

    def record_messages(self, tx: Connection, record_id: int) -> list[SentMessage]:
        """The mails that carried any event of the record."""
        ids = sa.select(deliveries.c.outbox_id).join(events, events.c.id == deliveries.c.event_id)
        ids = ids.where(events.c.record_id == record_id)
        q = sa.select(*_MESSAGE_COLUMNS).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
        return [SentMessage(*r) for r in tx.execute(q)]

    def digest_messages(
        self, tx: Connection, digest: str, *, before_id: int | None = None, limit: int = 50
    ) -> list[SentMessage]:
        q = sa.select(*_MESSAGE_COLUMNS).where(outbox.c.digest == digest, outbox.c.state == "sent")
        if before_id is not None:
            q = q.where(outbox.c.id < before_id)
        q = q.order_by(outbox.c.id.desc()).limit(limit)
        return [SentMessage(*r) for r in tx.execute(q)]

    def message_mime(self, tx: Connection, outbox_id: int) -> tuple[SentMessage, bytes] | None:
        row = tx.execute(sa.select(*_MESSAGE_COLUMNS, outbox.c.mime).where(outbox.c.id == outbox_id)).first()
        if row is None:
            return None
        return SentMessage(*row[:-1]), bytes(row[-1])

    def record_by_id(self, tx: Connection, record_id: int) -> tuple[int, str, str] | None:
        row = tx.execute(
            sa.select(records.c.id, records.c.source, records.c.key).where(records.c.id == record_id)
        ).first()
        return (row.id, row.source, row.key) if row is not None else None

    def events_per_week(self, tx: Connection, since: datetime) -> dict[tuple[str, str, datetime], int]:
        """(query, kind, Monday of the week) → events created that week, from `since`:
        counted per day by the database, folded into weeks here."""
        day = sa.func.date(events.c.created_at)
        q = (
            sa.select(events.c.query, events.c.kind, day.label("day"), sa.func.count().label("n"))
            .where(events.c.created_at >= since)
            .group_by(events.c.query, events.c.kind, day)
        )
        out: dict[tuple[str, str, datetime], int] = {}
        for r in tx.execute(q):
            d = r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day)[:10])
            monday = datetime(d.year, d.month, d.day) - timedelta(days=d.weekday())
            key = (r.query, r.kind, monday)
            out[key] = out.get(key, 0) + int(r.n)
        return out
