"""Hits and events: which queries matched which records (and why), the events that
follow, and the events still to deliver for a digest and recipient."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..records import EventRow, PendingEvent, Record
from .engine import StoreCore
from .keys import DEDUP_LIMIT, chunks, dumps, lookup_form
from .schema import deliveries, events, hits, records, versions


class EventsStore(StoreCore):
    # ------------------------------------------------------------------ hits

    def hits_for(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, set[str]]:
        """The queries that ever matched each of `record_ids`."""
        out: dict[int, set[str]] = {}
        for part in chunks(list(set(record_ids))):
            q = sa.select(hits.c.record_id, hits.c.query).where(hits.c.record_id.in_(part))
            for row in tx.execute(q):
                out.setdefault(row.record_id, set()).add(row.query)
        return out

    def add_hits(self, tx: Connection, rows: Sequence[tuple[int, str, tuple[str, ...]]], now: datetime) -> None:
        """(record id, query, the terms that matched): kept once per record and query."""
        if rows:
            tx.execute(
                self._insert_ignore(hits, ["record_id", "query"]),
                [{"record_id": rid, "query": q, "first_seen": now, "terms": dumps(list(t))} for rid, q, t in rows],
            )

    def count_records_by_query(self, tx: Connection, queries: Sequence[str]) -> dict[str, int]:
        """How many records each of `queries` has matched (0 when none), in one query
        a chunk (`status` of a thousand queries: not a thousand counts)."""
        out = dict.fromkeys(queries, 0)
        for part in chunks(list(dict.fromkeys(queries))):
            q = sa.select(hits.c.query, sa.func.count()).where(hits.c.query.in_(part)).group_by(hits.c.query)
            out.update({row[0]: int(row[1]) for row in tx.execute(q)})
        return out

    # ------------------------------------------------------------------ events

    def add_events(self, tx: Connection, rows: Sequence[EventRow], now: datetime) -> int:
        """Insert events; an event whose (query, dedup) exists already is skipped.
        Returns how many are new."""
        if not rows:
            return 0
        missing = {r["record_id"] for r in rows if "work_id" not in r}
        works: dict[int, int | None] = {}
        for part in chunks(sorted(missing)):
            q = sa.select(records.c.id, records.c.work_id).where(records.c.id.in_(part))
            works.update({row.id: row.work_id for row in tx.execute(q)})
        # RETURNING names only the rows inserted (a conflict returns nothing), so the
        # count costs no scan of the events table (SQLAlchemy's insertmanyvalues batches it).
        inserted = tx.execute(
            self._insert_ignore(events, ["query", "dedup"]).returning(events.c.id),
            [
                {
                    **r,
                    "work_id": r["work_id"] if "work_id" in r else works.get(r["record_id"]),
                    "dedup": lookup_form(r["dedup"], DEDUP_LIMIT),
                    "detail": dumps(r.get("detail", {})),
                    "created_at": now,
                }
                for r in rows
            ],
        )
        return len(inserted.all())

    def pending_events(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
    ) -> list[PendingEvent]:
        """Events of `queries` and `kinds` not yet bound to a message for (digest,
        recipient), created at `since` or later (the recipient's start)."""
        where = _pending_where(queries=queries, kinds=kinds, digest=digest, recipient=recipient)
        if since is not None:
            where.append(events.c.created_at >= since)
        return _pending(tx, where)

    def message_events(self, tx: Connection, outbox_id: int) -> list[PendingEvent]:
        """The events bound to one outbox message (to render it again in parts)."""
        bound = sa.exists().where(deliveries.c.event_id == events.c.id, deliveries.c.outbox_id == outbox_id)
        return _pending(tx, [bound])

    def count_pending(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
    ) -> tuple[int, int]:
        """How many events `pending_events` gives, and how many undelivered ones it
        leaves out because they were created before `since` (skipped): one pass over
        the events, not two (`status`)."""
        where = _pending_where(queries=queries, kinds=kinds, digest=digest, recipient=recipient)
        if since is None:
            n = tx.execute(sa.select(sa.func.count()).select_from(events).where(*where)).scalar_one()
            return int(n), 0
        late = sa.case((events.c.created_at >= since, 1), else_=0)
        early = sa.case((events.c.created_at < since, 1), else_=0)
        row = tx.execute(sa.select(sa.func.sum(late), sa.func.sum(early)).select_from(events).where(*where)).one()
        return int(row[0] or 0), int(row[1] or 0)


def _pending_where(
    *, queries: Sequence[str], kinds: Sequence[str], digest: str, recipient: str
) -> list[sa.ColumnElement[bool]]:
    delivered = sa.exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.digest == digest, deliveries.c.recipient == recipient
    )
    return [events.c.query.in_(list(queries)), events.c.kind.in_(list(kinds)), ~delivered]


def _pending(tx: Connection, where: list[sa.ColumnElement[bool]]) -> list[PendingEvent]:
    q = (
        sa.select(events, records.c.source, records.c.key, versions.c.fields, hits.c.terms)
        .join(records, records.c.id == events.c.record_id)
        .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version))
        .outerjoin(hits, sa.and_(hits.c.record_id == events.c.record_id, hits.c.query == events.c.query))
        .where(*where)
        .order_by(events.c.id)
    )
    return [
        PendingEvent(
            id=row.id,
            record_id=row.record_id,
            query=row.query,
            kind=row.kind,
            version_n=row.version_n,
            detail=json.loads(row.detail),
            created_at=row.created_at,
            record=Record.from_fields(row.source, row.key, json.loads(row.fields)),
            terms=tuple(json.loads(row.terms or "[]")),
            work_id=row.work_id or 0,
            dedup=row.dedup,
        )
        for row in tx.execute(q)
    ]
