"""unsubscribes: recipients who stopped a digest's mail (one-click link or the CLI);
indexes for the web view's record page

Kept, not deleted from the config: `status` and the web view show them, `check` warns,
and `litwatch resubscribe` removes the row (issue 26). A record's page finds the record
by key hash whatever its source, and its events by record id: both indexed.

Revision ID: 0008_unsubscribes
Revises: 0007_notice_reports
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_unsubscribes"
down_revision = "0007_notice_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsubscribes",
        sa.Column("digest", sa.String(200), nullable=False),
        sa.Column("recipient", sa.String(500), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("digest", "recipient"),
    )
    op.create_index("ix_events_record_id", "events", ["record_id"])
    op.create_index("ix_records_key_hash", "records", ["key_hash"])


def downgrade() -> None:
    op.drop_index("ix_records_key_hash", table_name="records")
    op.drop_index("ix_events_record_id", table_name="events")
    op.drop_table("unsubscribes")
