"""Digest delivery end to end: poll against the fake E-utilities server, then digests
through a real SMTP server (aiosmtpd) and the file transport; exactly once."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from helpers import TODAY, basic_config, invoke, smtp_mail, smtp_port
from helpers.fake_eutils import FakeEutils


def seed(fake: FakeEutils) -> None:
    fake.add("101", terms="TRAIL", edat=TODAY, title="Aponermin: First Approval", doi="10.1/apo")
    fake.add(
        "102",
        terms={"TRAIL", "multiple myeloma"},
        edat=TODAY - timedelta(days=1),
        title="TRAIL in myeloma <script>alert(1)</script> & more",
    )
    fake.add(
        "103", terms="multiple myeloma", edat=TODAY, title="Daratumumab outcomes", authors=("A B", "C D", "E F", "G H")
    )


def smtp_config(tmp_path: Path, fake: FakeEutils, port: int) -> Path:
    return basic_config(tmp_path, fake.url, mail=smtp_mail(port))


def test_file_transport_digest_once(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils)
    cfg = basic_config(tmp_path, eutils.url)
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2  # one per recipient
    raw = files[0].read_bytes()
    assert re.search(rb"^Message-ID: <[^<>\s]+@example\.org>\r$", raw, re.M), "Message-ID folded or malformed"
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "weekly: 1 approval, 2 new papers"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["List-Id"] and msg["Message-ID"]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert text.index("Aponermin: First Approval") < text.index("Daratumumab outcomes")
    assert "https://pubmed.ncbi.nlm.nih.gov/101/" in text and "https://doi.org/10.1/apo" in text
    assert "A B, C D, E F et al." in text
    assert text.count("TRAIL in myeloma") == 1 and "Matched: myeloma, trail" in text  # once, both queries
    assert "<script>" not in html and "&lt;script&gt;" in html
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0 and "nothing to send" in r.stdout
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_backlog_over_max_items_goes_out_in_several_mails_in_one_run(tmp_path: Path, eutils: FakeEutils) -> None:
    for i in range(5):
        eutils.add(str(200 + i), terms="TRAIL", edat=TODAY, title=f"TRAIL paper number {i}")
    cfg = basic_config(
        tmp_path, eutils.url, digests="digests:\n  - name: weekly\n    to: [a@example.org]\n    queries: [trail]\n"
    )
    cfg.write_text(cfg.read_text().replace("queries: [trail]\n", "queries: [trail]\n    max_items: 2\n"))
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in (tmp_path / "outbox").glob("*.eml")]
    msgs.sort(key=lambda m: str(m["Subject"]), reverse=True)  # +3 more, +1 more, the last one
    texts = [m.get_body(("plain",)).get_content().replace("\r\n", "\n") for m in msgs]
    assert len(msgs) == 3 and len({m["Message-ID"] for m in msgs}) == 3
    assert sorted(str(m["Subject"]) for m in msgs) == [
        "weekly: 1 new paper",
        "weekly: 2 new papers (+1 more)",
        "weekly: 2 new papers (+3 more)",
    ]
    assert "3 more items waiting: they follow in the next mail." in texts[0]
    assert "1 more item waiting" in texts[1] and "more item" not in texts[2]
    assert all(sum(f"TRAIL paper number {i}" in t for t in texts) == 1 for i in range(5))  # each once
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0 and "nothing to send" in r.stdout


def test_dry_run_prints_and_marks_nothing(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils)
    cfg = basic_config(tmp_path, eutils.url)
    invoke("--config", str(cfg), "poll")
    html = tmp_path / "preview.html"
    r = invoke("--config", str(cfg), "digest", "--dry-run", "--html", str(html))
    assert r.returncode == 0 and "Aponermin: First Approval" in r.stdout
    assert r.stdout.count("Aponermin: First Approval") == 1  # same text for both recipients: shown once
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert not (tmp_path / "outbox").exists()
    r = invoke("--config", str(cfg), "digest")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def outbox(tmp_path: Path) -> list[Any]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'litwatch.db'}")
    with eng.connect() as c:
        q = "select recipient, message_id, state, attempts, last_error, next_attempt_at from outbox order by id"
        rows = list(c.execute(sa.text(q)).mappings())
    eng.dispose()
    return rows


def test_smtp_outage_keeps_message_queued_with_same_message_id(tmp_path: Path, eutils: FakeEutils, smtp) -> None:  # type: ignore[no-untyped-def]
    seed(eutils)
    port = smtp_port(smtp)
    cfg = smtp_config(tmp_path, eutils, port)
    invoke("--config", str(cfg), "poll")
    smtp.handler.fail_data = "451 4.3.0 try again later"
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 1 and "451" in r.stdout and "kept queued" in r.stdout
    assert smtp.received.messages == []
    st = invoke("--config", str(cfg), "status", "--json")
    assert '"queued": 2' in st.stdout
    queued = outbox(tmp_path)
    assert [(m["state"], m["attempts"]) for m in queued] == [("queued", 1)] * 2
    assert all("451 4.3.0 try again later" in m["last_error"] and m["next_attempt_at"] for m in queued)
    eutils.add("104", terms="TRAIL", edat=TODAY, title="A paper found during the outage")
    assert invoke("--config", str(cfg), "poll").returncode == 0
    smtp.handler.fail_data = None
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = smtp.received.messages
    # the queued messages first, as they were (same Message-ID), then the new events in new ones
    assert [(m["To"], m["Message-ID"].strip()) for m in msgs[:2]] == [(m["recipient"], m["message_id"]) for m in queued]
    assert sorted(m["To"] for m in msgs[2:]) == ["boss@example.org", "team@example.org"]
    for i, m in enumerate(msgs):
        text = m.get_body(("plain",)).get_content()
        assert ("/104/" in text) == (i >= 2) and ("/101/" in text) == (i < 2)
    assert [m["state"] for m in outbox(tmp_path)] == ["sent"] * 4
    r = invoke("--config", str(cfg), "digest")
    assert len(smtp.received.messages) == 4 and "nothing to send" in r.stdout


def test_permanent_refusal_for_one_recipient(tmp_path: Path, eutils: FakeEutils, smtp) -> None:  # type: ignore[no-untyped-def]
    seed(eutils)
    cfg = smtp_config(tmp_path, eutils, smtp_port(smtp))
    invoke("--config", str(cfg), "poll")
    smtp.handler.refuse["boss@example.org"] = "550 5.1.1 no such user"
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 1 and "550" in r.stdout
    (boss_line,) = [line for line in r.stdout.splitlines() if "boss@" in line]
    assert "REFUSED, kept" in boss_line and "550 5.1.1 no such user" in boss_line
    assert [m["To"] for m in smtp.received.messages] == ["team@example.org"]
    team, boss = outbox(tmp_path)
    assert (team["state"], boss["state"], boss["attempts"], boss["next_attempt_at"]) == ("sent", "refused", 1, None)
    assert "550 5.1.1 no such user" in boss["last_error"]
    r = invoke("--config", str(cfg), "digest")  # not retried forever: only by --retry-failed
    assert r.returncode == 0 and len(smtp.received.messages) == 1 and "nothing to send" in r.stdout
    assert outbox(tmp_path)[1]["attempts"] == 1
    st = invoke("--config", str(cfg), "status")
    assert "1 refused" in st.stdout and "boss@example.org: 550 5.1.1 no such user" in st.stdout


def test_connection_refused_is_reported(tmp_path: Path, eutils: FakeEutils) -> None:
    seed(eutils)
    cfg = smtp_config(tmp_path, eutils, 1)  # nothing listens on port 1
    invoke("--config", str(cfg), "poll")
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 1 and "connection refused" in r.stdout and "Traceback" not in r.stderr
