"""`Store`: intention-revealing methods over SQLAlchemy Core. Callers (service) own
the transaction: every method taking `tx` runs inside the caller's `transaction()`,
so a poll's records, versions, events and watermark commit together or not at all."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreError
from ..records import Record
from .schema import (
    SCHEMA_HEAD,
    deliveries,
    digest_recipients,
    digest_state,
    events,
    feed_entries,
    hits,
    leases,
    outbox,
    poll_state,
    pubmed_missing,
    pubmed_overflow,
    records,
    request_budget,
    versions,
)

log = logging.getLogger(__name__)
_CHUNK = 500  # ids per IN (...) clause
_WRITE_ATTEMPTS = 4
T = TypeVar("T")


DOI_LIMIT = 300  # records.doi
DEDUP_LIMIT = 400  # events.dedup


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def key_hash(key: str) -> str:
    """What identifies a record's key in the database (records.key_hash): keys have no
    length limit, and PostgreSQL indexes refuse long values."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def lookup_form(value: str, limit: int) -> str:
    """`value` itself up to `limit` characters, else "sha256:" and its hash: the form
    kept in an indexed column that is only ever compared (events.dedup, records.doi).
    Deterministic, so the same value finds its row again; migration 0003 rewrote
    longer values SQLite had kept."""
    return value if len(value) <= limit else "sha256:" + key_hash(value)


@dataclass(frozen=True)
class Current:
    record_id: int
    n: int
    hash: str
    record: Record


class _StoredCurrent(Current):
    """A `Current` read from the database whose `record` is decoded from its JSON on
    first use: most callers only need the keys or compare hashes (an unchanged re-fetch
    never looks at the old record), and decoding was a third of a re-fetch's time
    (bench/RESULTS.md, store benchmark)."""

    def __init__(self, record_id: int, n: int, hash: str, source: str, key: str, fields: str) -> None:
        object.__setattr__(self, "record_id", record_id)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "hash", hash)
        object.__setattr__(self, "_stored", (source, key, fields))

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet: `record`
        if name != "record":
            raise AttributeError(name)
        source, key, fields = self.__dict__["_stored"]
        rec = Record.from_fields(source, key, json.loads(fields))
        object.__setattr__(self, "record", rec)
        return rec


@dataclass(frozen=True)
class PendingEvent:
    id: int
    record_id: int
    query: str
    kind: str
    version_n: int
    detail: dict[str, Any]
    created_at: datetime
    record: Record
    terms: tuple[str, ...]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


class Store:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        # Checks run before each commit of this store in this thread: set by
        # coordination.Coordinator.hold while a job holds a claim; each raises to roll back.
        self.fences: ContextVar[tuple[Callable[[Connection], None], ...]] = ContextVar(
            f"litwatch_fences_{id(self)}", default=()
        )
        if migrate:
            self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema

    def migrate(self) -> None:
        """Create or upgrade the schema to this litwatch's head; refuse a newer one."""
        if self._at_head():
            return
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
        script = ScriptDirectory.from_config(cfg)
        heads = set(script.get_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        for attempt in range(1, 6):
            try:
                self._migrate_once(cfg, heads, known)
                return
            except sa.exc.OperationalError as e:
                # SQLite has no advisory lock: two processes starting on a new file both
                # create tables, and the later one finds them there. Its rerun sees the
                # schema at head and has nothing to do.
                racing = "already exists" in str(e.orig) or "database is locked" in str(e.orig)
                if not racing or attempt == 5:
                    raise StoreError(f"cannot open the database {self.safe_url}: {_first_line(e)}") from None
                time.sleep(0.2 * attempt)

    def _at_head(self) -> bool:
        """One query, no Alembic import and no lock, when the schema is already current
        (every command checks; almost always it is)."""
        try:
            with self.engine.connect() as conn:
                versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        except sa.exc.DBAPIError:
            return False  # no table yet, or no server: the full path says which
        return versions == [SCHEMA_HEAD]

    def _migrate_once(self, cfg: Any, heads: set[str], known: set[str]) -> None:
        sqlite = self.dialect == "sqlite"
        with self.engine.connect() as conn:
            try:
                with conn.begin():
                    if sqlite:
                        # A migration in batch mode copies a table and drops the old one;
                        # with foreign keys on, dropping a table others refer to fails.
                        # SQLite's recipe (https://www.sqlite.org/lang_altertable.html,
                        # "other kinds of table schema changes"): keys off, change, check.
                        # The pragma is the transaction's first statement, so it applies.
                        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                    if self.dialect == "postgresql":
                        # several instances may start at once: one migrates, the others wait
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(74207101)"))
                    self._upgrade(conn, cfg, heads, known)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise StoreError(f"cannot upgrade the database {self.safe_url}: it breaks a foreign key")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()

    def _upgrade(self, conn: Connection, cfg: Any, heads: set[str], known: set[str]) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        current = set(MigrationContext.configure(conn).get_current_heads())
        unknown = current - known
        if unknown:
            raise StoreError(
                f"the database schema ({', '.join(sorted(unknown))}) is newer than this "
                f"litwatch knows (up to {', '.join(sorted(heads))}); upgrade litwatch"
            )
        if current != heads:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self, *, immediate: bool = False, fenced: bool = True) -> Iterator[Connection]:
        """One transaction. `immediate`: on SQLite take the write lock at the start
        (`BEGIN IMMEDIATE`), for a short read-then-write that must not interleave.
        `fenced`: before commit, run the fences this thread holds (`fences`): a job that
        lost its claim is stopped here, and what it wrote is rolled back."""
        with self.engine.connect() as conn, conn.begin():
            if immediate and self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
            if fenced:
                for fence in self.fences.get():
                    fence(conn)

    def write(
        self, fn: Callable[[Connection], T], *, what: str, attempts: int = _WRITE_ATTEMPTS, pause: float = 0.0
    ) -> T:
        """Run `fn` in one transaction. When a concurrent writer (a second `litwatch poll`
        at the same moment) stored the same record first, the unique constraint stops this
        one: roll back and run `fn` again, which now reads what the other committed. `fn`
        must derive everything from `tx`, so a rerun starts from scratch."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as tx:
                    return fn(tx)
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as e:
                if not _is_conflict(e):
                    raise
                if attempt == attempts:
                    raise StoreError(
                        f"{what}: gave up after {attempt} attempts: another process keeps writing the same "
                        f"records ({_first_line(e)})"
                    ) from None
                log.info("%s: concurrent write (%s); retrying", what, _first_line(e))
                if pause:  # `pause`: a few writers at once step apart (jitter) instead of colliding again
                    time.sleep(pause * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ records and versions

    def current(self, tx: Connection, source: str, keys: Iterable[str]) -> dict[str, Current]:
        out: dict[str, Current] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), _CHUNK):
            q = (
                sa.select(
                    records.c.id, records.c.key, records.c.current_version, records.c.current_hash, versions.c.fields
                )
                .join(
                    versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version)
                )
                .where(records.c.source == source, records.c.key_hash.in_([key_hash(k) for k in keys[i : i + _CHUNK]]))
            )
            for row in tx.execute(q):
                out[row.key] = _StoredCurrent(
                    row.id, row.current_version, row.current_hash, source, row.key, row.fields
                )
        return out

    def current_by_id(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Current]:
        out: dict[int, Current] = {}
        ids = list(set(record_ids))
        for i in range(0, len(ids), _CHUNK):
            q = (
                sa.select(records, versions.c.fields)
                .join(
                    versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version)
                )
                .where(records.c.id.in_(ids[i : i + _CHUNK]))
            )
            for row in tx.execute(q):
                out[row.id] = _StoredCurrent(
                    row.id, row.current_version, row.current_hash, row.source, row.key, row.fields
                )
        return out

    def first_versions(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Record]:
        """Each record as it was first stored."""
        out: dict[int, Record] = {}
        ids = list(set(record_ids))
        for i in range(0, len(ids), _CHUNK):
            q = (
                sa.select(records.c.id, records.c.source, records.c.key, versions.c.fields)
                .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == 1))
                .where(records.c.id.in_(ids[i : i + _CHUNK]))
            )
            for row in tx.execute(q):
                out[row.id] = Record.from_fields(row.source, row.key, json.loads(row.fields))
        return out

    def insert_records(self, tx: Connection, new: Sequence[tuple[Record, str]], now: datetime) -> dict[str, int]:
        """Insert first versions; returns key → record id."""
        if not new:
            return {}
        rows = [
            {
                "source": r.source,
                "key": r.key,
                "key_hash": key_hash(r.key),
                "doi": lookup_form(r.doi.lower(), DOI_LIMIT) or None,
                "current_version": 1,
                "current_hash": h,
                "first_seen": now,
                "updated_at": now,
            }
            for r, h in new
        ]
        result = tx.execute(
            sa.insert(records).returning(records.c.id, records.c.key, sort_by_parameter_order=True), rows
        )
        ids = {row.key: row.id for row in result}
        tx.execute(
            sa.insert(versions),
            [
                {
                    "record_id": ids[r.key],
                    "n": 1,
                    "fetched_at": now,
                    "hash": h,
                    "fields": dumps(r.fields()),
                    "changes": "[]",
                }
                for r, h in new
            ],
        )
        return ids

    def add_versions(
        self, tx: Connection, changed: Sequence[tuple[Current, Record, str, list[list[Any]]]], now: datetime
    ) -> None:
        """Store a new version per (current, new record, new hash, changes)."""
        if not changed:
            return
        tx.execute(
            sa.insert(versions),
            [
                {
                    "record_id": cur.record_id,
                    "n": cur.n + 1,
                    "fetched_at": now,
                    "hash": h,
                    "fields": dumps(rec.fields()),
                    "changes": dumps(changes),
                }
                for cur, rec, h, changes in changed
            ],
        )
        tx.execute(
            records.update()
            .where(records.c.id == sa.bindparam("rid"), records.c.current_version == sa.bindparam("old_n"))
            .values(
                current_version=sa.bindparam("new_n"),
                current_hash=sa.bindparam("h"),
                doi=sa.bindparam("d"),
                updated_at=now,
            ),
            [
                {
                    "rid": cur.record_id,
                    "old_n": cur.n,
                    "new_n": cur.n + 1,
                    "h": h,
                    "d": lookup_form(rec.doi.lower(), DOI_LIMIT) or None,
                }
                for cur, rec, h, _ in changed
            ],
        )

    def records_by_pmid(self, tx: Connection, pmids: Iterable[str]) -> dict[str, int]:
        pmids = list(set(pmids))
        out: dict[str, int] = {}
        for i in range(0, len(pmids), _CHUNK):
            q = sa.select(records.c.id, records.c.key).where(
                records.c.source == "pubmed", records.c.key_hash.in_([key_hash(p) for p in pmids[i : i + _CHUNK]])
            )
            out.update({row.key: row.id for row in tx.execute(q)})
        return out

    def find_records(self, tx: Connection, ident: str) -> list[tuple[int, str, str]]:
        """Records whose PMID, DOI or feed key is `ident`: [(id, source, key)]."""
        ident = ident.strip()
        doi = ident.lower().removeprefix("https://doi.org/").removeprefix("doi:")
        cond = sa.or_(records.c.key_hash == key_hash(ident), records.c.doi == lookup_form(doi, DOI_LIMIT))
        q = sa.select(records.c.id, records.c.source, records.c.key).where(cond).order_by(records.c.id)
        return [(r.id, r.source, r.key) for r in tx.execute(q)]

    def versions_of(self, tx: Connection, record_id: int) -> list[tuple[int, datetime, dict[str, Any], list[Any]]]:
        q = sa.select(versions).where(versions.c.record_id == record_id).order_by(versions.c.n)
        return [(r.n, r.fetched_at, json.loads(r.fields), json.loads(r.changes)) for r in tx.execute(q)]

    # ------------------------------------------------------------------ feed entries

    def set_feed_entries(self, tx: Connection, source: str, record_ids: Iterable[int], seen_at: datetime) -> None:
        """The entries of `source`'s latest 200 answer, received at `seen_at`."""
        tx.execute(feed_entries.delete().where(feed_entries.c.source == source))
        rows = [{"record_id": rid, "source": source, "seen_at": seen_at} for rid in dict.fromkeys(record_ids)]
        if rows:
            tx.execute(sa.insert(feed_entries), rows)

    def feed_entries(self, tx: Connection, source: str) -> tuple[datetime | None, list[int]]:
        """When `source`'s latest 200 answer came (None: never, or it was empty) and the
        ids of the records it held."""
        rows = tx.execute(
            sa.select(feed_entries.c.record_id, feed_entries.c.seen_at).where(feed_entries.c.source == source)
        ).all()
        return (rows[0].seen_at if rows else None), [r.record_id for r in rows]

    # ------------------------------------------------------------------ hits and events

    def hits_for(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, set[str]]:
        ids = list(set(record_ids))
        out: dict[int, set[str]] = {}
        for i in range(0, len(ids), _CHUNK):
            q = sa.select(hits.c.record_id, hits.c.query).where(hits.c.record_id.in_(ids[i : i + _CHUNK]))
            for row in tx.execute(q):
                out.setdefault(row.record_id, set()).add(row.query)
        return out

    def add_hits(self, tx: Connection, rows: Sequence[tuple[int, str, tuple[str, ...]]], now: datetime) -> None:
        if rows:
            tx.execute(
                self._insert_ignore(hits, ["record_id", "query"]),
                [{"record_id": rid, "query": q, "first_seen": now, "terms": dumps(list(t))} for rid, q, t in rows],
            )

    def add_events(self, tx: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> int:
        """Insert events (record_id, query, kind, version_n, dedup, detail); an event
        whose (query, dedup) exists already is skipped. Returns how many are new."""
        if not rows:
            return 0
        # RETURNING names only the rows inserted (a conflict returns nothing), so the
        # count costs no scan of the events table (SQLAlchemy's insertmanyvalues batches it).
        inserted = tx.execute(
            self._insert_ignore(events, ["query", "dedup"]).returning(events.c.id),
            [
                {
                    **r,
                    "dedup": lookup_form(r["dedup"], DEDUP_LIMIT),
                    "detail": dumps(r.get("detail", {})),
                    "created_at": now,
                }
                for r in rows
            ],
        )
        return len(inserted.all())

    def _insert_ignore(self, table: sa.Table, conflict: list[str]) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=conflict)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict)

    def _pending_where(self, *, queries: Sequence[str], kinds: Sequence[str], digest: str, recipient: str) -> list[Any]:
        delivered = sa.exists().where(
            deliveries.c.event_id == events.c.id, deliveries.c.digest == digest, deliveries.c.recipient == recipient
        )
        return [events.c.query.in_(list(queries)), events.c.kind.in_(list(kinds)), ~delivered]

    def pending_events(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
    ) -> list[PendingEvent]:
        """Events of `queries` and `kinds` not yet bound to a message for (digest,
        recipient), created at `since` or later (the recipient's start)."""
        where = self._pending_where(queries=queries, kinds=kinds, digest=digest, recipient=recipient)
        if since is not None:
            where.append(events.c.created_at >= since)
        return self._pending(tx, where)

    def message_events(self, tx: Connection, outbox_id: int) -> list[PendingEvent]:
        """The events bound to one outbox message (to render it again in parts)."""
        bound = sa.exists().where(deliveries.c.event_id == events.c.id, deliveries.c.outbox_id == outbox_id)
        return self._pending(tx, [bound])

    def _pending(self, tx: Connection, where: list[Any]) -> list[PendingEvent]:
        q = (
            sa.select(events, records.c.source, records.c.key, versions.c.fields, hits.c.terms)
            .join(records, records.c.id == events.c.record_id)
            .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version))
            .outerjoin(hits, sa.and_(hits.c.record_id == events.c.record_id, hits.c.query == events.c.query))
            .where(*where)
            .order_by(events.c.id)
        )
        return [
            PendingEvent(
                id=row.id,
                record_id=row.record_id,
                query=row.query,
                kind=row.kind,
                version_n=row.version_n,
                detail=json.loads(row.detail),
                created_at=row.created_at,
                record=Record.from_fields(row.source, row.key, json.loads(row.fields)),
                terms=tuple(json.loads(row.terms or "[]")),
            )
            for row in tx.execute(q)
        ]

    def count_pending(
        self,
        tx: Connection,
        *,
        queries: Sequence[str],
        kinds: Sequence[str],
        digest: str,
        recipient: str,
        since: datetime | None = None,
        before: bool = False,
    ) -> int:
        """How many events `pending_events` gives; with `before`, how many undelivered
        ones it leaves out because they were created before `since` (skipped)."""
        where = self._pending_where(queries=queries, kinds=kinds, digest=digest, recipient=recipient)
        if since is not None:
            where.append(events.c.created_at < since if before else events.c.created_at >= since)
        elif before:
            return 0
        q = sa.select(sa.func.count()).select_from(events).where(*where)
        return int(tx.execute(q).scalar_one())

    # ------------------------------------------------------------------ recipients

    def recipient_since(self, tx: Connection, digest: str, recipient: str) -> datetime | None:
        q = sa.select(digest_recipients.c.since).where(
            digest_recipients.c.digest == digest, digest_recipients.c.recipient == recipient
        )
        found: datetime | None = tx.execute(q).scalar_one_or_none()
        return found

    def start_recipient(self, tx: Connection, digest: str, recipient: str, since: datetime) -> datetime:
        """Record that `recipient` gets the digest's events from `since` on, unless a
        start is recorded already (by a concurrent run): returns the one that holds."""
        tx.execute(
            self._insert_ignore(digest_recipients, ["digest", "recipient"]).values(
                digest=digest, recipient=recipient, since=since
            )
        )
        found = self.recipient_since(tx, digest, recipient)
        assert found is not None
        return found

    # ------------------------------------------------------------------ outbox

    def queue_message(
        self,
        tx: Connection,
        *,
        digest: str,
        recipient: str,
        message_id: str,
        subject: str,
        mime: bytes,
        items: int,
        event_ids: Sequence[int],
        now: datetime,
    ) -> int:
        """The outbox row and the deliveries binding its events, in the caller's transaction."""
        oid = tx.execute(
            sa.insert(outbox).returning(outbox.c.id),
            {
                "digest": digest,
                "recipient": recipient,
                "message_id": message_id,
                "subject": subject,
                "mime": mime,
                "items": items,
                "state": "queued",
                "attempts": 0,
                "created_at": now,
            },
        ).scalar_one()
        if event_ids:
            tx.execute(
                sa.insert(deliveries),
                [{"event_id": e, "digest": digest, "recipient": recipient, "outbox_id": oid} for e in event_ids],
            )
        return int(oid)

    def queued_messages(self, tx: Connection, *, digests: Sequence[str] | None, now: datetime | None) -> list[Any]:
        q = sa.select(outbox).where(outbox.c.state == "queued").order_by(outbox.c.id)
        if digests is not None:
            q = q.where(outbox.c.digest.in_(list(digests)))
        if now is not None:
            q = q.where(sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now))
        return list(tx.execute(q))

    def sending(self, tx: Connection, *, digests: Sequence[str] | None) -> list[Any]:
        """Messages claimed for sending, with `stale`: the claim ran out (database clock)."""
        now = self.db_now(tx)
        q = sa.select(
            outbox.c.id,
            outbox.c.digest,
            outbox.c.recipient,
            outbox.c.subject,
            outbox.c.message_id,
            outbox.c.owner,
            outbox.c.until,
            (outbox.c.until < now).label("stale"),
        ).where(outbox.c.state == "sending")
        if digests is not None:
            q = q.where(outbox.c.digest.in_(list(digests)))
        return list(tx.execute(q.order_by(outbox.c.id)))

    def release_claim(self, tx: Connection, outbox_id: int, owner: str) -> bool:
        """A dead process's claim goes back to `queued` (checked: still that owner's)."""
        result = tx.execute(
            outbox.update().where(self._mine(outbox_id, owner)).values(state="queued", owner=None, until=None)
        )
        return bool(result.rowcount == 1)

    def claim_message(self, tx: Connection, outbox_id: int, owner: str, ttl: timedelta) -> bool:
        """`queued → sending (owner, until)` in one checked update; False when another
        process claimed or sent it first. A stale claim (its holder died) is taken over."""
        now = self.db_now(tx)
        claimable = sa.or_(outbox.c.state == "queued", sa.and_(outbox.c.state == "sending", outbox.c.until < now))
        result = tx.execute(
            outbox.update()
            .where(outbox.c.id == outbox_id, claimable)
            .values(state="sending", owner=owner, until=now + ttl)
        )
        return bool(result.rowcount == 1)

    def _mine(self, outbox_id: int, owner: str) -> Any:
        return sa.and_(outbox.c.id == outbox_id, outbox.c.state == "sending", outbox.c.owner == owner)

    def mark_sent(self, tx: Connection, outbox_id: int, owner: str, now: datetime) -> bool:
        """Sent, if `owner` still holds the message's claim; False otherwise (its claim ran
        out and another process took the message over: not counted as sent by us)."""
        result = tx.execute(
            outbox.update()
            .where(self._mine(outbox_id, owner))
            .values(state="sent", sent_at=now, attempts=outbox.c.attempts + 1, last_error=None, owner=None, until=None)
        )
        return bool(result.rowcount == 1)

    def mark_failed(self, tx: Connection, outbox_id: int, owner: str, error: str, *, retry_at: datetime) -> bool:
        """A temporary failure: back to `queued`, tried again at `retry_at`."""
        result = tx.execute(
            outbox.update()
            .where(self._mine(outbox_id, owner))
            .values(
                state="queued",
                attempts=outbox.c.attempts + 1,
                last_error=error,
                next_attempt_at=retry_at,
                owner=None,
                until=None,
            )
        )
        return bool(result.rowcount == 1)

    def mark_refused(self, tx: Connection, outbox_id: int, owner: str, error: str, reply: str, now: datetime) -> bool:
        """Refused for good (5xx): kept, with its events bound to it, until `requeue_refused`."""
        result = tx.execute(
            outbox.update()
            .where(self._mine(outbox_id, owner))
            .values(
                state="refused",
                attempts=outbox.c.attempts + 1,
                last_error=error,
                reply=reply,
                refused_at=now,
                next_attempt_at=None,
                owner=None,
                until=None,
            )
        )
        return bool(result.rowcount == 1)

    def split_message(
        self, tx: Connection, outbox_id: int, owner: str, parts: Sequence[dict[str, Any]], now: datetime
    ) -> list[int]:
        """Replace a message the server found too large by `parts` (each: message_id,
        subject, mime, items, event_ids), queued, its events bound to them; the message
        itself stays as `split`. [] when `owner` no longer holds it."""
        row = tx.execute(sa.select(outbox.c.digest, outbox.c.recipient).where(self._mine(outbox_id, owner))).first()
        if row is None:
            return []
        tx.execute(
            outbox.update().where(outbox.c.id == outbox_id).values(state="split", owner=None, until=None, sent_at=None)
        )
        ids = []
        for part in parts:
            pid = tx.execute(
                sa.insert(outbox).returning(outbox.c.id),
                {
                    "digest": row.digest,
                    "recipient": row.recipient,
                    "message_id": part["message_id"],
                    "subject": part["subject"],
                    "mime": part["mime"],
                    "items": part["items"],
                    "state": "queued",
                    "attempts": 0,
                    "created_at": now,
                },
            ).scalar_one()
            tx.execute(
                deliveries.update()
                .where(deliveries.c.outbox_id == outbox_id, deliveries.c.event_id.in_(list(part["event_ids"])))
                .values(outbox_id=pid)
            )
            ids.append(int(pid))
        return ids

    def requeue_refused(self, tx: Connection, digests: Sequence[str] | None) -> list[Any]:
        """`--retry-failed`: refused messages go back to `queued`, as they were (same
        Message-ID), to be sent before anything newer. Returns them."""
        q = sa.select(outbox.c.id, outbox.c.digest, outbox.c.recipient, outbox.c.message_id).where(
            outbox.c.state == "refused"
        )
        if digests is not None:
            q = q.where(outbox.c.digest.in_(list(digests)))
        rows = list(tx.execute(q.order_by(outbox.c.id)))
        if rows:
            tx.execute(
                outbox.update()
                .where(outbox.c.id.in_([r.id for r in rows]), outbox.c.state == "refused")
                .values(state="queued", next_attempt_at=None)
            )
        return rows

    def outbox_summary(self, tx: Connection) -> dict[str, Any]:
        waiting = outbox.c.state.in_(["queued", "sending"])
        q = sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(waiting)
        count, oldest = tx.execute(q).one()
        sending = tx.execute(sa.select(sa.func.count()).where(outbox.c.state == "sending")).scalar_one()
        refused = tx.execute(sa.select(sa.func.count()).where(outbox.c.state == "refused")).scalar_one()
        return {"queued": int(count), "oldest_queued": oldest, "sending": int(sending), "failed": int(refused)}

    def messages(self, tx: Connection, ids: Sequence[int]) -> list[Any]:
        return list(tx.execute(sa.select(outbox).where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)))

    def refused_messages(self, tx: Connection, digest: str | None = None) -> list[Any]:
        q = (
            sa.select(
                outbox.c.digest,
                outbox.c.recipient,
                outbox.c.message_id,
                outbox.c.subject,
                outbox.c["items"],
                outbox.c.reply,
                outbox.c.last_error,
                outbox.c.refused_at,
                outbox.c.created_at,
            )
            .where(outbox.c.state == "refused")
            .order_by(outbox.c.id)
        )
        if digest is not None:
            q = q.where(outbox.c.digest == digest)
        return list(tx.execute(q))

    # ------------------------------------------------------------------ digest state

    def digest_state(self, tx: Connection, digest: str) -> Any:
        return tx.execute(sa.select(digest_state).where(digest_state.c.digest == digest)).first()

    def set_digest_state(self, tx: Connection, digest: str, **values: Any) -> None:
        # insert-if-missing first: two runs of one digest at once must not both insert
        tx.execute(self._insert_ignore(digest_state, ["digest"]).values(digest=digest))
        tx.execute(digest_state.update().where(digest_state.c.digest == digest).values(**values))

    # ------------------------------------------------------------------ poll state

    def poll_state(self, tx: Connection, query: str, source: str) -> Any:
        q = sa.select(poll_state).where(poll_state.c.query == query, poll_state.c.source == source)
        return tx.execute(q).first()

    def all_poll_states(self, tx: Connection) -> list[Any]:
        return list(tx.execute(sa.select(poll_state).order_by(poll_state.c.query, poll_state.c.source)))

    def poll_ok(self, tx: Connection, query: str, source: str, now: datetime, **values: Any) -> None:
        values = {"last_ok": now, "failing_since": None, "polls": poll_state.c.polls + 1, **values}
        self._upsert(tx, poll_state, {"query": query, "source": source}, values)

    def poll_failed(self, tx: Connection, query: str, source: str, error: str, now: datetime, **values: Any) -> None:
        row = self.poll_state(tx, query, source)
        since = row.failing_since if row is not None and row.failing_since is not None else now
        values = {
            "last_error": error,
            "last_error_at": now,
            "failing_since": since,
            "errors": poll_state.c.errors + 1,
            **values,
        }
        self._upsert(tx, poll_state, {"query": query, "source": source}, values)

    def note_matched(self, tx: Connection, query: str, source: str, marker: str) -> None:
        """`query` has matched the answer of the shared `source` that `marker` names
        (feedpoll): kept in the query's own row, which records no success or failure."""
        self._upsert(tx, poll_state, {"query": query, "source": source}, {"watermark": marker})

    def _upsert(self, tx: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
        cond = sa.and_(*(table.c[k] == v for k, v in key.items()))
        if tx.execute(table.update().where(cond).values(**values)).rowcount:
            return
        plain = {k: (1 if k in ("polls", "errors") else v) for k, v in values.items()}
        tx.execute(sa.insert(table).values(**key, **plain))

    # ------------------------------------------------------------------ PubMed gaps

    def missing_pmids(self, tx: Connection, query: str, *, given_up: bool = False) -> dict[str, datetime]:
        """PMIDs of `query` still to fetch again (with `given_up`, also those given up):
        {pmid: first missing}."""
        q = sa.select(pubmed_missing.c.pmid, pubmed_missing.c.first_missing).where(pubmed_missing.c.query == query)
        if not given_up:
            q = q.where(pubmed_missing.c.gave_up_at.is_(None))
        return {row.pmid: row.first_missing for row in tx.execute(q)}

    def note_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None:
        """PMIDs efetch left out this time: added, or one more try counted."""
        pmids = sorted(set(pmids))
        if not pmids:
            return
        known = {
            row.pmid
            for i in range(0, len(pmids), _CHUNK)
            for row in tx.execute(
                sa.select(pubmed_missing.c.pmid).where(
                    pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(pmids[i : i + _CHUNK])
                )
            )
        }
        for i in range(0, len(pmids), _CHUNK):
            chunk = [p for p in pmids[i : i + _CHUNK] if p in known]
            if chunk:
                tx.execute(
                    pubmed_missing.update()
                    .where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(chunk))
                    .values(last_try=now, tries=pubmed_missing.c.tries + 1)
                )
        new = [{"query": query, "pmid": p, "first_missing": now, "last_try": now} for p in pmids if p not in known]
        if new:
            tx.execute(sa.insert(pubmed_missing), new)

    def give_up_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None:
        pmids = sorted(set(pmids))
        for i in range(0, len(pmids), _CHUNK):
            tx.execute(
                pubmed_missing.update()
                .where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(pmids[i : i + _CHUNK]))
                .values(gave_up_at=now)
            )

    def found_missing(self, tx: Connection, query: str, pmids: Iterable[str]) -> None:
        """PMIDs that arrived (or that a later answer gave after all): off the list."""
        pmids = sorted(set(pmids))
        for i in range(0, len(pmids), _CHUNK):
            tx.execute(
                pubmed_missing.delete().where(
                    pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(pmids[i : i + _CHUNK])
                )
            )

    def missing_report(self, tx: Connection, query: str) -> list[Any]:
        """Every row of `query`'s list, waiting ones first, then those given up, by PMID."""
        q = (
            sa.select(pubmed_missing)
            .where(pubmed_missing.c.query == query)
            .order_by(pubmed_missing.c.gave_up_at.is_not(None), pubmed_missing.c.pmid)
        )
        return list(tx.execute(q))

    def note_overflow(self, tx: Connection, query: str, day: str, count: int, now: datetime) -> bool:
        """A day whose modifications went over the cap; False if it was noted already."""
        q = sa.select(pubmed_overflow.c.day).where(pubmed_overflow.c.query == query, pubmed_overflow.c.day == day)
        if tx.execute(q).first() is not None:
            tx.execute(
                pubmed_overflow.update()
                .where(pubmed_overflow.c.query == query, pubmed_overflow.c.day == day)
                .values(count=count)
            )
            return False
        tx.execute(sa.insert(pubmed_overflow).values(query=query, day=day, count=count, noted_at=now))
        return True

    def overflows(self, tx: Connection, queries: Iterable[str], *, since: datetime | None = None) -> list[Any]:
        """Overflowed days of `queries` noted after `since`, oldest first."""
        q = sa.select(pubmed_overflow).where(pubmed_overflow.c.query.in_(list(queries)))
        if since is not None:
            q = q.where(pubmed_overflow.c.noted_at > since)
        return list(tx.execute(q.order_by(pubmed_overflow.c.day, pubmed_overflow.c.query)))

    def count_records(self, tx: Connection, query: str) -> int:
        return int(tx.execute(sa.select(sa.func.count()).select_from(hits).where(hits.c.query == query)).scalar_one())

    # ------------------------------------------------------------------ leases (coordination.py decides)

    def db_now(self, tx: Connection) -> datetime:
        """Naive UTC by the database's clock, so that instances on hosts whose clocks
        differ agree on lease expiry and on when a task last ran. SQLite lives on one
        host: its clock is that host's (never a clock a test shifted)."""
        if self.dialect == "postgresql":
            value = tx.execute(sa.text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
            return value.replace(tzinfo=None)  # type: ignore[no-any-return]
        return datetime.now(UTC).replace(tzinfo=None)

    def lock_lease(self, tx: Connection, task: str) -> Any:
        """The task's lease row, created free if missing and locked for this transaction;
        None when another instance holds the row lock right now (`SKIP LOCKED`)."""
        tx.execute(self._insert_ignore(leases, ["task"]).values(task=task, owner="", until=_EPOCH))
        q = sa.select(leases).where(leases.c.task == task)
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return tx.execute(q).first()

    def take_lease(self, tx: Connection, task: str, **values: Any) -> None:
        tx.execute(leases.update().where(leases.c.task == task).values(**values))

    def renew_leases(self, tx: Connection, owner: str, held: dict[str, int], until: datetime) -> set[str]:
        """Extend the leases `owner` still holds with the given tokens; returns those."""
        if not held:
            return set()
        tx.execute(
            leases.update()
            .where(leases.c.task.in_(list(held)), leases.c.owner == owner, leases.c.until > self.db_now(tx))
            .values(until=until)
        )
        rows = tx.execute(sa.select(leases.c.task, leases.c.token).where(leases.c.owner == owner))
        return {r.task for r in rows if held.get(r.task) == r.token}

    def lease_held(self, tx: Connection, task: str, owner: str, token: int) -> bool:
        """Does `owner` still hold `task` with `token`, unexpired? The row is share-locked
        on PostgreSQL, so no takeover commits between this check and the caller's commit."""
        q = sa.select(leases.c.until).where(leases.c.task == task, leases.c.owner == owner, leases.c.token == token)
        if self.dialect == "postgresql":
            q = q.with_for_update(read=True)
        until = tx.execute(q).scalar_one_or_none()
        return until is not None and until > self.db_now(tx)

    def release_lease(self, tx: Connection, task: str, owner: str, token: int, **values: Any) -> None:
        """Give `task` up (it stays in the table: its `last_run` is the schedule's anchor)."""
        tx.execute(
            leases.update()
            .where(leases.c.task == task, leases.c.owner == owner, leases.c.token == token)
            .values(until=_EPOCH, **values)
        )

    def free_leases(self, tx: Connection) -> int:
        """Expire every lease. Returns how many were held."""
        return int(tx.execute(leases.update().where(leases.c.until > _EPOCH).values(until=_EPOCH)).rowcount)

    def plan(self, tx: Connection, task: str, when: datetime) -> None:
        """Note when the daemon will next run `task`, unless a live plan says earlier."""
        now = self.db_now(tx)
        tx.execute(self._insert_ignore(leases, ["task"]).values(task=task, owner="", until=_EPOCH))
        tx.execute(
            leases.update()
            .where(
                leases.c.task == task,
                sa.or_(leases.c.next_run.is_(None), leases.c.next_run < now, leases.c.next_run > when),
            )
            .values(next_run=when)
        )

    def leases(self, tx: Connection) -> dict[str, Any]:
        return {r.task: r for r in tx.execute(sa.select(leases))}

    # ------------------------------------------------------------------ request budget

    def budget_starts(self, tx: Connection, name: str) -> tuple[float, list[float]]:
        """(the database's clock in epoch seconds, the budget's reserved starts), with the
        budget's row locked until the transaction ends (PostgreSQL: `FOR UPDATE`; SQLite:
        the caller opened it with `BEGIN IMMEDIATE`). The clock is read after the lock, so
        reservations are ordered as the clock is."""
        q = sa.select(request_budget.c.starts).where(request_budget.c.name == name)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        found = tx.execute(q).scalar_one_or_none()
        if found is None:  # the first request ever: create the row, then lock it
            tx.execute(self._insert_ignore(request_budget, ["name"]).values(name=name, starts="[]"))
            found = tx.execute(q).scalar_one()
        starts = json.loads(found)
        if self.dialect == "postgresql":
            now = float(tx.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        else:
            now = time.time()
        return now, [float(x) for x in starts]

    def set_budget_starts(self, tx: Connection, name: str, starts: Sequence[float]) -> None:
        tx.execute(request_budget.update().where(request_budget.c.name == name).values(starts=json.dumps(list(starts))))

    def queued_digests(self, tx: Connection, now: datetime) -> list[str]:
        """Digests with a queued message whose retry time has come, or one whose sending
        claim ran out (its holder died mid-send)."""
        due = sa.and_(
            outbox.c.state == "queued", sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now)
        )
        stale = sa.and_(outbox.c.state == "sending", outbox.c.until < self.db_now(tx))
        q = sa.select(outbox.c.digest).where(sa.or_(due, stale)).distinct()
        return sorted(r.digest for r in tx.execute(q))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))


_EPOCH = datetime(1970, 1, 1)


def _is_conflict(e: sa.exc.DBAPIError) -> bool:
    """A unique violation, a deadlock, a serialization failure, or SQLite's busy lock:
    errors another writer caused, which a rerun of the transaction resolves."""
    if isinstance(e, sa.exc.IntegrityError):
        code = getattr(e.orig, "sqlstate", None)
        return code == "23505" or "UNIQUE constraint failed" in str(e.orig)
    code = getattr(e.orig, "sqlstate", None)
    return code in {"40001", "40P01"} or "database is locked" in str(e.orig)


def _first_line(e: Exception) -> str:
    return str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e).__name__
