"""scale: when each record was last fetched, and the indexes history-sized reads need

`records.checked_at`: when a poll last fetched the record, changed or not, so that a
quiet PubMed poll does not fetch again the known records its day of overlap brings
back (issue 28). NULL for rows stored before: `updated_at` stands in.

`ix_hits_query`: `status` counts each query's records; without it, every count read
the whole hits table.

Revision ID: 0013_scale_indexes
Revises: 0012_works
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_scale_indexes"
down_revision = "0012_works"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("checked_at", sa.DateTime(), nullable=True))
    op.create_index("ix_hits_query", "hits", ["query"])


def downgrade() -> None:
    op.drop_index("ix_hits_query", table_name="hits")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("checked_at")
