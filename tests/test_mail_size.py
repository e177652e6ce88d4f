"""Mail that arrives whole (issue 26): Gmail clips an HTML body over ~102 KB. A 500-item
digest goes out as numbered parts, every part (HTML and text, decoded) at most 100 KB,
each with its footer, every item in exactly one part."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import sqlalchemy as sa

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils

LIMIT = 100_000
ITEMS = 500


def test_a_500_item_digest_goes_out_in_whole_numbered_parts(tmp_path: Path, eutils: FakeEutils) -> None:
    for i in range(ITEMS):
        eutils.add(
            str(10_000 + i),
            terms="TRAIL",
            edat=TODAY - timedelta(days=1),
            title=f"TRAIL study number {i} on receptor agonists in refractory disease",
            authors=("Smith J", "Doe A", "Roe B", "Poe C"),
            doi=f"10.1/trail.{i}",
        )
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: trail\n    pubmed: TRAIL\n",
        digests="digests:\n  - name: weekly\n    to: [a@example.org]\n    queries: [trail]\n    max_items: 500\n",
    )
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    mails = []
    for f in (tmp_path / "outbox").glob("*.eml"):
        msg = message_from_bytes(f.read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        mails.append(msg)
    sizes = []
    seen: Counter[str] = Counter()
    for msg in mails:
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        sizes.append((str(msg["Subject"]), len(html.encode()), len(text.encode())))
        assert 'Digest "weekly" for queries trail' in text and "Sent by litwatch" in text  # the footer, whole
        assert "Sent by litwatch" in html
        seen.update(re.findall(r"https://pubmed\.ncbi\.nlm\.nih\.gov/(\d+)/", text))
    print("\n" + "\n".join(f"{s}: HTML {h:,} B, text {t:,} B" for s, h, t in sorted(sizes)))
    assert len(mails) > 1
    assert all(h <= LIMIT and t <= LIMIT for _, h, t in sizes), sizes
    assert sorted(seen) == sorted(str(10_000 + i) for i in range(ITEMS))  # every item ...
    assert set(seen.values()) == {1}  # ... once
    n = len(mails)
    assert sorted(s for s, _, _ in sizes) == sorted(s for s, _, _ in sizes if re.search(rf"\((\d+) of {n}\)$", s)), (
        "each part numbered"
    )
    assert {int(re.search(r"\((\d+) of", s).group(1)) for s, _, _ in sizes} == set(range(1, n + 1))  # type: ignore[union-attr]
    assert len({m["Message-ID"] for m in mails}) == n
    # one outbox row per part, every event bound once
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'litwatch.db'}")
    with engine.connect() as c:
        rows = c.execute(sa.text("select count(*), sum(items) from outbox where state = 'sent'")).one()
        bound = c.execute(sa.text("select count(*), count(distinct event_id) from deliveries")).one()
    engine.dispose()
    assert tuple(rows) == (n, ITEMS) and tuple(bound) == (ITEMS, ITEMS)
    assert invoke("--config", str(cfg), "digest").stdout.strip() == "nothing to send"
