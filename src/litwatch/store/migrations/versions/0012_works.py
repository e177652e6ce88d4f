"""works: the records of one paper or one regulatory decision joined (issue 25)

Creates `works`, `work_keys` (each identifier a work is known by: "doi:…", "pmid:…",
"pmcid:…", "reg:FDA:…") and `work_doubts` (a DOI not joined: the titles differ), and
`records.work_id` / `events.work_id`. Then builds the works of what is stored — the
same joins ingest makes as records arrive (`works.cluster`, `approvals.same_decision`
for press releases) — and marks what was delivered as delivered for the whole work:
an event not yet delivered to a digest's recipient whose news (`works.same_news`) an
event of the same work already brought them is bound to that message. Nothing is
mailed again on upgrade.

Revision ID: 0012_works
Revises: 0008_unsubscribes
Create Date: 2026-12-08
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0012_works"
down_revision = "0008_unsubscribes"
branch_labels = None
depends_on = None

_CHUNK = 500


def upgrade() -> None:
    op.create_table(
        "works",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "work_keys",
        sa.Column("ident", sa.String(400), nullable=False),
        sa.Column("work_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("ident"),
    )
    op.create_index("ix_work_keys_work_id", "work_keys", ["work_id"])
    op.create_table(
        "work_doubts",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("other_id", sa.Integer(), nullable=False),
        sa.Column("ident", sa.String(400), nullable=False),
        sa.Column("noted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["records.id"]),
        sa.ForeignKeyConstraint(["other_id"], ["records.id"]),
        sa.PrimaryKeyConstraint("record_id", "other_id"),
    )
    op.add_column("records", sa.Column("work_id", sa.Integer(), nullable=True))
    op.create_index("ix_records_work_id", "records", ["work_id"])
    op.add_column("events", sa.Column("work_id", sa.Integer(), nullable=True))
    op.create_index("ix_events_work_id", "events", ["work_id"])
    _build_works(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_events_work_id", "events")
    op.drop_column("events", "work_id")
    op.drop_index("ix_records_work_id", "records")
    op.drop_column("records", "work_id")
    op.drop_table("work_doubts")
    op.drop_index("ix_work_keys_work_id", "work_keys")
    op.drop_table("work_keys")
    op.drop_table("works")


def _build_works(conn: sa.Connection) -> None:
    from litwatch import approvals, works
    from litwatch.records import Record
    from litwatch.store.keys import lookup_form

    now = datetime.utcnow()
    rows = conn.execute(
        sa.text(
            "SELECT r.id, r.source, r.key, r.first_seen, v.fields FROM records r "
            "JOIN versions v ON v.record_id = r.id AND v.n = r.current_version ORDER BY r.id"
        )
    ).all()
    stored = [(row.id, Record.from_fields(row.source, row.key, json.loads(row.fields))) for row in rows]
    first_seen = {row.id: row.first_seen for row in rows}
    root, keys, doubts = works.cluster(stored)
    # press releases reported as approvals join the regulator's record they announce
    approved = {r for (r,) in conn.execute(sa.text("SELECT DISTINCT record_id FROM events WHERE kind = 'approval'"))}
    by_id = dict(stored)
    decisions = [(rid, rec) for rid, rec in stored if rec.regulator]
    taken: set[int] = set()
    for rid, rec in stored:
        regulator = approvals.press_regulator(rec)
        if rid not in approved or not regulator or root[rid] != rid:
            continue
        seen = first_seen[rid]
        when = approvals.day_of(rec.pub_date) or (seen.date() if isinstance(seen, datetime) else None)
        if when is None:
            continue
        target = approvals.same_decision(rec, regulator, when, [(d, by_id[d]) for d, _ in decisions])
        if target is not None and root[target] not in taken:
            keep = min(root[target], rid)
            for r, w in root.items():
                if w in (root[target], rid):
                    root[r] = keep
            taken.add(keep)
    # one works row per root: a work is numbered by its first record's id, as ingest does
    _many(
        conn,
        "INSERT INTO works (id, created_at) VALUES (:w, :now)",
        [{"w": w, "now": now} for w in sorted(set(root.values()))],
    )
    _many(conn, "UPDATE records SET work_id = :w WHERE id = :r", [{"w": w, "r": r} for r, w in root.items()])
    conn.execute(
        sa.text("UPDATE events SET work_id = (SELECT work_id FROM records WHERE records.id = events.record_id)")
    )
    _many(
        conn,
        "INSERT INTO work_keys (ident, work_id) VALUES (:i, :w)",
        [{"i": lookup_form(i, 400), "w": root[w]} for i, w in keys.items()],
    )
    _many(
        conn,
        "INSERT INTO work_doubts (record_id, other_id, ident, noted_at) VALUES (:r, :o, :i, :now)",
        [{"r": r, "o": o, "i": lookup_form(i, 400), "now": now} for r, o, i in dict.fromkeys(doubts)],
    )
    _delivered_for_the_whole_work(conn, works.same_news)


def _delivered_for_the_whole_work(conn: sa.Connection, same_news: Any) -> None:
    """Bind each event not delivered to a (digest, recipient) that has had its news
    through another event of its work to the message that brought it."""
    from litwatch.records import DeliveredNews

    delivered = conn.execute(
        sa.text(
            "SELECT d.digest, d.recipient, d.outbox_id, e.id, e.work_id, e.kind, e.dedup, e.detail "
            "FROM deliveries d JOIN events e ON e.id = d.event_id WHERE e.work_id IS NOT NULL ORDER BY e.id"
        )
    ).all()
    told: dict[tuple[str, str], dict[int, list[DeliveredNews]]] = {}
    for row in delivered:
        news = DeliveredNews(row.id, row.work_id, row.kind, row.dedup, json.loads(row.detail or "{}"), row.outbox_id)
        told.setdefault((row.digest, row.recipient), {}).setdefault(row.work_id, []).append(news)
    if not told:
        return
    wanted = sorted({w for by in told.values() for w in by})
    events: list[Any] = []
    for i in range(0, len(wanted), _CHUNK):
        events += conn.execute(
            sa.text("SELECT id, work_id, kind, dedup, detail FROM events WHERE work_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": wanted[i : i + _CHUNK]},
        ).all()
    bound = {(row.digest, row.recipient, row.id) for row in delivered}
    rows = []
    for (digest, recipient), by_work in told.items():
        for e in events:
            if (digest, recipient, e.id) in bound:
                continue
            detail = json.loads(e.detail or "{}")
            hit = next(
                (d for d in by_work.get(e.work_id, []) if d.event_id != e.id and same_news(e.kind, e.dedup, detail, d)),
                None,
            )
            if hit is not None:
                rows.append({"e": e.id, "d": digest, "r": recipient, "o": hit.outbox_id})
    _many(conn, "INSERT INTO deliveries (event_id, digest, recipient, outbox_id) VALUES (:e, :d, :r, :o)", rows)


def _many(conn: sa.Connection, sql: str, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), _CHUNK):
        conn.execute(sa.text(sql), rows[i : i + _CHUNK])
