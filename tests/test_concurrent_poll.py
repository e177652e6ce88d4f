"""Two `litwatch poll` started at the same moment on one database (a cron job and a
user, or two containers without `run`): both finish cleanly, each record is stored
once and each event exists once. The loser of a race on a new record reruns its
transaction and finds the winner's rows instead of failing on the unique key."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, basic_config, pg_schema_url
from helpers.fake_eutils import FakeEutils


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_polls_at_once_store_everything_once(tmp_path: Path, eutils: FakeEutils, backend: str) -> None:
    gen = pg_schema_url() if backend == "postgresql" else None
    db = next(gen) if gen is not None else f"sqlite:///{tmp_path / 'litwatch.db'}"
    try:
        for i in range(150):
            eutils.add(
                str(500_000 + i),
                terms={"TRAIL", "multiple myeloma"} if i % 3 == 0 else "TRAIL",
                edat=TODAY - timedelta(days=i % 5),
                title=f"TRAIL paper {i}",
            )
        cfg = basic_config(tmp_path, eutils.url, db=db)
        outcomes = []
        for _round in range(3):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "-v", "poll"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=os.environ.copy(),
                )
                for _ in range(2)
            ]
            outcomes += [(p.wait(timeout=120), *p.communicate()) for p in procs]
            eutils.add(str(600_000 + _round), terms="TRAIL", edat=TODAY, title=f"TRAIL late paper {_round}")
        reruns = sum(err.count("concurrent write") for _, _, err in outcomes)
        for code, out, err in outcomes:
            assert code == 0, out + err
            assert "Traceback" not in err
        eng = sa.create_engine(db)
        with eng.connect() as c:
            records = c.execute(sa.text("select count(*), count(distinct key) from records")).one()
            versions = c.execute(sa.text("select count(*) from versions")).scalar_one()
            events = c.execute(sa.text("select count(*), count(distinct query || dedup) from events")).one()
            hits = c.execute(sa.text("select count(*) from hits")).scalar_one()
        eng.dispose()
        print(
            f"\nconcurrent polls ({backend}): 3 rounds x 2 processes, records {records[0]}, events {events[0]}, "
            f"{reruns} transactions rerun after a concurrent write"
        )
        assert records == (152, 152)  # the last round's paper arrives after the last poll
        assert versions == 152
        assert hits == 152 + 50
        assert events[0] == events[1] == hits
    finally:
        if gen is not None:
            gen.close()
