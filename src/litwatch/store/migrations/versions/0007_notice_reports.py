"""notice reports: which source reported which notice about a record, and when

The same erratum or retraction learnt from Crossref (the publisher, Retraction Watch)
and from PubMed is one event; each report of it is a row here, with the event's dedup
key it was attributed to, so `history` can say who told us and when (issue 16).
Unique on (record, source, kind, coalesce(notice DOI, notice PMID)), kept as the
column `notice_ident` so the constraint is a plain one on SQLite and PostgreSQL.

Revision ID: 0007_notice_reports
Revises: 0006_outbox_states
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_notice_reports"
down_revision = "0006_outbox_states"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("notice_doi", sa.Text(), nullable=True),
        sa.Column("notice_key", sa.Text(), nullable=True),
        sa.Column("notice_ident", sa.String(400), nullable=False),
        sa.Column("notice_date", sa.Text(), server_default="", nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.Column("dedup", sa.String(400), nullable=True),
        sa.ForeignKeyConstraint(["record_id"], ["records.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("record_id", "source", "kind", "notice_ident", name="uq_notice_reports_notice"),
    )


def downgrade() -> None:
    op.drop_table("notice_reports")
