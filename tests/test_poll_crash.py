"""Killing `litwatch poll` (SIGKILL) at random moments loses no record and creates no
duplicate event: records, events and watermarks commit in one transaction."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_poll_loses_nothing(tmp_path: Path, eutils: FakeEutils, backend: str) -> None:
    if backend == "postgresql":
        from helpers import pg_schema_url

        gen = pg_schema_url()
        db = next(gen)
    else:
        gen = None
        db = f"sqlite:///{tmp_path / 'litwatch.db'}"
    try:
        _run(tmp_path, eutils, db)
    finally:
        if gen is not None:
            gen.close()


def _run(tmp_path: Path, eutils: FakeEutils, db: str) -> None:
    rng = random.Random(7)
    for q, term in enumerate(("TRAIL", "myeloma", "aponermin")):
        for i in range(120):
            pmid = str(100_000 * (q + 1) + i)
            terms = {term, "TRAIL"} if i % 10 == 0 else term  # some shared between queries
            eutils.add(pmid, terms=terms, edat=TODAY - timedelta(days=i % 7), title=f"{term} paper {i}")
    cfg = basic_config(
        tmp_path,
        eutils.url,
        db=db,
        queries="queries:\n  - name: a\n    pubmed: TRAIL\n  - name: b\n    pubmed: myeloma\n  - name: c\n    pubmed: aponermin\n",
        digests="digests:\n  - name: d\n    to: [x@example.org]\n    queries: [a, b, c]\n",
    )
    cfg.write_text(cfg.read_text().replace("  timeout: 5\n", "  timeout: 5\n  batch_size: 25\n"))
    eutils.delay = 0.05
    kills = 0
    for round_ in range(12):
        if round_ % 4 == 3:  # PubMed changes between kills
            pmid = str(100_000 + round_)
            eutils.change(pmid, mdat=TODAY, title=f"TRAIL paper {round_} (revised {round_})")
        proc = subprocess.Popen(
            [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "poll"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        time.sleep(rng.uniform(0.3, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    eutils.delay = 0
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 0, r.stdout + r.stderr
    eng = sa.create_engine(db)
    with eng.connect() as c:
        records = c.execute(sa.text("select count(*) from records")).scalar_one()
        firsts = c.execute(
            sa.text(
                "select query, record_id, count(*) from events where dedup like 'first:%' group by query, record_id"
            )
        ).all()
        hits = c.execute(sa.text("select count(*) from hits")).scalar_one()
    eng.dispose()
    print(f"\npoll crash test ({db.split(':')[0]}): {kills} kills, {records} records, {len(firsts)} new events")
    assert kills >= 5
    assert records == 360
    assert hits == 360 + 24  # 12 of b's and 12 of c's records also match a
    assert len(firsts) == hits and all(n == 1 for *_, n in firsts)
    for _ in range(3):  # max_items 200: 384 items go out in two mails
        r = invoke("--config", str(cfg), "digest")
        assert r.returncode == 0
    assert "nothing to send" in r.stdout
    eng = sa.create_engine(db)
    with eng.connect() as c:
        delivered = c.execute(sa.text("select count(*), count(distinct event_id) from deliveries")).one()
        events = c.execute(sa.text("select count(*) from events")).scalar_one()
    eng.dispose()
    assert delivered[0] == delivered[1] == events
