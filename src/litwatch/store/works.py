"""Works (0012, issue 25): which records are one paper or one decision (`works`,
`work_keys`, `records.work_id`, `events.work_id`), the doubts kept when a DOI would
join two clearly different titles, and what a recipient has been told of each work
already (the delivered events of a work, to bind a later event of the same news to)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..records import DeliveredNews, Record
from .engine import StoreCore
from .keys import chunks, lookup_form
from .schema import deliveries, events, records, versions, work_doubts, work_keys, works

IDENT_LIMIT = 400  # work_keys.ident


@dataclass(frozen=True, slots=True)
class WorkDoubt:
    """A record kept out of the work its DOI names: the titles differ."""

    record_id: int
    source: str
    key: str
    other_id: int
    other_source: str
    other_key: str
    ident: str
    noted_at: datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """A recent record that may be one decision with a new one: a regulator's record,
    or a press release that was reported as an approval."""

    record_id: int
    work_id: int
    record: Record
    first_seen: datetime


class WorksStore(StoreCore):
    def works_of(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, int]:
        """The work of each of `record_ids` that has one."""
        out: dict[int, int] = {}
        for part in chunks(list(set(record_ids))):
            q = sa.select(records.c.id, records.c.work_id).where(records.c.id.in_(part), records.c.work_id.is_not(None))
            out.update({row.id: row.work_id for row in tx.execute(q)})
        return out

    def works_by_ident(self, tx: Connection, idents: Iterable[str]) -> dict[str, int]:
        """The work each identifier names ("doi:…", "pmid:…"), where one does."""
        out: dict[str, int] = {}
        for part in chunks(sorted(set(idents))):
            forms = {lookup_form(i, IDENT_LIMIT): i for i in part}
            q = sa.select(work_keys.c.ident, work_keys.c.work_id).where(work_keys.c.ident.in_(list(forms)))
            out.update({forms[row.ident]: row.work_id for row in tx.execute(q)})
        return out

    def new_works(self, tx: Connection, ids: Sequence[int], now: datetime) -> None:
        """New works, each numbered by its first record's id (a record makes at most one:
        the id is free, and a record's new work needs no id read back)."""
        if ids:
            tx.execute(sa.insert(works), [{"id": i, "created_at": now} for i in ids])

    def add_work_keys(self, tx: Connection, keys: Mapping[str, int]) -> dict[str, int]:
        """Name works by identifiers (identifier → work). An identifier naming a work
        already keeps it: those are returned with the work they name (another process
        may have stored it a moment ago)."""
        rows = [{"ident": lookup_form(i, IDENT_LIMIT), "work_id": w} for i, w in keys.items()]
        if not rows:
            return {}
        added = {
            row.ident
            for row in tx.execute(self._insert_ignore(work_keys, ["ident"]).returning(work_keys.c.ident), rows)
        }
        taken = [i for i in keys if lookup_form(i, IDENT_LIMIT) not in added]
        return self.works_by_ident(tx, taken) if taken else {}

    def set_record_works(self, tx: Connection, work_of: Mapping[int, int], *, with_events: Iterable[int] = ()) -> None:
        """Put records in works; the events of the records `with_events` move with them
        (a record's events otherwise have its work already, or none yet)."""
        own = sorted(r for r, w in work_of.items() if r == w)  # the first record of a new work: one statement
        for part in chunks(own):
            tx.execute(records.update().where(records.c.id.in_(part)).values(work_id=records.c.id))
        joined = [{"rid": r, "wid": w} for r, w in sorted(work_of.items()) if r != w]
        if joined:
            tx.execute(
                records.update().where(records.c.id == sa.bindparam("rid")).values(work_id=sa.bindparam("wid")),
                joined,
            )
        moved = [{"rid": r, "wid": work_of[r]} for r in sorted(set(with_events)) if r in work_of]
        if moved:
            tx.execute(
                events.update().where(events.c.record_id == sa.bindparam("rid")).values(work_id=sa.bindparam("wid")),
                moved,
            )

    def merge_works(self, tx: Connection, keep: int, gone: Iterable[int]) -> None:
        """Make the works `gone` part of `keep`: their records, events and identifiers."""
        gone = sorted(set(gone) - {keep})
        if not gone:
            return
        for table in (records, events, work_keys):
            tx.execute(table.update().where(table.c.work_id.in_(gone)).values(work_id=keep))
        tx.execute(works.delete().where(works.c.id.in_(gone)))

    def records_of_works(self, tx: Connection, work_ids: Iterable[int]) -> dict[int, list[int]]:
        """The records of each work, oldest first."""
        out: dict[int, list[int]] = {}
        for part in chunks(sorted(set(work_ids))):
            q = sa.select(records.c.id, records.c.work_id).where(records.c.work_id.in_(part)).order_by(records.c.id)
            for row in tx.execute(q):
                out.setdefault(row.work_id, []).append(row.id)
        return out

    def add_work_doubt(self, tx: Connection, record_id: int, other_id: int, ident: str, now: datetime) -> None:
        tx.execute(
            self._insert_ignore(work_doubts, ["record_id", "other_id"]),
            [{"record_id": record_id, "other_id": other_id, "ident": lookup_form(ident, IDENT_LIMIT), "noted_at": now}],
        )

    def work_doubts(self, tx: Connection, record_ids: Iterable[int] | None = None) -> list[WorkDoubt]:
        """The doubts stored (about `record_ids`, as either side, when given), oldest first."""
        mine, other = records.alias("mine"), records.alias("other")
        q = (
            sa.select(
                work_doubts.c.record_id,
                mine.c.source,
                mine.c.key,
                work_doubts.c.other_id,
                other.c.source.label("other_source"),
                other.c.key.label("other_key"),
                work_doubts.c.ident,
                work_doubts.c.noted_at,
            )
            .join(mine, mine.c.id == work_doubts.c.record_id)
            .join(other, other.c.id == work_doubts.c.other_id)
            .order_by(work_doubts.c.noted_at, work_doubts.c.record_id)
        )
        if record_ids is not None:
            ids = list(set(record_ids))
            q = q.where(sa.or_(work_doubts.c.record_id.in_(ids), work_doubts.c.other_id.in_(ids)))
        return [WorkDoubt(**row._asdict()) for row in tx.execute(q)]

    def approval_candidates(self, tx: Connection, since: datetime) -> list[Candidate]:
        """Records first seen at `since` or later that may be one decision with another:
        regulators' records (their stored form names a regulator) and items reported as
        an `approval` that are not PubMed's (press releases)."""
        approval = sa.exists().where(events.c.record_id == records.c.id, events.c.kind == "approval")
        q = (
            sa.select(records.c.id, records.c.work_id, records.c.source, records.c.key, records.c.first_seen)
            .add_columns(versions.c.fields)
            .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version))
            .where(
                records.c.first_seen >= since,
                records.c.source != "pubmed",
                records.c.work_id.is_not(None),
                sa.or_(versions.c.fields.like('%"regulator":%'), approval),
            )
            .order_by(records.c.id)
        )
        return [
            Candidate(
                row.id, row.work_id, Record.from_fields(row.source, row.key, json.loads(row.fields)), row.first_seen
            )
            for row in tx.execute(q)
        ]

    # ------------------------------------------------------------------ heard

    def delivered_news(
        self, tx: Connection, digest: str, recipient: str, work_ids: Iterable[int]
    ) -> list[DeliveredNews]:
        """The events of `work_ids` delivered to (digest, recipient), with the message each went in."""
        out: list[DeliveredNews] = []
        e, d = events.c, deliveries.c
        for part in chunks(sorted(set(work_ids))):
            q = (
                sa.select(e.id, e.work_id, e.kind, e.dedup, e.detail, d.outbox_id)
                .join(deliveries, d.event_id == e.id)
                .where(e.work_id.in_(part), d.digest == digest, d.recipient == recipient)
                .order_by(e.id)
            )
            out += [
                DeliveredNews(row.id, row.work_id, row.kind, row.dedup, json.loads(row.detail or "{}"), row.outbox_id)
                for row in tx.execute(q)
            ]
        return out

    def bind_heard(self, tx: Connection, digest: str, recipient: str, heard: Mapping[int, int]) -> None:
        """Bind events to the message that already told their news (event id → outbox
        id): delivered, never mailed again."""
        if heard:
            tx.execute(
                self._insert_ignore(deliveries, ["event_id", "digest", "recipient"]),
                [
                    {"event_id": eid, "digest": digest, "recipient": recipient, "outbox_id": oid}
                    for eid, oid in sorted(heard.items())
                ],
            )
