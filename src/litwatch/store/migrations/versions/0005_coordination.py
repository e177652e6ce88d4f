"""coordination: a fencing token on each lease, and the shared request budget

`leases.token` grows by one each time a task changes hands, so a holder that lost its
lease (a stalled heartbeat, a takeover) is refused in its committing transaction.
`request_budget` holds, per external service, the start times of its last requests
(on the database's clock): every process sharing the database reserves its slot there.

Revision ID: 0005_coordination
Revises: 0004_pubmed_progress
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_coordination"
# The brief names "0002_lease_schedule"; the revision id in the tree is "0002" (the
# lead re-chains the migrations when merging).
down_revision = "0004_pubmed_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("token", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "request_budget",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("starts", sa.Text(), nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_table("request_budget")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("token")
