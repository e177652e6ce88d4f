"""Exactly once through pauses (issue 23): a litwatch process *stopped* (SIGSTOP: a VM
frozen for a migration, a paused container, a swap storm) rather than killed, while it
talks to a real SMTP server on loopback, on SQLite and PostgreSQL.

- stopped while the server takes its message: the digest's lease runs out meanwhile, yet
  the mail is recorded as sent at once (its own sending claim still holds) and goes out
  once;
- stopped mid-conversation for longer than its sending claim while a second process
  sends the message: the first one checks its claim before the end of DATA and cuts the
  conversation there, so the message goes out once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import TODAY, MailBox, Run, SmtpServer, basic_config, daemon_env, invoke, smtp_mail, wait_for
from helpers.fake_eutils import FakeEutils

TEAM = "team@example.org"


def _add(fake: FakeEutils, first: int, n: int) -> None:
    for i in range(n):
        fake.add(str(first + i), terms="TRAIL", edat=TODAY, title=f"TRAIL paper {first + i}")


def _rows(db: str) -> list[dict[str, Any]]:
    eng = sa.create_engine(db)
    with eng.connect() as c:
        rows = [dict(r) for r in c.execute(sa.text("select * from outbox order by id")).mappings()]
    eng.dispose()
    return rows


def _copies(box: MailBox) -> Counter[str]:
    return Counter(str(m["Message-ID"]).strip() for m in box.messages)


class StopsClient(MailBox):
    """Stops the client process (`pid`, SIGSTOP) at the first `at` ("RCPT" or "DATA", the
    latter once the whole message has arrived), answers as usual, and lets it go on
    (SIGCONT) when `resume` is set or after `pause` seconds."""

    def __init__(self, at: str, pause: float | None = None) -> None:
        super().__init__()
        self.at = at
        self.pause = pause
        self.pid = 0
        self.stopped = threading.Event()
        self.resumed = threading.Event()

    def _stop(self) -> None:
        if self.stopped.is_set() or not self.pid:
            return
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped.set()
        if self.pause is not None:
            threading.Timer(self.pause, self.cont).start()

    def cont(self) -> None:
        if self.stopped.is_set() and not self.resumed.is_set():
            os.kill(self.pid, signal.SIGCONT)
            self.resumed.set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.at == "RCPT":
            self._stop()
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.at == "DATA":
            self._stop()
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def stopping_smtp(smtp_server: Callable[..., SmtpServer]) -> Iterator[Callable[[StopsClient], SmtpServer]]:
    boxes: list[StopsClient] = []

    def start(box: StopsClient) -> SmtpServer:
        boxes.append(box)
        return smtp_server(box)

    yield start
    for box in boxes:  # never leave a stopped process behind
        box.cont()


def test_a_pause_while_the_server_takes_the_mail_sends_it_once(
    tmp_path: Path, eutils: FakeEutils, store_url: str, stopping_smtp: Callable[[StopsClient], SmtpServer]
) -> None:
    """One `litwatch run`, stopped for 10 s as its mail server accepts the message; the
    digest's lease (6 s) runs out meanwhile, the message's sending claim (35 s) does not.
    On resuming it records the mail as sent, and nothing goes out again."""
    _add(eutils, 1001, 3)
    box = StopsClient("DATA", pause=10.0)
    port = stopping_smtp(box).port
    digests = f"digests:\n  - name: weekly\n    to: [{TEAM}]\n    queries: [trail]\n    every: 5s\n"
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: 3600s\n"
    cfg = basic_config(
        tmp_path, eutils.url, db=store_url, mail=smtp_mail(port, timeout=3), queries=queries, digests=digests
    )
    run = Run(cfg, tmp_path / "run.log", env={"LITWATCH_LEASE_SECONDS": "6"})
    box.pid = run.proc.pid
    try:
        assert box.resumed.wait(90), "the digest never reached the server\n" + run.log
        # resumed: its own claim still holds, so the mail is recorded as sent now (not
        # after the claim ran out and the message went out a second time)
        wait_for(
            lambda: [r["state"] for r in _rows(store_url)] == ["sent"],
            20,
            lambda: f"the message recorded as sent: {[r['state'] for r in _rows(store_url)]}\n{run.log}",
        )
        (row,) = _rows(store_url)
        runs = run.log.count("digest name=weekly")
        run.wait_log(r"digest name=weekly", timeout=40, count=runs + 2)  # two more rounds of the digest
        assert _copies(box) == {row["message_id"]: 1}, run.log
        assert "another litwatch process" not in run.log.split("run started", 1)[1], run.log
    finally:
        run.stop()
    print(f"\npaused 10 s at DATA ({store_url.split(':')[0]}): sent once, recorded at once")


def test_a_sender_paused_past_its_claim_cuts_the_conversation_before_the_end_of_data(
    tmp_path: Path, eutils: FakeEutils, store_url: str, stopping_smtp: Callable[[StopsClient], SmtpServer]
) -> None:
    """`litwatch digest` A is stopped at RCPT for longer than its sending claim (15 s);
    `litwatch digest` B takes the message over and sends it; A resumes, finds before the
    end of DATA that the claim is no longer its own, and cuts the conversation."""
    _add(eutils, 2001, 3)
    box = StopsClient("RCPT")
    port = stopping_smtp(box).port
    digests = f"digests:\n  - name: weekly\n    to: [{TEAM}]\n    queries: [trail]\n"
    cfg = basic_config(tmp_path, eutils.url, db=store_url, mail=smtp_mail(port, timeout=1), digests=digests)
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 0, r.stdout + r.stderr
    a = subprocess.Popen(
        [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "digest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon_env(LITWATCH_LEASE_SECONDS="6"),
    )
    box.pid = a.pid
    try:
        assert box.stopped.wait(60), "A never reached RCPT"

        def stale() -> bool:
            rows = _rows(store_url)
            now = datetime.now(UTC).replace(tzinfo=None)
            until = rows[0]["until"] if len(rows) == 1 and rows[0]["state"] == "sending" else None
            if isinstance(until, str):  # SQLite, read as text
                until = datetime.fromisoformat(until)
            return until is not None and until < now

        wait_for(stale, 30, "A's sending claim running out")
        b = invoke("--config", str(cfg), "digest")  # B: takes the message over and sends it
        assert b.returncode == 0, b.stdout + b.stderr
        (row,) = _rows(store_url)
        assert row["state"] == "sent" and _copies(box) == {row["message_id"]: 1}, b.stdout
        box.cont()
        out, err = a.communicate(timeout=60)
    finally:
        box.cont()
        if a.poll() is None:
            a.kill()
            a.wait()
    assert "Traceback" not in err, err
    assert _copies(box) == {row["message_id"]: 1}, f"A sent it again:\n{out}\n{err}"
    assert [r["state"] for r in _rows(store_url)] == ["sent"]
    assert "not handed to the server" in err, err
    print(f"\nA paused past its claim ({store_url.split(':')[0]}): cut before the end of DATA; {out.strip()}")
