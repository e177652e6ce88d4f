"""Table definitions (SQLAlchemy Core). The Alembic migrations in `migrations/`
create exactly these; a change here needs a new migration (tests compare the two).

All timestamps are naive UTC. JSON columns hold `json.dumps(..., sort_keys=True)`.

Values that come from outside (feed entry ids, links, DOIs, ETags, URLs) have no length
limit: `Text`, or, where an index needs them, a bounded form (`store.lookup_form`:
the value itself up to a limit, its SHA-256 beyond) — PostgreSQL refuses a btree entry
over ~2,700 bytes, and a varchar longer than declared."""

from __future__ import annotations

import sqlalchemy as sa

# The revision of the newest migration: a database stamped with it needs no Alembic at
# all (Store.migrate's one-query check). tests/test_migrations.py keeps it in step.
SCHEMA_HEAD = "0013_scale_indexes"

metadata = sa.MetaData()

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False),  # "pubmed" | "feed:<name>"
    sa.Column("key", sa.Text, nullable=False),  # PMID or feed entry identity, whole
    sa.Column("key_hash", sa.String(64), nullable=False),  # sha256(key): what is unique and looked up
    sa.Column("doi", sa.String(300), index=True),  # lower-cased (lookup form); links PubMed and feed items
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("current_hash", sa.String(64), nullable=False),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # the work (paper or decision) the record is of (0012); NULL only for a moment
    sa.Column("work_id", sa.Integer, index=True),
    # when a poll last fetched the record, changed or not (0013): PubMed's dates are
    # whole days, so a known record is fetched again only when it was modified on or
    # after the day it was last fetched, and never twice the same day (polls/pubmed.py).
    # NULL: `updated_at` stands in (rows from before 0013, feed items)
    sa.Column("checked_at", sa.DateTime),
    sa.UniqueConstraint("source", "key_hash", name="uq_records_source_key_hash"),
    sa.Index("ix_records_key_hash", "key_hash"),  # a record by PMID or feed id, whatever its source (0008)
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
    sa.Index("ix_hits_query", "query"),  # a query's records, counted by `status` (0013)
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False),
    sa.Column("query", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("version_n", sa.Integer, nullable=False),
    sa.Column("dedup", sa.String(400), nullable=False),  # lookup form
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Column("work_id", sa.Integer, index=True),  # its record's work, moved with it when works merge (0012)
    sa.UniqueConstraint("query", "dedup", name="uq_events_query_dedup"),
    sa.Index("ix_events_query_id", "query", "id"),
    sa.Index("ix_events_record_id", "record_id"),  # a record's page: its events and mails (0008)
)

poll_state = sa.Table(
    "poll_state",
    metadata,
    sa.Column("query", sa.String(200), primary_key=True),  # query name, or "*" for shared sources
    sa.Column("source", sa.String(300), primary_key=True),  # "pubmed", "notices", "feed:<name>"
    sa.Column("watermark", sa.Text),  # ISO date the next window starts at; a feed's configured URL
    sa.Column("last_ok", sa.DateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", sa.DateTime),
    sa.Column("failing_since", sa.DateTime),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("fresh_until", sa.DateTime),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("polls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
    # PubMed: `watermark` is where the next new-record (EDAT) window starts, this one where
    # the next modification (MDAT) window starts; both US Eastern days, moved apart so
    # that neither search holds the other back (0004). NULL: the same as `watermark`.
    sa.Column("mdat_watermark", sa.Text),
)

# PMIDs a PubMed search found but efetch did not answer, retried by later polls of the
# query until they arrive or `gave_up_at` (PubMed does delete records) (0004).
pubmed_missing = sa.Table(
    "pubmed_missing",
    metadata,
    sa.Column("query", sa.Text, primary_key=True),
    sa.Column("pmid", sa.Text, primary_key=True),
    sa.Column("first_missing", sa.DateTime, nullable=False),
    sa.Column("last_try", sa.DateTime, nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, server_default="1"),
    sa.Column("gave_up_at", sa.DateTime),
)

# Days (US Eastern) whose modifications a query could not search: more than PubMed's
# 10,000-id cap in one day, which cannot be split further (0004).
pubmed_overflow = sa.Table(
    "pubmed_overflow",
    metadata,
    sa.Column("query", sa.Text, primary_key=True),
    sa.Column("day", sa.Text, primary_key=True),  # ISO date
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("noted_at", sa.DateTime, nullable=False),
)

feed_entries = sa.Table(
    "feed_entries",
    metadata,
    # the entries of each feed's last 200 answer, so a query that has not matched them
    # yet (it polled when the feed answered 304, or it is new) can, without a fetch
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
    sa.Column("source", sa.String(200), nullable=False, index=True),  # "feed:<name>"
    sa.Column("seen_at", sa.DateTime, nullable=False),  # when that answer came: the feed's generation
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
    sa.Column("state", sa.String(20), nullable=False),  # queued | sending | sent | refused | split
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("sent_at", sa.DateTime),
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("owner", sa.String(200)),  # while `sending`: the process talking to the server
    sa.Column("until", sa.DateTime),  # while `sending`: its claim holds until then (database clock)
    sa.Column("reply", sa.Text),  # `refused`: the server's reply ("550 5.1.1 unknown user")
    sa.Column("refused_at", sa.DateTime),
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

digest_recipients = sa.Table(
    "digest_recipients",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("recipient", sa.String(500), primary_key=True),
    sa.Column("since", sa.DateTime, nullable=False),  # events created before are not sent to them
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

# Each report of a notice about a stored record, by each source that made it (0007): the
# same retraction from Crossref and from PubMed is one event (`dedup`) and two rows
# here, which `history` shows. `notice_ident` is coalesce(notice_doi, notice_key) in its
# lookup form, kept as a column so the unique constraint is a plain one on both backends
# (an expression index is not compared by Alembic, and a DOI has no length limit).
notice_reports = sa.Table(
    "notice_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # erratum | retraction | concern | update | other
    sa.Column("type", sa.Text, nullable=False),  # the source's name: corrigendum, ErratumIn, ...
    sa.Column("source", sa.String(200), nullable=False),  # pubmed | publisher | retraction-watch | ...
    sa.Column("notice_doi", sa.Text),  # lower case, whole
    sa.Column("notice_key", sa.Text),  # the notice's PMID
    sa.Column("notice_ident", sa.String(400), nullable=False),  # lookup form of coalesce(notice_doi, notice_key)
    sa.Column("notice_date", sa.Text, nullable=False, server_default=""),
    sa.Column("reported_at", sa.DateTime, nullable=False),
    sa.Column("dedup", sa.String(400)),  # lookup form of the event's dedup; NULL: not an event ("other")
    sa.UniqueConstraint("record_id", "source", "kind", "notice_ident", name="uq_notice_reports_notice"),
)

# Works (0012, issue 25): what a reader is told about — one paper, or one regulatory
# decision — joining the records of every source that carries it. `work_keys` holds
# each identifier a work is known by (records.work_idents: "doi:…", "pmid:…",
# "pmcid:…", "reg:FDA:…"), in its lookup form; a record joins the work of any identifier
# it shares, and a record naming two works merges them (the older id stays). A work is
# numbered by the id of its first record (so ingest sets a new record's work in one
# statement); a record makes at most one work, so the id is free.
works = sa.Table(
    "works",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

work_keys = sa.Table(
    "work_keys",
    metadata,
    sa.Column("ident", sa.String(400), primary_key=True),
    sa.Column("work_id", sa.Integer, nullable=False, index=True),
)

# A record not joined to the work its DOI names because the titles clearly differ (a
# publisher's DOI error): kept so `status` and `history` show it, never merged silently.
work_doubts = sa.Table(
    "work_doubts",
    metadata,
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
    sa.Column("other_id", sa.Integer, sa.ForeignKey("records.id"), primary_key=True),
    sa.Column("ident", sa.String(400), nullable=False),
    sa.Column("noted_at", sa.DateTime, nullable=False),
)

# Recipients who stopped a digest's mail: by its one-click List-Unsubscribe link or
# `litwatch unsubscribe` (0008). `litwatch resubscribe` deletes the row.
unsubscribes = sa.Table(
    "unsubscribes",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("recipient", sa.String(500), primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("via", sa.String(20), nullable=False),  # link | cli
)
