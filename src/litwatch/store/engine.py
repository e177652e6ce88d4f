"""The store's core: the engine, schema migrations, transactions, the database's
clock, and the edge where SQLAlchemy's exceptions become `StoreError`s.

Callers own the transaction: every method taking `tx` runs inside the caller's
`transaction()`, so a poll's records, versions, events and watermark commit together
or not at all. Nothing outside `store/` sees a SQLAlchemy exception: every public
method of `Store` is wrapped by `guard_public`, and `transaction()` (connect, commit,
rollback) by `database_errors`, both through `wrapped` below."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreConflict, StoreError, first_line
from .schema import SCHEMA_HEAD

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

log = logging.getLogger(__name__)
WRITE_ATTEMPTS = 4
EPOCH = datetime(1970, 1, 1)  # a lease that is free
T = TypeVar("T")
P = ParamSpec("P")
C = TypeVar("C", bound=type)


# ------------------------------------------------------------------ the edge


def is_conflict(e: sa.exc.SQLAlchemyError) -> bool:
    """A unique violation, a deadlock, a serialization failure, or SQLite's busy lock:
    errors another writer caused, which a rerun of the transaction resolves."""
    if not isinstance(e, sa.exc.DBAPIError):
        return False
    code = getattr(e.orig, "sqlstate", None)
    if isinstance(e, sa.exc.IntegrityError):
        return code == "23505" or "UNIQUE constraint failed" in str(e.orig)
    if isinstance(e, sa.exc.OperationalError):
        # 55P03: a lock not granted within lock_timeout (its holder may be stopped): a
        # rerun waits again, and the server ends a stopped holder's transaction soon
        return code in {"40001", "40P01", "55P03"} or "database is locked" in str(e.orig)
    return False


def wrapped(e: sa.exc.SQLAlchemyError) -> StoreError:
    """The `StoreError` a SQLAlchemy exception becomes: `StoreConflict` when a rerun
    resolves it. The message is what `litwatch` printed for a database error before
    the store wrapped them ("database error: " and the driver's first line); `orig`
    keeps the driver's own error, which `errors.first_line` reports."""
    orig = getattr(e, "orig", None) or e
    cls = StoreConflict if is_conflict(e) else StoreError
    return cls(f"database error: {first_line(e)}", orig=orig)


@contextmanager
def database_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.SQLAlchemyError as e:
        raise wrapped(e) from e


def _guard(fn: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sa.exc.SQLAlchemyError as e:
            raise wrapped(e) from e

    guarded.__store_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def guard_public(cls: C) -> C:
    """Wrap every public method `cls` has (its own and its mixins') at the store's edge.
    A public method calling another raises the inner one's `StoreError` unchanged."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = getattr(cls, name)
        if callable(attr) and not isinstance(attr, type) and not getattr(attr, "__store_guarded__", False):
            setattr(cls, name, _guard(attr))
    return cls


# ------------------------------------------------------------------ engine and migrations


# Every PostgreSQL session's bounds (ARCHITECTURE.md: no instance can stall the others).
# A lock held by a stopped holder (SIGSTOP, a frozen VM) is waited for at most
# `lock_timeout`, and the holder's transaction is ended by the server once it has been
# idle for `idle_in_transaction_session_timeout`, which releases its locks; a partitioned
# peer is found dead by TCP keepalives within about 25 s instead of about two hours.
PG_SESSION = {
    "lock_timeout": "5s",
    "statement_timeout": "60s",
    "idle_in_transaction_session_timeout": "10s",
}
PG_CONNECT = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25000,  # ms: data sent but never acknowledged (a partition)
}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=dict(PG_CONNECT))

    @sa.event.listens_for(engine, "connect")
    def _bounds(dbapi_conn: Any, _record: object) -> None:
        # No instance can stall the others: a lock wait, a statement, and a transaction
        # left open by a stopped or partitioned process each end after a few seconds.
        cur = dbapi_conn.cursor()
        for name, value in PG_SESSION.items():
            cur.execute(f"SET {name} = '{value}'")
        cur.close()
        dbapi_conn.commit()

    return engine


class StoreCore:
    """The engine, its schema and its transactions; what every part of `Store` builds on."""

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

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ schema

    def migrate(self) -> None:
        """Create or upgrade the schema to this litwatch's head; refuse a newer one."""
        if self._at_head() or self._created():
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
                    raise StoreError(f"cannot open the database {self.safe_url}: {first_line(e)}") from None
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

    def _created(self) -> bool:
        """On a database with no table at all (a first run), create the head schema from
        `schema.metadata` and stamp it, without importing Alembic (a fifth of a first
        `litwatch poll`'s fixed cost). The migrations build exactly these tables
        (tests/test_store.py and test_migrations.py compare them). False if anything is
        there already: Alembic's path then upgrades it, or refuses a newer schema."""
        from .schema import metadata

        version = sa.Table(  # what Alembic's stamp creates
            "alembic_version",
            sa.MetaData(),
            sa.Column("version_num", sa.String(32), nullable=False),
            sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
        )
        try:
            with self.engine.connect() as conn, conn.begin():
                if self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # a second process starting now waits, then finds tables
                elif self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(74207101)"))  # as _migrate_once
                if sa.inspect(conn).get_table_names():
                    return False
                metadata.create_all(conn, checkfirst=False)  # none there: no per-table check
                version.create(conn)
                conn.execute(version.insert().values(version_num=SCHEMA_HEAD))
        except sa.exc.DBAPIError:
            return False  # no server, a lock held too long...: the full path retries and says which
        return True

    def _migrate_once(self, cfg: Config, heads: set[str], known: set[str]) -> None:
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
                        # a migration may take long, and the others wait for it: unbounded here
                        conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
                        conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
                        conn.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 0"))
                        # several instances may start at once: one migrates, the others wait
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(74207101)"))
                    self._upgrade(conn, cfg, heads, known)
                    if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise StoreError(f"cannot upgrade the database {self.safe_url}: it breaks a foreign key")
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()

    def _upgrade(self, conn: Connection, cfg: Config, heads: set[str], known: set[str]) -> None:
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

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self, *, immediate: bool = False, fenced: bool = True) -> Iterator[Connection]:
        """One transaction. `immediate`: on SQLite take the write lock at the start
        (`BEGIN IMMEDIATE`), for a short read-then-write that must not interleave.
        `fenced`: before commit, run the fences this thread holds (`fences`): a job that
        lost its claim is stopped here, and what it wrote is rolled back."""
        with database_errors(), self.engine.connect() as conn, conn.begin():
            if immediate and self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
            if fenced:
                for fence in self.fences.get():
                    fence(conn)

    def write(
        self, fn: Callable[[Connection], T], *, what: str, attempts: int = WRITE_ATTEMPTS, pause: float = 0.0
    ) -> T:
        """Run `fn` in one transaction. When a concurrent writer (a second `litwatch poll`
        at the same moment) stored the same record first, the unique constraint stops this
        one (`StoreConflict`): roll back and run `fn` again, which now reads what the other
        committed. `fn` must derive everything from `tx`, so a rerun starts from scratch."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as tx:
                    return fn(tx)
            except StoreConflict as e:
                if attempt == attempts:
                    raise StoreError(
                        f"{what}: gave up after {attempt} attempts: another process keeps writing the same "
                        f"records ({first_line(e)})"
                    ) from None
                log.info("%s: concurrent write (%s); retrying", what, first_line(e))
                if pause:  # `pause`: a few writers at once step apart (jitter) instead of colliding again
                    time.sleep(pause * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ shared by the parts

    def db_now(self, tx: Connection) -> datetime:
        """Naive UTC by the database's clock, so that instances on hosts whose clocks
        differ agree on lease expiry and on when a task last ran. SQLite lives on one
        host: its clock is that host's (never a clock a test shifted)."""
        if self.dialect == "postgresql":
            value: datetime = tx.execute(sa.text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar_one()
            return value.replace(tzinfo=None)
        return datetime.now(UTC).replace(tzinfo=None)

    def _insert_ignore(self, table: sa.Table, conflict: list[str]) -> PgInsert | SqliteInsert:
        """`INSERT … ON CONFLICT (conflict) DO NOTHING` in the dialect's words."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing(index_elements=conflict)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict)

    def _upsert(self, tx: Connection, table: sa.Table, key: dict[str, object], values: dict[str, object]) -> None:
        cond = sa.and_(*(table.c[k] == v for k, v in key.items()))
        if tx.execute(table.update().where(cond).values(**values)).rowcount:
            return
        plain = {k: (1 if k in ("polls", "errors") else v) for k, v in values.items()}
        tx.execute(sa.insert(table).values(**key, **plain))
