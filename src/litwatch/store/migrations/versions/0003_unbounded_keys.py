"""identifiers of any length; the entries of each feed's last answer

PostgreSQL refused a feed entry whose guid or link passed the declared varchar length
(and a btree entry over ~2,700 bytes), which ended the poll cycle. Now:

* records.key is Text; uniqueness and look-ups go through records.key_hash, its SHA-256;
* records.doi and events.dedup hold a lookup form: the value up to their length, its
  SHA-256 ("sha256:…") beyond (SQLite kept longer values: they are rewritten so);
* poll_state.watermark, etag, last_modified and url are Text;
* feed_entries: the entries of each feed's last 200 answer, which a query that has not
  matched them yet matches when the feed answers 304 or is still fresh (issue 13).

Revision ID: 0003_unbounded_keys
Revises: 0002
Create Date: 2026-12-01
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003_unbounded_keys"
down_revision = "0002"  # 0002_lease_schedule.py
branch_labels = None
depends_on = None


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _bounded(value: str, limit: int) -> str:
    """Same as litwatch.store.store.lookup_form, frozen here as this revision knows it."""
    return value if len(value) <= limit else "sha256:" + _sha(value)


def upgrade() -> None:
    conn = op.get_bind()
    # SQLite: batch mode copies `records` and drops the old table, which versions, hits
    # and events refer to; Store.migrate runs migrations with foreign keys off (and
    # checks them before committing), as SQLite's own procedure for such changes says.
    with op.batch_alter_table("records") as batch:
        batch.alter_column("key", type_=sa.Text(), existing_type=sa.String(1000), existing_nullable=False)
        batch.add_column(sa.Column("key_hash", sa.String(64), nullable=True))
    rows = conn.execute(sa.text("SELECT id, key, doi FROM records")).all()
    if rows:
        conn.execute(
            sa.text("UPDATE records SET key_hash = :h, doi = :d WHERE id = :id"),
            [{"id": r.id, "h": _sha(r.key), "d": _bounded(r.doi, 300) if r.doi else r.doi} for r in rows],
        )
    long_dedups = conn.execute(sa.text("SELECT id, dedup FROM events WHERE length(dedup) > 400")).all()
    if long_dedups:
        conn.execute(
            sa.text("UPDATE events SET dedup = :d WHERE id = :id"),
            [{"id": r.id, "d": _bounded(r.dedup, 400)} for r in long_dedups],
        )
    with op.batch_alter_table("records") as batch:
        batch.alter_column("key_hash", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint("uq_records_source_key", type_="unique")
        batch.create_unique_constraint("uq_records_source_key_hash", ["source", "key_hash"])
    with op.batch_alter_table("poll_state") as batch:
        batch.alter_column("watermark", type_=sa.Text(), existing_type=sa.String(40))
        batch.alter_column("etag", type_=sa.Text(), existing_type=sa.String(500))
        batch.alter_column("last_modified", type_=sa.Text(), existing_type=sa.String(100))
        batch.alter_column("url", type_=sa.Text(), existing_type=sa.String(2000))
    op.create_table(
        "feed_entries",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["records.id"]),
        sa.PrimaryKeyConstraint("record_id"),
    )
    with op.batch_alter_table("feed_entries") as batch:
        batch.create_index("ix_feed_entries_source", ["source"], unique=False)


def downgrade() -> None:
    # Long values do not fit the old columns: a downgrade keeps the shorter ones only
    # where PostgreSQL can; hashed DOIs and dedups stay hashed (they are lookup forms).
    op.drop_table("feed_entries")
    with op.batch_alter_table("poll_state") as batch:
        batch.alter_column("url", type_=sa.String(2000), existing_type=sa.Text())
        batch.alter_column("last_modified", type_=sa.String(100), existing_type=sa.Text())
        batch.alter_column("etag", type_=sa.String(500), existing_type=sa.Text())
        batch.alter_column("watermark", type_=sa.String(40), existing_type=sa.Text())
    with op.batch_alter_table("records") as batch:
        batch.drop_constraint("uq_records_source_key_hash", type_="unique")
        batch.create_unique_constraint("uq_records_source_key", ["source", "key"])
        batch.drop_column("key_hash")
        batch.alter_column("key", type_=sa.String(1000), existing_type=sa.Text(), existing_nullable=False)
