"""`Store`: intention-revealing methods over SQLAlchemy Core. Callers (service) own
the transaction: every method taking `tx` runs inside the caller's `transaction()`,
so a poll's records, versions, events and watermark commit together or not at all."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreError
from ..records import Record
from .schema import (
    deliveries,
    digest_state,
    events,
    hits,
    leases,
    outbox,
    poll_state,
    records,
    request_budget,
    versions,
)

log = logging.getLogger(__name__)
_CHUNK = 500  # ids per IN (...) clause
_WRITE_ATTEMPTS = 4
T = TypeVar("T")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


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

    def _migrate_once(self, cfg: Any, heads: set[str], known: set[str]) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # several instances may start at once: one migrates, the others wait
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(74207101)"))
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

    def write(self, fn: Callable[[Connection], T], *, what: str) -> T:
        """Run `fn` in one transaction. When a concurrent writer (a second `litwatch poll`
        at the same moment) stored the same record first, the unique constraint stops this
        one: roll back and run `fn` again, which now reads what the other committed. `fn`
        must derive everything from `tx`, so a rerun starts from scratch."""
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self.transaction() as tx:
                    return fn(tx)
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as e:
                if not _is_conflict(e):
                    raise
                if attempt == _WRITE_ATTEMPTS:
                    raise StoreError(
                        f"{what}: gave up after {attempt} attempts: another process keeps writing the same "
                        f"records ({_first_line(e)})"
                    ) from None
                log.info("%s: concurrent write (%s); retrying", what, _first_line(e))
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
                .where(records.c.source == source, records.c.key.in_(keys[i : i + _CHUNK]))
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
                "doi": r.doi.lower() or None,
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
                {"rid": cur.record_id, "old_n": cur.n, "new_n": cur.n + 1, "h": h, "d": rec.doi.lower() or None}
                for cur, rec, h, _ in changed
            ],
        )

    def records_by_pmid(self, tx: Connection, pmids: Iterable[str]) -> dict[str, int]:
        pmids = list(set(pmids))
        out: dict[str, int] = {}
        for i in range(0, len(pmids), _CHUNK):
            q = sa.select(records.c.id, records.c.key).where(
                records.c.source == "pubmed", records.c.key.in_(pmids[i : i + _CHUNK])
            )
            out.update({row.key: row.id for row in tx.execute(q)})
        return out

    def find_records(self, tx: Connection, ident: str) -> list[tuple[int, str, str]]:
        """Records whose PMID, DOI or feed key is `ident`: [(id, source, key)]."""
        ident = ident.strip()
        cond = sa.or_(
            sa.and_(records.c.source == "pubmed", records.c.key == ident),
            records.c.doi == ident.lower().removeprefix("https://doi.org/").removeprefix("doi:"),
            sa.and_(records.c.source != "pubmed", records.c.key == ident),
        )
        q = sa.select(records.c.id, records.c.source, records.c.key).where(cond).order_by(records.c.id)
        return [(r.id, r.source, r.key) for r in tx.execute(q)]

    def versions_of(self, tx: Connection, record_id: int) -> list[tuple[int, datetime, dict[str, Any], list[Any]]]:
        q = sa.select(versions).where(versions.c.record_id == record_id).order_by(versions.c.n)
        return [(r.n, r.fetched_at, json.loads(r.fields), json.loads(r.changes)) for r in tx.execute(q)]

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
        before = tx.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
        tx.execute(
            self._insert_ignore(events, ["query", "dedup"]),
            [{**r, "detail": dumps(r.get("detail", {})), "created_at": now} for r in rows],
        )
        after = tx.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
        return int(after - before)

    def _insert_ignore(self, table: sa.Table, conflict: list[str]) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=conflict)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict)

    def pending_events(
        self, tx: Connection, *, queries: Sequence[str], kinds: Sequence[str], digest: str, recipient: str
    ) -> list[PendingEvent]:
        """Events of `queries` and `kinds` not yet bound to a message for (digest, recipient)."""
        delivered = sa.exists().where(
            deliveries.c.event_id == events.c.id, deliveries.c.digest == digest, deliveries.c.recipient == recipient
        )
        q = (
            sa.select(events, records.c.source, records.c.key, versions.c.fields, hits.c.terms)
            .join(records, records.c.id == events.c.record_id)
            .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version))
            .outerjoin(hits, sa.and_(hits.c.record_id == events.c.record_id, hits.c.query == events.c.query))
            .where(events.c.query.in_(list(queries)), events.c.kind.in_(list(kinds)), ~delivered)
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
        self, tx: Connection, *, queries: Sequence[str], kinds: Sequence[str], digest: str, recipient: str
    ) -> int:
        delivered = sa.exists().where(
            deliveries.c.event_id == events.c.id, deliveries.c.digest == digest, deliveries.c.recipient == recipient
        )
        q = (
            sa.select(sa.func.count())
            .select_from(events)
            .where(events.c.query.in_(list(queries)), events.c.kind.in_(list(kinds)), ~delivered)
        )
        return int(tx.execute(q).scalar_one())

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

    def mark_sent(self, tx: Connection, outbox_id: int, now: datetime) -> None:
        tx.execute(
            outbox.update()
            .where(outbox.c.id == outbox_id)
            .values(state="sent", sent_at=now, attempts=outbox.c.attempts + 1, last_error=None)
        )

    def mark_failed(
        self, tx: Connection, outbox_id: int, error: str, *, permanent: bool, retry_at: datetime | None
    ) -> None:
        tx.execute(
            outbox.update()
            .where(outbox.c.id == outbox_id)
            .values(
                state="failed" if permanent else "queued",
                attempts=outbox.c.attempts + 1,
                last_error=error,
                next_attempt_at=retry_at,
            )
        )

    def outbox_summary(self, tx: Connection) -> dict[str, Any]:
        q = sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(outbox.c.state == "queued")
        count, oldest = tx.execute(q).one()
        failed = tx.execute(sa.select(sa.func.count()).where(outbox.c.state == "failed")).scalar_one()
        return {"queued": int(count), "oldest_queued": oldest, "failed": int(failed)}

    def failed_messages(self, tx: Connection, digest: str) -> list[Any]:
        q = sa.select(outbox.c.recipient, outbox.c.last_error, outbox.c.created_at).where(
            outbox.c.digest == digest, outbox.c.state == "failed"
        )
        return list(tx.execute(q))

    # ------------------------------------------------------------------ digest state

    def digest_state(self, tx: Connection, digest: str) -> Any:
        return tx.execute(sa.select(digest_state).where(digest_state.c.digest == digest)).first()

    def set_digest_state(self, tx: Connection, digest: str, **values: Any) -> None:
        self._upsert(tx, digest_state, {"digest": digest}, values)

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

    def _upsert(self, tx: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
        cond = sa.and_(*(table.c[k] == v for k, v in key.items()))
        if tx.execute(table.update().where(cond).values(**values)).rowcount:
            return
        plain = {k: (1 if k in ("polls", "errors") else v) for k, v in values.items()}
        tx.execute(sa.insert(table).values(**key, **plain))

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
        """Digests with a queued message whose retry time has come."""
        q = (
            sa.select(outbox.c.digest)
            .where(
                outbox.c.state == "queued",
                sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            )
            .distinct()
        )
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
