"""leases remember when a task last ran and when it runs next

Several `litwatch run` instances share one schedule: the instance that claims a task
records the start in `last_run`, so the others' timers see it is not due again yet.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("last_run", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("next_run", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("next_run")
        batch.drop_column("last_run")
