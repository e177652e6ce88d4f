"""Schema migrations: an older litwatch refuses a newer schema with a clear message,
and 0001 → head keeps what is stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import sqlalchemy as sa

from helpers import basic_config, daemon_env, run_cli
from helpers.fake_eutils import FakeEutils
from litwatch.store import Store
from litwatch.store.schema import SCHEMA_HEAD


def test_an_older_litwatch_refuses_a_newer_schema(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    Store(store_url).close()
    eng = sa.create_engine(store_url)
    with eng.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    eng.dispose()
    cfg = basic_config(tmp_path, eutils.url, db=store_url)
    for command in (["status"], ["run"]):
        r = run_cli("--config", str(cfg), *command, env=daemon_env(), timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert "the database schema (0099_from_the_future) is newer than this litwatch knows" in r.stderr
        assert "upgrade litwatch" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    print("\nnewer schema:", r.stderr.strip())


def test_upgrade_from_0001_keeps_leases(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    eng = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO leases (task, owner, until) VALUES ('poll:q', 'x', '2026-01-01 00:00:00')"))
    store = Store(store_url)  # migrates to head
    with store.transaction() as tx:
        row = store.leases(tx)["poll:q"]
        version = tx.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    store.close()
    eng.dispose()
    assert row.owner == "x" and row.last_run is None and row.next_run is None
    assert version == SCHEMA_HEAD


def test_schema_head_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_HEAD]


def test_a_current_schema_costs_one_query(store_url: str) -> None:
    Store(store_url).close()  # creates the schema
    statements: list[str] = []
    store = Store(store_url, migrate=False)
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.migrate()
    store.close()
    print("\nschema check on a current database:", statements)
    assert statements == ["SELECT version_num FROM alembic_version"]


def test_upgrade_0002_to_0003_keeps_records_events_and_feed_state(store_url: str) -> None:
    """0003_unbounded_keys on a database holding data: keys get their hash and are found
    again, the same event is still recognised (SQLite's over-long dedup and DOI are
    rewritten to their lookup form), feed state survives, and long values fit after."""
    from datetime import datetime

    from alembic import command
    from alembic.config import Config

    from litwatch.records import Record

    sqlite = store_url.startswith("sqlite")
    long_doi = "10.1/" + "d" * (400 if sqlite else 290)  # PostgreSQL refused longer ones before
    long_dedup = "first:feed:f:" + "k" * (500 if sqlite else 380)
    eng = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(
            sa.text(
                "INSERT INTO records (id, source, key, doi, current_version, current_hash, first_seen, updated_at) "
                "VALUES (1, 'pubmed', '123', '10.1/abc', 1, 'h1', '2026-01-01', '2026-01-01'), "
                "(2, 'feed:f', 'entry-1', :doi, 1, 'h2', '2026-01-01', '2026-01-01')"
            ),
            {"doi": long_doi},
        )
        if not sqlite:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('records', 'id'), 2)"))
        conn.execute(
            sa.text(
                "INSERT INTO versions (record_id, n, fetched_at, hash, fields, changes) VALUES "
                "(1, 1, '2026-01-01', 'h1', '{\"title\":\"A paper\"}', '[]'), "
                "(2, 1, '2026-01-01', 'h2', '{\"title\":\"An entry\"}', '[]')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO events (record_id, query, kind, version_n, dedup, created_at) "
                "VALUES (2, 'q', 'new', 1, :dedup, '2026-01-01')"
            ),
            {"dedup": long_dedup},
        )
        conn.execute(
            sa.text(
                "INSERT INTO poll_state (query, source, watermark, etag, last_modified, url) "
                "VALUES ('*', 'feed:f', 'http://x/f', '\"e1\"', 'Tue, 24 Nov 2026 10:00:00 GMT', 'http://y/f')"
            )
        )
    store = Store(store_url)  # migrates to head
    try:
        with store.transaction() as tx:
            version = tx.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
            pubmed = store.records_by_pmid(tx, ["123"])
            feed = store.current(tx, "feed:f", ["entry-1"])
            by_doi = store.find_records(tx, long_doi)
            again = store.add_events(
                tx, [{"record_id": 2, "query": "q", "kind": "new", "version_n": 1, "dedup": long_dedup}], datetime.now()
            )
            state = store.poll_state(tx, "*", "feed:f")
            ids = store.insert_records(
                tx, [(Record(source="feed:f", key="g" * 4000, doi="10.9/" + "z" * 3000), "h3")], datetime.now()
            )
    finally:
        store.close()
        eng.dispose()
    assert version == SCHEMA_HEAD
    assert pubmed == {"123": 1} and feed["entry-1"].record.title == "An entry"
    assert by_doi == [(2, "feed:f", "entry-1")]
    assert again == 0  # the event stored before the upgrade is recognised
    assert (state.watermark, state.etag, state.url) == ("http://x/f", '"e1"', "http://y/f")
    assert list(ids) == ["g" * 4000]


def _shape(url: str) -> dict[str, dict[str, list[str]]]:
    """Every table's columns (by name), keys, indexes and constraints, as the database reports them."""
    eng = sa.create_engine(url)
    insp = sa.inspect(eng)
    out = {
        t: {
            "columns": sorted(
                str((c["name"], str(c["type"]), c["nullable"], c.get("default"))) for c in insp.get_columns(t)
            ),
            "primary key": [str(insp.get_pk_constraint(t))],
            "foreign keys": sorted(str(f) for f in insp.get_foreign_keys(t)),
            "indexes": sorted(str(i) for i in insp.get_indexes(t)),
            "unique": sorted(str(u) for u in insp.get_unique_constraints(t)),
            "checks": sorted(str(c) for c in insp.get_check_constraints(t)),
        }
        for t in insp.get_table_names()
    }
    eng.dispose()
    return out


def test_a_new_database_gets_the_schema_the_migrations_build(store_url: str, tmp_path: Path) -> None:
    """A first run creates the head schema directly (no Alembic); it is the schema that
    0001 → head builds: same tables, columns, keys, indexes and constraints."""
    from alembic import command
    from alembic.config import Config

    from helpers import pg_schema_url

    Store(store_url).close()
    if store_url.startswith("sqlite"):
        migrated_url, other = f"sqlite:///{tmp_path / 'migrated.db'}", None
    else:
        other = pg_schema_url()
        migrated_url = next(other)
    try:
        eng = sa.create_engine(migrated_url)
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        eng.dispose()
        created, migrated = _shape(store_url), _shape(migrated_url)
    finally:
        if other is not None:
            other.close()
    assert sorted(created) == sorted(migrated)
    for table in migrated:
        assert created[table] == migrated[table], table


def test_a_new_database_is_created_without_alembic(store_url: str) -> None:
    """A first run on an empty database: one transaction creates and stamps the head
    schema, and Alembic (a fifth of a first poll's fixed cost) is never imported; the
    next start finds it current."""
    code = (
        f"import sys\nfrom litwatch.store import Store\nStore({store_url!r}).close()\nprint('alembic' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=daemon_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    eng = sa.create_engine(store_url)
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [SCHEMA_HEAD]
    eng.dispose()
    statements: list[str] = []
    store = Store(store_url, migrate=False)
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.migrate()
    store.close()
    assert statements == ["SELECT version_num FROM alembic_version"]
