"""Schema migrations: an older litwatch refuses a newer schema with a clear message,
and 0001 → head keeps what is stored (SQLite and PostgreSQL)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import sqlalchemy as sa

from conftest import basic_config, run_cli
from fake_eutils import FakeEutils
from litwatch.store import Store
from test_daemon import daemon_env


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
    assert version == "0005_coordination"
