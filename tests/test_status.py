"""`litwatch status` while and after `litwatch run`: last success, last error, next run
as the daemon plans it, records stored, pending events, the outbox; `--json`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from helpers import Run, basic_config, invoke, wait_for
from helpers.fake_eutils import FakeEutils, Fault
from test_daemon import QUERIES_2S, _seed, api_key, searches


def _status(cfg: Path) -> dict[str, Any]:
    r = invoke("--config", str(cfg), "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.removesuffix("Z"))


def test_status_follows_the_daemons_schedule(tmp_path: Path, eutils: FakeEutils) -> None:
    _seed(eutils)
    queries = QUERIES_2S.replace("every: 2s", "every: 1h", 1)  # trail hourly, myeloma every 2s
    digests = "digests:\n  - name: weekly\n    to: [team@example.org]\n    queries: [trail, myeloma]\n    every: 1h\n"
    cfg = api_key(basic_config(tmp_path, eutils.url, queries=queries, digests=digests))
    cfg.write_text(cfg.read_text().replace("pubmed:\n", "pubmed:\n  notices: false\n", 1))
    # trail's first search fails (whichever query the daemon starts with); trail polls
    # hourly, so it is still failing when status runs, while myeloma keeps succeeding
    eutils.faults.append(Fault("esearch", status=400, body=b"bad term", term="TRAIL"))
    run = Run(cfg, tmp_path / "run.log")
    try:
        wait_for(lambda: len(searches(eutils, "multiple myeloma")) >= 2, 15, "polls")
        st = _status(cfg)  # while the daemon runs (SQLite: status reads, it does not lock)
    finally:
        assert run.stop()[0] == 0
    text = invoke("--config", str(cfg), "status").stdout
    print("\n" + text)
    q = {x["name"]: x for x in st["queries"]}
    trail, myeloma = q["trail"], q["myeloma"]
    assert "400" in trail["last_error"] and trail["failing_since"] and not trail["last_success"]
    assert not myeloma["last_error"] and myeloma["last_success"] and myeloma["records"] == 2
    # trail polls hourly, but its failing search is tried again a minute after it failed
    # (issue 22: the back-off, not a whole period)
    assert timedelta(seconds=58) <= _t(trail["next_run"]) - _t(trail["failing_since"]) <= timedelta(seconds=62)
    assert _t(myeloma["next_run"]) - datetime.utcnow() <= timedelta(seconds=3)
    d = st["digests"][0]
    assert d["last_sent"] is None and d["pending_events"] >= 2
    # a new digest waits one period after the daemon's start
    assert timedelta(minutes=59) < _t(d["next_run"]) - datetime.utcnow() <= timedelta(hours=1)
    assert st["outbox"] == {"queued": 0, "oldest_queued": None, "sending": 0, "failed": 0, "refused": []}
    assert "Queries:" in text and "Digests:" in text and "Outbox: 0 queued" in text
