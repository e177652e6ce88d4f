"""The command line through its surface: exit codes of SPEC.md, one-line errors, no
tracebacks, every command documented in the README."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils, Fault

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_documented() -> None:
    from litwatch.cli import main

    readme = (ROOT / "README.md").read_text()
    for name in main.commands:
        assert re.search(rf"`litwatch {name}\b", readme), f"README does not document `litwatch {name}`"


def test_check_online_reports_translation_and_warnings(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url)
    r = invoke("--config", str(cfg), "check", "--online")
    assert r.returncode == 0 and "trail: 0 records; PubMed reads it as: TRAIL" in r.stdout
    eutils.faults.append(
        Fault(
            "esearch",
            200,
            body=b"<eSearchResult><Count>0</Count><RetMax>0</RetMax><RetStart>0</RetStart><IdList/>"
            b"<ErrorList><PhraseNotFound>TRAIL</PhraseNotFound></ErrorList></eSearchResult>",
        )
    )
    r = invoke("--config", str(cfg), "check", "--online")
    assert r.returncode == 2 and "trail: warning: PhraseNotFound: TRAIL" in r.stderr


def test_unknown_names_exit_2(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url)
    r = invoke("--config", str(cfg), "poll", "--query", "nope")
    assert (
        r.returncode == 2
        and r.stderr.strip() == "litwatch: no query named 'nope' in the config (queries: trail, myeloma)"
    )
    r = invoke("--config", str(cfg), "digest", "nope")
    assert r.returncode == 2 and "no digest named 'nope'" in r.stderr
    r = invoke("--config", str(cfg), "history", "12345")
    assert r.returncode == 2 and "no stored record" in r.stderr and "Traceback" not in r.stderr


def test_status_text_and_json(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add("1", terms="TRAIL", edat=TODAY - timedelta(days=1), title="x")
    cfg = basic_config(tmp_path, eutils.url)
    r = invoke("--config", str(cfg), "status", "--json")
    assert r.returncode == 0
    st = json.loads(r.stdout)
    assert [q["name"] for q in st["queries"]] == ["trail", "myeloma"] and st["queries"][0]["last_success"] is None
    invoke("--config", str(cfg), "poll")
    st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
    assert st["queries"][0]["records"] == 1 and st["queries"][0]["last_success"]
    assert st["digests"][0]["pending_events"] == 1
    assert st["outbox"] == {"queued": 0, "oldest_queued": None, "sending": 0, "failed": 0, "refused": []}
    text = invoke("--config", str(cfg), "status").stdout
    assert "trail: last success" in text and "weekly: last sent never, 1 pending events" in text


def test_failing_source_shown_in_status(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url)
    eutils.faults += [Fault("esearch", 400)]
    r = invoke("--config", str(cfg), "poll", "--query", "trail")
    assert r.returncode == 1
    st = json.loads(invoke("--config", str(cfg), "status", "--json").stdout)
    assert "HTTP 400" in st["queries"][0]["last_error"] and st["queries"][0]["failing_since"]


def test_database_unreachable_is_one_line(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url, db="postgresql+psycopg://nobody:secretpw@127.0.0.1:1/none")
    r = invoke("--config", str(cfg), "status")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "secretpw" not in r.stderr
    assert r.stderr.startswith("litwatch: cannot open the database")
