"""Killing `litwatch digest` (SIGKILL) at random moments while it talks to a slow SMTP
server loses no event and never puts one event into two different messages: the
outbox row and its deliveries commit before sending, and a message that may have gone
out is re-sent as it was, with the same Message-ID (at least once on the wire)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, MailBox, SmtpServer, basic_config, invoke, smtp_mail
from helpers.fake_eutils import FakeEutils

PUBMED_URL = re.compile(r"https://pubmed\.ncbi\.nlm\.nih\.gov/(\d+)/")
TERMS = {"a": "TRAIL", "b": "myeloma", "c": "aponermin"}  # query name: what it searches
DIGESTS = {  # digest: (recipients, queries)
    "d1": (["r1@example.org", "r2@example.org"], ["a", "b"]),
    "d2": (["r3@example.org"], ["b", "c"]),
    "d3": (["r4@example.org", "r5@example.org"], ["a", "c"]),
}
KILLS = {"sqlite": 50, "postgresql": 15}  # PostgreSQL: the same at a quarter of the cost


@pytest.fixture
def slow_smtp(smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """Accepts every message after 0.05-0.2 s (seeded): what the recipients got."""
    rng = random.Random(11)
    return smtp_server(MailBox(delay=lambda: rng.uniform(0.05, 0.2)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_digest_loses_and_duplicates_nothing(
    tmp_path: Path, eutils: FakeEutils, slow_smtp: SmtpServer, backend: str
) -> None:
    if backend == "postgresql":
        from helpers import pg_schema_url

        gen: Iterator[str] | None = pg_schema_url()
        assert gen is not None
        db = next(gen)
    else:
        gen = None
        db = f"sqlite:///{tmp_path / 'litwatch.db'}"
    try:
        _run(tmp_path, eutils, slow_smtp.box, slow_smtp.port, db, KILLS[backend])
    finally:
        if gen is not None:
            gen.close()


def _run(tmp_path: Path, eutils: FakeEutils, box: MailBox, port: int, db: str, target: int) -> None:
    rng = random.Random(5)
    papers: dict[str, set[str]] = {}  # pmid: the queries matching it

    def publish(n: int, *, first: bool = False) -> None:
        for _ in range(n):
            pmid = str(300_000 + len(papers))
            queries = set(rng.sample(sorted(TERMS), k=1 if rng.random() < 0.8 else 2))
            papers[pmid] = queries
            edat = TODAY - timedelta(days=rng.randrange(5)) if first else TODAY
            eutils.add(pmid, terms={TERMS[q] for q in queries}, edat=edat, title=f"Paper {pmid}")

    def poll() -> None:
        r = invoke("--config", str(cfg), "poll")
        assert r.returncode == 0, r.stdout + r.stderr

    queries = "queries:\n" + "".join(f"  - name: {q}\n    pubmed: {t}\n" for q, t in TERMS.items())
    digests = "digests:\n" + "".join(
        f"  - name: {d}\n    to: [{', '.join(to)}]\n    queries: [{', '.join(qs)}]\n    max_items: 5\n"
        for d, (to, qs) in DIGESTS.items()
    )
    cfg = basic_config(tmp_path, eutils.url, db=db, mail=smtp_mail(port, timeout=10), queries=queries, digests=digests)
    # the fake does not care; a key lifts the client's rate limit from 3 to 10 requests/s
    cfg.write_text(cfg.read_text().replace("  timeout: 5\n", "  timeout: 5\n  api_key: test\n"))
    publish(60, first=True)  # a backlog: max_items 5 spreads it over many mails and runs
    poll()

    eng = sa.create_engine(db)
    kills = runs = left_queued = 0
    while kills < target:
        runs += 1
        assert runs < 4 * target, "litwatch digest keeps finishing before it can be killed"
        if runs % 5 == 0:  # new events between kills
            publish(rng.randint(10, 20))
            poll()
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "digest"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = started + rng.uniform(0.5, 2.0)  # starting up takes ~0.6 s of that
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            with eng.connect() as c:  # the kills that matter: after queueing, before marking sent
                queued = c.execute(sa.text("select count(*) from outbox where state = 'queued'")).scalar_one()
            left_queued += queued > 0
        proc.wait()

    for _ in range(60):  # then runs left alone until nothing is left
        r = invoke("--config", str(cfg), "digest")
        assert r.returncode == 0, r.stdout + r.stderr
        if "nothing to send" in r.stdout:
            break
    else:
        pytest.fail("litwatch digest still has mail to send after 60 uninterrupted runs")
    with eng.connect() as c:
        states = {state: n for state, n in c.execute(sa.text("select state, count(*) from outbox group by state"))}
    eng.dispose()
    assert set(states) == {"sent"}, states

    # what the recipients got: (digest, recipient, pmid) -> the Message-IDs carrying it
    carried: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    texts: dict[tuple[str, str], set[str]] = defaultdict(set)
    got = box.by_recipient
    for rcpt, msg in got:
        digest, mid = str(msg["X-Litwatch-Digest"]), str(msg["Message-ID"]).strip()
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        texts[(rcpt, mid)].add(text)
        for pmid in set(PUBMED_URL.findall(text)):
            carried[(digest, rcpt, pmid)].add(mid)
    expected = {
        (d, rcpt, pmid)
        for d, (to, qs) in DIGESTS.items()
        for rcpt in to
        for pmid, matched in papers.items()
        if matched & set(qs)
    }
    lost = expected - set(carried)
    duplicated = {k: mids for k, mids in carried.items() if len(mids) > 1}
    resent = len(got) - len(texts)
    if resent:
        print("\nre-sent with the same Message-ID (at least once on the wire):", end="")
        counts = Counter((rcpt, str(m["Message-ID"]).strip()) for rcpt, m in got)
        for (rcpt, mid), n in sorted(counts.items()):
            if n > 1:
                print(f"\n  {rcpt} {mid} x{n}", end="")
    recipients = sum(len(to) for to, _ in DIGESTS.values())
    print(
        f"\ndigest kill test ({db.split(':')[0]}): {kills} kills in {runs} runs ({left_queued} left mail queued), "
        f"{len(texts)} messages, {len(papers)} events x {recipients} recipients ({len(expected)} deliveries), "
        f"{len(lost)} lost, {len(duplicated)} duplicated, {resent} resent with same Message-ID"
    )
    assert not lost, sorted(lost)[:10]
    assert not duplicated, sorted(duplicated.items())[:10]
    assert set(carried) == expected  # and nobody got what is not theirs
    assert all(len(variants) == 1 for variants in texts.values())  # a re-send is the same message
