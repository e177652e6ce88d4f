"""The web view's queries and the unsubscribes, on SQLite and PostgreSQL (issue 26)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.service import Service


def test_events_record_archive_and_unsubscribes(tmp_path: Path, eutils: FakeEutils, store_url: str) -> None:
    day = TODAY - timedelta(days=1)
    eutils.add("1", terms="TRAIL", edat=day, title="TRAIL 100% agonist_trial", abstract="In mice.", doi="10.1/A")
    eutils.add("2", terms={"TRAIL", "multiple myeloma"}, edat=day, title="Myeloma and TRAIL")
    cfg = basic_config(tmp_path, eutils.url, db=store_url)
    assert invoke("--config", str(cfg), "poll").returncode == 0
    assert invoke("--config", str(cfg), "digest").returncode == 0
    service = Service(load(cfg))
    try:
        everything = service.web_events()
        assert len(everything) == 3 and [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
        assert [e.key for e in service.web_events(queries=["myeloma"])] == ["2"]
        assert len(service.web_events(kinds=["new"], before_id=everything[0].id)) == 2
        assert [e.key for e in service.web_events(text="100%")] == ["1"]  # % and _ are literal
        assert [e.key for e in service.web_events(text="st_tr")] == ["1"] and service.web_events(text="stxtr") == []
        assert service.web_events(text="t%l") == []
        assert [e.key for e in service.web_events(text="MICE")] == ["1"]
        (rec,) = service.web_record("10.1/a")
        assert rec["key"] == "1" and [e.kind for e in rec["events"]] == ["new"]
        assert len(rec["messages"]) == 2  # one per recipient
        mails = service.web_archive("weekly")
        assert len(mails) == 2 and service.web_message(mails[0].id) is not None
        assert service.unsubscribe("weekly", "team@example.org", "link") is True
        assert service.unsubscribe("weekly", "team@example.org", "link") is False
        assert [(u.recipient, u.via) for u in service.unsubscribed()] == [("team@example.org", "link")]
        assert service.resubscribe("weekly", "team@example.org") is True
        assert service.resubscribe("weekly", "team@example.org") is False
        assert service.unsubscribed() == []
        weeks = service.web_events_per_week()
        assert sum(weeks.values()) == 3 and {k for _, k, _ in weeks} == {"new"}
    finally:
        service.close()
