"""outbox states: a sending claim, refusals kept, recipients' start

An outbox message moves `queued → sending (owner, until)` before the SMTP conversation
and only its owner marks it sent; a message a server refused for good (5xx) is kept as
`refused` with the server's reply (the state `failed` of 0001 becomes `refused`), until
`litwatch digest --retry-failed` queues it again. `digest_recipients` remembers from
when each recipient of a digest is sent events (a recipient added later starts then,
not with the digest's history).

Revision ID: 0006_outbox_states
Revises: 0005_coordination
Create Date: 2026-12-01
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0006_outbox_states"
down_revision = "0005_coordination"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("reply", sa.Text(), nullable=True))
        batch.add_column(sa.Column("refused_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE outbox SET state = 'refused', reply = last_error WHERE state = 'failed'")
    table = op.create_table(
        "digest_recipients",
        sa.Column("digest", sa.String(200), primary_key=True),
        sa.Column("recipient", sa.String(500), primary_key=True),
        sa.Column("since", sa.DateTime(), nullable=False),
    )
    # recipients that were sent mail before keep every event still waiting for them
    # (rows written through SQLAlchemy: SQLite stores DateTime as text in its own format)
    known = op.get_bind().execute(sa.text("SELECT DISTINCT digest, recipient FROM outbox")).all()
    if known:
        epoch = datetime(1970, 1, 1)
        op.bulk_insert(table, [{"digest": d, "recipient": r, "since": epoch} for d, r in known])


def downgrade() -> None:
    op.drop_table("digest_recipients")
    op.execute("UPDATE outbox SET state = 'failed' WHERE state = 'refused'")
    op.execute("UPDATE outbox SET state = 'queued' WHERE state = 'sending'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("refused_at")
        batch.drop_column("reply")
        batch.drop_column("until")
        batch.drop_column("owner")
