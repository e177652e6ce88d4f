"""PubMed progress: a modification watermark apart from the new-record one, the PMIDs
efetch left out (retried by later polls), and the days whose modifications overflowed

Revision ID: 0004_pubmed_progress
Revises: 0003_unbounded_keys
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_pubmed_progress"
down_revision = "0003_unbounded_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("poll_state") as batch:
        batch.add_column(sa.Column("mdat_watermark", sa.Text(), nullable=True))
    op.create_table(
        "pubmed_missing",
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("pmid", sa.Text(), nullable=False),
        sa.Column("first_missing", sa.DateTime(), nullable=False),
        sa.Column("last_try", sa.DateTime(), nullable=False),
        sa.Column("tries", sa.Integer(), server_default="1", nullable=False),
        sa.Column("gave_up_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("query", "pmid"),
    )
    op.create_table(
        "pubmed_overflow",
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("noted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("query", "day"),
    )


def downgrade() -> None:
    op.drop_table("pubmed_overflow")
    op.drop_table("pubmed_missing")
    with op.batch_alter_table("poll_state") as batch:
        batch.drop_column("mdat_watermark")
