"""The PostgreSQL the tests use: 127.0.0.1:5432, database `test`, one fresh schema per use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("LITWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_PG: bool | None = None


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


def pg_schema_url() -> Iterator[str]:
    """Yields the URL of a new schema, dropped when the generator is closed; skips (fails
    on CI) when PostgreSQL is not reachable."""
    global _PG
    if _PG is None:
        _PG = _pg_available()
    if not _PG:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (CI must start it)")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable")
    schema = "t_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()
