"""The outbox (outbox.py) through `litwatch digest` and `status` as a user runs them,
against real SMTP servers on loopback (aiosmtpd): a 5xx refusal kept and sent again by
`--retry-failed` with the same Message-ID; a 552 (too large) split without losing an
item; recipients and new digests starting now (`backfill`); a `sending` claim left by a
SIGKILLed process taken over once it is stale; three `litwatch digest` at once beside a
running `litwatch run` (SQLite and PostgreSQL): one copy per recipient, never exit 2."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import TODAY, MailBox, Run, SmtpServer, basic_config, daemon_env, invoke, smtp_mail, wait_for
from helpers.fake_eutils import FakeEutils

PUBMED_URL = re.compile(r"https://pubmed\.ncbi\.nlm\.nih\.gov/(\d+)/")
TEAM, BOSS = "team@example.org", "boss@example.org"


def _cfg(tmp_path: Path, fake: FakeEutils, port: int, *, to: str, extra: str = "", db: str | None = None) -> Path:
    digests = f"digests:\n  - name: weekly\n    to: [{to}]\n    queries: [trail, myeloma]\n{extra}"
    return basic_config(tmp_path, fake.url, db=db, mail=smtp_mail(port, timeout=10), digests=digests)


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke("--config", str(cfg), *args)


def _poll(cfg: Path) -> None:
    r = _cli(cfg, "poll")
    assert r.returncode == 0, r.stdout + r.stderr


def _rows(db: str) -> list[Any]:
    eng = sa.create_engine(db)
    with eng.connect() as c:
        rows = [dict(r) for r in c.execute(sa.text("select * from outbox order by id")).mappings()]
    eng.dispose()
    return rows


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'litwatch.db'}"


def _pmids(msg: EmailMessage) -> set[str]:
    return set(PUBMED_URL.findall(msg.get_body(("plain",)).get_content()))  # type: ignore[union-attr]


def _add(fake: FakeEutils, first: int, n: int, term: str = "TRAIL") -> list[str]:
    ids = [str(first + i) for i in range(n)]
    for pmid in ids:
        fake.add(pmid, terms=term, edat=TODAY, title=f"{term} paper {pmid} " + "with a longer title " * 3)
    return ids


# ----------------------------------------------------------------------------- pure


def test_retry_at_doubles_from_a_minute_to_at_most_six_hours() -> None:
    from litwatch.outbox import retry_at

    now = datetime(2026, 12, 1, 12, 0)
    assert [retry_at(n, now) - now for n in (1, 2, 3, 4)] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert retry_at(9, now) - now == timedelta(hours=4, minutes=16)
    assert retry_at(10, now) - now == timedelta(hours=6) == retry_at(1000, now) - now
    assert retry_at(0, now) - now == timedelta(minutes=1)


def test_recipient_start_is_the_last_run_once_mail_went_out_else_backfill() -> None:
    from litwatch.digest.build import recipient_start

    now, last = datetime(2026, 12, 1, 12, 0), datetime(2026, 11, 30, 7, 0)
    month = timedelta(days=30)
    assert recipient_start(sent_before=True, last_run=last, now=now, backfill=month) == last
    assert recipient_start(sent_before=False, last_run=last, now=now, backfill=month) == now - month
    assert recipient_start(sent_before=False, last_run=None, now=now, backfill=month) == now - month


def test_a_claim_is_dead_only_when_its_process_is_gone_from_this_host() -> None:
    import os
    import socket

    from litwatch.coordination import dead_here

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    assert dead_here(f"{host}:{gone.pid}:abcdef")
    assert not dead_here(f"{host}:{os.getpid()}:abcdef")  # this process
    assert not dead_here(f"{host}:1:abcdef")  # alive (init)
    assert not dead_here(f"elsewhere.example.org:{gone.pid}:abcdef")  # another host: its claim's time decides
    assert not dead_here(None) and not dead_here("garbage")


# ----------------------------------------------------------------------------- refusals


def test_554_for_one_recipient_is_kept_and_retry_failed_sends_it_once(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    pmids = _add(eutils, 101, 3)
    box = MailBox()
    box.refuse[BOSS] = "554 5.7.1 Relay access denied"
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=f"{TEAM}, {BOSS}")
    _poll(cfg)
    r = _cli(cfg, "digest")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert [g.rcpt_tos for g in box.got] == [[TEAM]]  # the other recipient gets the mail
    (boss_line,) = [line for line in r.stdout.splitlines() if BOSS in line]
    assert "REFUSED, kept" in boss_line and "554 5.7.1 Relay access denied" in boss_line
    team, boss = _rows(_sqlite(tmp_path))
    assert (team["state"], boss["state"], boss.get("reply")) == ("sent", "refused", "554 5.7.1 Relay access denied")

    st = _cli(cfg, "status")
    print("\n" + st.stdout)
    assert f"weekly → {BOSS}: 554 5.7.1 Relay access denied" in st.stdout and "1 refused" in st.stdout
    (refused,) = json.loads(_cli(cfg, "status", "--json").stdout)["outbox"]["refused"]
    assert (refused["recipient"], refused["reply"], refused["message_id"]) == (
        BOSS,
        "554 5.7.1 Relay access denied",
        boss["message_id"],
    )
    r = _cli(cfg, "digest")  # kept, not retried on its own
    assert r.returncode == 0 and "nothing to send" in r.stdout and len(box.got) == 1, r.stdout

    del box.refuse[BOSS]  # the relay is fixed
    r = _cli(cfg, "digest", "--retry-failed")
    assert r.returncode == 0, r.stdout + r.stderr
    r2 = _cli(cfg, "digest", "--retry-failed")
    assert r2.returncode == 0 and "nothing to send" in r2.stdout
    to_boss = [g.msg for g in box.got if g.rcpt_tos == [BOSS]]
    assert len(to_boss) == 1, r.stdout  # once
    assert to_boss[0]["Message-ID"].strip() == boss["message_id"]  # the same message
    assert _pmids(to_boss[0]) == set(pmids)  # with every item
    assert [row["state"] for row in _rows(_sqlite(tmp_path))] == ["sent", "sent"]
    st = json.loads(_cli(cfg, "status", "--json").stdout)
    assert st["outbox"]["refused"] == [] and st["outbox"]["failed"] == 0


def test_retry_failed_sends_to_the_recipients_the_config_lists_now(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """A typo refused (550), another recipient refused and then removed: after the fix,
    `--retry-failed` sends the refused message to the corrected address (same
    Message-ID, every item), neither to the typo nor to the removed one again, and
    `status` has nothing refused or skipped left."""
    pmids = _add(eutils, 151, 3)
    typo, gone = "bos@example.org", "gone@example.org"
    box = MailBox(refuse={typo: "550 5.1.1 unknown user", gone: "550 5.1.1 unknown user"})
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=f"{TEAM}, {typo}, {gone}")
    _poll(cfg)
    r = _cli(cfg, "digest")
    assert r.returncode == 1 and [g.rcpt_tos for g in box.got] == [[TEAM]], r.stdout + r.stderr
    refused = {row["recipient"]: row["message_id"] for row in _rows(_sqlite(tmp_path)) if row["state"] == "refused"}
    assert set(refused) == {typo, gone}

    cfg.write_text(cfg.read_text().replace(f"{TEAM}, {typo}, {gone}", f"{TEAM}, {BOSS}"))  # fixed, and removed
    r = _cli(cfg, "digest", "--retry-failed")
    print("\n" + r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"queued again for {BOSS}" in r.stdout and "no longer a recipient: not sent again" in r.stdout
    to_boss = [g.msg for g in box.got if g.rcpt_tos == [BOSS]]
    assert len(to_boss) == 1, r.stdout  # the corrected address gets the message, once
    assert to_boss[0]["Message-ID"].strip() == refused[typo] and to_boss[0]["To"] == BOSS
    assert _pmids(to_boss[0]) == set(pmids)  # with every item
    assert box.rcpts.count(typo) == 1 and box.rcpts.count(gone) == 1  # neither tried again
    st = json.loads(_cli(cfg, "status", "--json").stdout)
    assert st["outbox"]["refused"] == [] and st["outbox"]["queued"] == 0
    (weekly,) = st["digests"]
    assert (weekly["pending_events"], weekly["skipped_events"], weekly["failed_messages"]) == (0, 0, 0)
    r = _cli(cfg, "digest", "--retry-failed")
    assert r.returncode == 0 and "nothing to send" in r.stdout and len(box.got) == 2, r.stdout


def _db_now(db: str) -> datetime:
    if db.startswith("sqlite"):
        return datetime.utcnow()  # noqa: DTZ003 - SQLite's clock is its host's
    eng = sa.create_engine(db)
    with eng.connect() as c:
        now: datetime = c.execute(sa.text("select clock_timestamp() at time zone 'utc'")).scalar_one()
    eng.dispose()
    return now


def test_a_host_whose_clock_runs_10_minutes_fast_delays_no_retry_and_skips_no_event(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer], store_url: str
) -> None:
    """A `litwatch digest` on a host 10 minutes fast meets a 451: the retry time it
    records is a minute from now by the database's clock, not 11. It then sends the
    digest; a recipient added afterwards gets a paper polled right after (on a host
    whose clock is right), instead of starting 10 minutes in the future."""
    from litwatch.config import load
    from litwatch.service import Service, utcnow

    _add(eutils, 171, 2)
    box = MailBox(fail_data="451 4.3.0 try again later")
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=TEAM, db=store_url)
    _poll(cfg)
    fast = Service(load(cfg), now=lambda: utcnow() + timedelta(minutes=10))
    try:
        (res,) = fast.digest(["weekly"])
        assert res.error and not res.permanent, res
        (row,) = _rows(store_url)
        wait = _to_dt(row["next_attempt_at"]) - _db_now(store_url)
        print(f"\nretry time recorded by a host 10 min fast: in {wait.total_seconds():.0f} s")
        assert timedelta(seconds=30) < wait <= timedelta(minutes=1), wait
        box.fail_data = None
        assert [r.sent for r in fast.digest(["weekly"])] == [True]
    finally:
        fast.close()
    cfg.write_text(cfg.read_text().replace(f"to: [{TEAM}]", f"to: [{TEAM}, {BOSS}]"))  # a recipient added
    _add(eutils, 181, 1)
    _poll(cfg)
    r = _cli(cfg, "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    to_boss = [g.msg for g in box.got if g.rcpt_tos == [BOSS]]
    assert len(to_boss) == 1 and _pmids(to_boss[0]) == {"181"}, r.stdout


def _to_dt(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def test_552_too_large_is_split_without_losing_an_item(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    pmids = _add(eutils, 201, 8)
    sizes = MailBox()
    port = smtp_server(sizes).port  # how large the whole message is, to set the limit below it
    (tmp_path / "probe").mkdir()
    cfg = _cfg(tmp_path / "probe", eutils, port, to=TEAM)
    _poll(cfg)
    assert _cli(cfg, "digest").returncode == 0
    whole = len(sizes.got[0].msg.as_bytes())
    limit = int(whole * 0.8)  # the whole is too large; a half fits
    box = MailBox()
    port = smtp_server(box, data_size_limit=limit).port
    cfg = _cfg(tmp_path, eutils, port, to=TEAM)
    _poll(cfg)
    r = _cli(cfg, "digest")
    print(f"\n552 split: whole message {whole} bytes, server limit {limit}:\n{r.stdout}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "too large for the server, split into 2 messages" in r.stdout
    got = [g.msg for g in box.got]
    assert len(got) >= 2 and len({m["Message-ID"] for m in got}) == len(got)  # each part its own Message-ID
    seen = Counter(p for m in got for p in _pmids(m))
    assert seen == Counter(pmids), seen  # every item, once
    rows = _rows(_sqlite(tmp_path))
    assert [r["state"] for r in rows] == ["split"] + ["sent"] * len(got)
    assert sum(r["items"] for r in rows[1:]) == rows[0]["items"] == len(pmids)


# ----------------------------------------------------------------------------- recipients start now


def test_a_recipient_added_later_gets_only_newer_events(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    old = _add(eutils, 301, 3)
    box = MailBox()
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=TEAM)
    _poll(cfg)
    assert _cli(cfg, "digest").returncode == 0
    new = _add(eutils, 401, 2)
    _poll(cfg)
    cfg.write_text(cfg.read_text().replace(f"to: [{TEAM}]", f"to: [{TEAM}, {BOSS}]"))
    st = json.loads(_cli(cfg, "status", "--json").stdout)["digests"][0]
    assert (st["pending_events"], st["skipped_events"]) == (2, 3)
    r = _cli(cfg, "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    text = _cli(cfg, "status").stdout
    print("\n" + r.stdout + text)
    by = {rcpt: [_pmids(g.msg) for g in box.got if g.rcpt_tos == [rcpt]] for rcpt in (TEAM, BOSS)}
    assert by[TEAM] == [set(old), set(new)]
    assert by[BOSS] == [set(new)]  # not the digest's history
    assert "3 older events skipped" in text


def test_a_new_digests_first_mail_reaches_back_at_most_backfill(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """The default `backfill` (30d): events stored 40 days ago stay out of a new digest."""
    old = _add(eutils, 501, 4)
    box = MailBox()
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=TEAM)
    _poll(cfg)
    eng = sa.create_engine(_sqlite(tmp_path))
    with eng.begin() as c:  # as if litwatch had stored them 40 days ago, before the digest was configured
        c.execute(sa.text("update events set created_at = :t"), {"t": datetime.now() - timedelta(days=40)})
    eng.dispose()
    new = _add(eutils, 601, 2)
    _poll(cfg)
    st = json.loads(_cli(cfg, "status", "--json").stdout)["digests"][0]
    r = _cli(cfg, "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [_pmids(g.msg) for g in box.got] == [set(new)], (old, r.stdout)
    assert st["skipped_events"] == 4 and st["pending_events"] == 2


def test_backfill_is_validated(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = _cfg(tmp_path, eutils, 25, to=TEAM, extra="    backfill: a month\n")
    r = _cli(cfg, "check")
    assert (
        r.returncode == 2
        and "litwatch.yaml:27: digests[0].backfill:" in r.stderr
        and "'a month' is not an interval" in r.stderr
    )


# ----------------------------------------------------------------------------- a stale claim


class Holding(MailBox):
    """Holds the first message at DATA (the server has it, has not answered) until
    `release` is set; says when it is holding."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.holding.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 the client went away"
        return await super().handle_DATA(server, session, envelope)


def _killed_mid_send(tmp_path: Path, eutils: FakeEutils, box: Holding, port: int) -> tuple[Path, dict[str, Any]]:
    """`litwatch digest` SIGKILLed while the server holds its message at DATA."""
    cfg = _cfg(tmp_path, eutils, port, to=TEAM)
    cfg.write_text(cfg.read_text().replace("  timeout: 10\n", "  timeout: 1\n"))  # a claim holds 15 s
    _poll(cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "digest"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=daemon_env(),
    )
    assert box.holding.wait(30), "the digest never reached DATA"
    proc.send_signal(signal.SIGKILL)  # mid-send: the server has the message, no answer yet
    proc.wait()
    box.release.set()
    (row,) = _rows(_sqlite(tmp_path))
    assert row["state"] == "sending"
    return cfg, row


def test_a_sending_claim_of_a_killed_process_on_this_host_is_taken_over_at_once(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    pmids = _add(eutils, 701, 2)
    box = Holding()
    port = smtp_server(box).port
    cfg, row = _killed_mid_send(tmp_path, eutils, box, port)
    r = _cli(cfg, "digest")  # its process is gone: no need to wait for the claim to run out
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nclaim of a SIGKILLed process: sent again at once: {r.stdout.strip()}")
    (got,) = box.got
    assert got.msg["Message-ID"].strip() == row["message_id"] and _pmids(got.msg) == set(pmids)
    (after,) = _rows(_sqlite(tmp_path))
    assert (after["state"], after["attempts"]) == ("sent", 1)


def _as_pid_1(cfg: Path, *args: str) -> list[str]:
    """`litwatch --config cfg *args` as PID 1 of a new PID namespace, as in a container;
    SIGKILL to the `unshare` kills it too."""
    return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-m", "litwatch.cli",
            "--config", str(cfg), *args]  # fmt: skip


def _can_unshare() -> bool:
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root)")
def test_a_sending_claim_of_a_killed_pid_1_is_taken_over_at_once_by_the_next_pid_1(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """In a container litwatch is PID 1, before a SIGKILL and after the restart: the new
    PID 1 recognises the claim of the old one as a dead process's and sends at once,
    instead of taking it for its own live claim and waiting it out."""
    pmids = _add(eutils, 751, 2)
    box = Holding()
    port = smtp_server(box).port
    cfg = _cfg(tmp_path, eutils, port, to=TEAM)
    _poll(cfg)
    first = subprocess.Popen(
        _as_pid_1(cfg, "digest"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=daemon_env()
    )
    assert box.holding.wait(30), "the digest never reached DATA"
    first.send_signal(signal.SIGKILL)
    first.wait()
    box.release.set()
    (row,) = _rows(_sqlite(tmp_path))
    assert row["state"] == "sending" and row["owner"].split(":")[1] == "1", row["owner"]
    again = subprocess.run(_as_pid_1(cfg, "digest"), capture_output=True, text=True, env=daemon_env(), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "being sent by another litwatch process" not in again.stdout, again.stdout
    (got,) = box.got
    assert got.msg["Message-ID"].strip() == row["message_id"] and _pmids(got.msg) == set(pmids)
    assert [r["state"] for r in _rows(_sqlite(tmp_path))] == ["sent"]
    print(f"\nclaim of a SIGKILLed PID 1, taken over by the next PID 1 at once: {again.stdout.strip()}")


def test_a_sending_claim_of_another_host_holds_until_it_runs_out(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    pmids = _add(eutils, 801, 2)
    box = Holding()
    port = smtp_server(box).port
    cfg, row = _killed_mid_send(tmp_path, eutils, box, port)
    eng = sa.create_engine(_sqlite(tmp_path))
    with eng.begin() as c:  # as if the killed process had run on another host
        c.execute(sa.text("update outbox set owner = 'elsewhere.example.org:4242:abcdef'"))
    eng.dispose()
    r = _cli(cfg, "digest")  # that host may still be talking to the server: nobody else sends it
    assert r.returncode == 0 and box.got == [], r.stdout + r.stderr
    assert "being sent by another litwatch process" in r.stdout and "nothing to send" not in r.stdout
    assert json.loads(_cli(cfg, "status", "--json").stdout)["outbox"]["sending"] == 1
    eng = sa.create_engine(_sqlite(tmp_path))
    with eng.begin() as c:  # 15.5 s later, by the database's clock: the claim (15 s) runs out
        c.execute(sa.text("update outbox set until = datetime(until, '-15.5 seconds')"))
    eng.dispose()
    r = _cli(cfg, "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nclaim of another host: sent again once it ran out: {r.stdout.strip()}")
    (got,) = box.got
    assert got.msg["Message-ID"].strip() == row["message_id"] and _pmids(got.msg) == set(pmids)
    (after,) = _rows(_sqlite(tmp_path))
    assert (after["state"], after["attempts"]) == ("sent", 1)


# ----------------------------------------------------------------------------- three digests and a daemon


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("smtp", [{"delay": 0.3}], indirect=True, ids=["smtp-0.3s"])  # each DATA takes 0.3 s
def test_three_digests_beside_a_daemon_send_one_copy_per_recipient(
    tmp_path: Path, eutils: FakeEutils, smtp: SmtpServer, backend: str
) -> None:
    if backend == "postgresql":
        from helpers import pg_schema_url

        gen: Iterator[str] | None = pg_schema_url()
        assert gen is not None
        db = next(gen)
    else:
        gen, db = None, _sqlite(tmp_path)
    try:
        _three_digests(tmp_path, eutils, smtp.box, smtp.port, db)
    finally:
        if gen is not None:
            gen.close()


def _three_digests(tmp_path: Path, eutils: FakeEutils, box: MailBox, port: int, db: str) -> None:
    recipients = ["r1@example.org", "r2@example.org", "r3@example.org"]
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n    every: 1h\n  - name: myeloma\n    pubmed: myeloma\n    every: 1h\n"
    digests = (
        f"digests:\n  - name: weekly\n    to: [{', '.join(recipients)}]\n    queries: [trail, myeloma]\n"
        "    every: 2s\n    max_items: 4\n"
    )
    cfg = basic_config(tmp_path, eutils.url, db=db, mail=smtp_mail(port, timeout=10), queries=queries, digests=digests)
    cfg.write_text(cfg.read_text().replace("pubmed:\n", "pubmed:\n  notices: false\n  api_key: k\n", 1))
    published = _add(eutils, 1001, 10)
    _poll(cfg)
    run = Run(cfg, tmp_path / "run.log")
    codes: list[int] = []
    outputs: list[str] = []
    try:
        run.wait_log("run started", timeout=30)
        for round_ in range(3):
            if round_:
                published += _add(eutils, 2001 + 100 * round_, 6, term="myeloma")
                _poll(cfg)
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "digest"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=daemon_env(),
                )
                for _ in range(3)
            ]
            for p in procs:
                out, err = p.communicate(timeout=180)
                codes.append(p.returncode)
                outputs.append(out + err)

        def everything_sent() -> bool:
            eng = sa.create_engine(db)
            with eng.connect() as c:
                states = dict(c.execute(sa.text("select state, count(*) from outbox group by state")).all())
            eng.dispose()
            return set(states) == {"sent"}

        wait_for(everything_sent, 60, "every message sent")
        rc, _ = run.stop()
        assert rc == 0, run.log
    finally:
        if run.proc.poll() is None:
            run.kill()
    got = box.by_recipient
    copies = Counter((rcpt, str(m["Message-ID"]).strip()) for rcpt, m in got)
    items = Counter((rcpt, pmid) for rcpt, m in got for pmid in _pmids(m))
    expected = Counter({(rcpt, pmid): 1 for rcpt in recipients for pmid in published})
    daemon_mails = len(re.findall(r"digest name=weekly messages=[1-9]", run.log))
    print(
        f"\nthree digests beside a daemon ({db.split(':')[0]}): exit codes {sorted(Counter(codes).items())}, "
        f"{len(got)} messages received, {len(copies)} distinct (recipient, Message-ID), "
        f"max copies {max(copies.values())}, {sum(items.values())} items for {len(expected)} expected, "
        f"daemon digest runs that saw mail: {daemon_mails}"
    )
    assert all(c in (0, 1) for c in codes), (codes, [o for o, c in zip(outputs, codes, strict=True) if c not in (0, 1)])
    assert max(copies.values()) == 1, [k for k, n in copies.items() if n > 1]  # one copy per recipient
    assert items == expected  # every event to every recipient, once


# ----------------------------------------------------------------------------- migration


def test_upgrade_keeps_refusals_and_the_recipients_start(store_url: str) -> None:
    """0002 → 0006_outbox_states: a message marked `failed` becomes `refused` with its
    reply (so `--retry-failed` finds it), and recipients that were mailed before keep
    every event still waiting for them."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    from litwatch.store import Store

    eng = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("litwatch.store") / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        for i, (to, state) in enumerate([(TEAM, "sent"), (BOSS, "failed")]):
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (digest, recipient, message_id, subject, mime, items, state, attempts, "
                    "last_error, created_at) VALUES ('weekly', :to, :mid, 's', :mime, 1, :state, 1, :err, :t)"
                ),
                {
                    "to": to,
                    "mid": f"<{i}@x>",
                    "mime": b"m",
                    "state": state,
                    "err": "550 unknown user",
                    "t": "2026-11-01",
                },
            )
    eng.dispose()
    store = Store(store_url)
    try:
        with store.transaction() as tx:
            (refused,) = store.refused_messages(tx, "weekly")
            starts = {to: store.recipient_since(tx, "weekly", to) for to in (TEAM, BOSS, "new@example.org")}
    finally:
        store.close()
    assert (refused.recipient, refused.reply) == (BOSS, "550 unknown user")
    assert starts == {TEAM: datetime(1970, 1, 1), BOSS: datetime(1970, 1, 1), "new@example.org": None}
