"""Table definitions (SQLAlchemy Core). The Alembic migrations in `migrations/`
create exactly these; a change here needs a new migration (tests compare the two).

All timestamps are naive UTC. JSON columns hold `json.dumps(..., sort_keys=True)`."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False),  # "pubmed" | "feed:<name>"
    sa.Column("key", sa.String(1000), nullable=False),  # PMID or feed entry identity
    sa.Column("doi", sa.String(300), index=True),  # lower-cased; links PubMed and feed items
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("current_hash", sa.String(64), nullable=False),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("source", "key", name="uq_records_source_key"),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("fetched_at", sa.DateTime, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("changes", sa.Text, nullable=False),  # [[field, old, new], ...] vs version n-1
)

hits = sa.Table(
    "hits",
    metadata,
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
    sa.Column("query", sa.String(200), primary_key=True),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("terms", sa.Text, nullable=False, server_default="[]"),  # why it matched
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("version_n", sa.Integer, nullable=False),
    sa.Column("dedup", sa.String(400), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.UniqueConstraint("query", "dedup", name="uq_events_query_dedup"),
    sa.Index("ix_events_query_id", "query", "id"),
)

poll_state = sa.Table(
    "poll_state",
    metadata,
    sa.Column("query", sa.String(200), primary_key=True),  # query name, or "*" for shared sources
    sa.Column("source", sa.String(300), primary_key=True),  # "pubmed", "notices", "feed:<name>"
    sa.Column("watermark", sa.String(40)),  # ISO date the next window starts at
    sa.Column("last_ok", sa.DateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.DateTime),
    sa.Column("failing_since", sa.DateTime),
    sa.Column("etag", sa.String(500)),
    sa.Column("last_modified", sa.String(100)),
    sa.Column("url", sa.String(2000)),
    sa.Column("fresh_until", sa.DateTime),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("polls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("recipient", sa.String(500), nullable=False),
    sa.Column("message_id", sa.String(500), nullable=False, unique=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("mime", sa.LargeBinary, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # queued | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("sent_at", sa.DateTime),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Index("ix_outbox_state", "state", "id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("recipient", sa.String(500), primary_key=True),
    sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id"), nullable=False, index=True),
)

digest_state = sa.Table(
    "digest_state",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("last_run", sa.DateTime),  # last time the digest was built (scheduled or not)
    sa.Column("last_sent", sa.DateTime),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("task", sa.String(300), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("until", sa.DateTime, nullable=False),  # held while until > now; expired when its holder died
    sa.Column("last_run", sa.DateTime),  # when the task last started, by any instance: the schedule's anchor
    sa.Column("next_run", sa.DateTime),  # when the daemon plans to run it next (shown by `status`)
    # the fencing token: +1 whenever the task changes hands; a holder's commit checks it
    sa.Column("token", sa.Integer, nullable=False, server_default="0"),
)

request_budget = sa.Table(
    "request_budget",
    metadata,
    sa.Column("name", sa.String(300), primary_key=True),  # e.g. "eutils:eutils.ncbi.nlm.nih.gov"
    # JSON list of the last `rate` request starts reserved, seconds since the epoch on the
    # database's clock (coordination.RequestBudget)
    sa.Column("starts", sa.Text, nullable=False, server_default="[]"),
)
