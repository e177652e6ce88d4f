"""Benchmark 5: rendering a 1,000-item digest, through the real pipeline: 1,000
records stored on SQLite (900 new papers, then 60 of them re-fetched with a new
title and abstract → updates, 40 with an erratum → errata), then what
`litwatch digest` does per recipient: select the pending events, group them, render
the text part, render the HTML part and inline its CSS (css-inline), build the MIME
message. Best of N, each step timed on its own.

    python bench/bench_digest.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import table

from litwatch.records import Link


def setup(tmp: Path) -> tuple[Any, Any]:
    from corpus import build

    from litwatch.config import load
    from litwatch.parse.pubmed import parse_pubmed
    from litwatch.service import Service

    cfg = tmp / "litwatch.yaml"
    cfg.write_text(
        f'database: "sqlite:///{tmp / "lw.db"}"\npubmed:\n  email: bench@example.org\nmail:\n  transport: file\n'
        f'  directory: {tmp / "outbox"}\n  from: "litwatch <litwatch@example.org>"\n'
        "queries:\n  - name: q\n    pubmed: x\n"
        "digests:\n  - name: weekly\n    to: [team@example.org]\n    queries: [q]\n    max_items: 1000\n",
        encoding="utf-8",
    )
    svc = Service(load(cfg))
    with open(build(1000), "rb") as f:
        recs = list(parse_pubmed(f))[:900]
    t0 = datetime(2026, 1, 1)
    with svc.store.transaction() as tx:
        saved = svc.save_records(tx, recs, t0)
        svc.emit_for_matches(tx, "q", {s.record.key: s.record_id for s in saved}, t0, approvals_source=False)
    second = []
    for i, r in enumerate(recs[:100]):
        if i < 60:
            second.append(dataclasses.replace(r, title=r.title + " (revised)", abstract=r.abstract + " Corrected."))
        else:
            second.append(dataclasses.replace(r, links=(*r.links, Link("ErratumIn", str(39_000_000 + i), "Erratum"))))
    t1 = datetime(2026, 1, 2)
    with svc.store.transaction() as tx:
        svc.emit_for_changes(tx, svc.save_records(tx, second, t1), t1)
    return svc, svc.settings.digest("weekly")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from litwatch.digest import group
    from litwatch.mail import build_message

    with tempfile.TemporaryDirectory() as d:
        svc, dg = setup(Path(d))
        now = datetime(2026, 1, 3)
        best: dict[str, float] = {}
        sizes: dict[str, int] = {}

        def step(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            out = fn(*args, **kw)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            return out

        r = svc.renderer
        for _ in range(args.repeat):
            with svc.store.transaction() as tx:
                pending = step(
                    "select pending events (SQLite)",
                    svc.store.pending_events,
                    tx,
                    queries=dg.queries,
                    kinds=dg.events,
                    digest=dg.name,
                    recipient=dg.to[0],
                )
            data = step("group", group, dg.name, pending, max_items=dg.max_items, now=now, queries=dg.queries)
            text = step("text part (Jinja2)", r.text, data)
            raw = step("HTML part (Jinja2)", r.env.get_template("digest.html").render, d=data)
            html = step("CSS inlining (css-inline)", r._inliner.inline, raw)
            msg = step(
                "MIME message",
                build_message,
                mail=svc.settings.mail,
                digest=dg.name,
                recipient=dg.to[0],
                subject=r.subject(data),
                text=text,
                html=str(html),
            )
            sizes = {
                "events": len(pending),
                "items": data.items,
                "text": len(text),
                "html": len(str(html)),
                "mime": len(msg.as_bytes()),
            }
        svc.close()
    total = sum(best.values())
    rows = [[k, v * 1000, f"{v / total:.0%}"] for k, v in best.items()]
    rows.append(["total", total * 1000, "100%"])
    text = table(
        f"Digest: {sizes['items']:,} items from {sizes['events']:,} pending events, best of {args.repeat}",
        ["step", "ms", "share"],
        rows,
        note=f"Text part {sizes['text'] / 1e3:,.0f} KB, HTML part {sizes['html'] / 1e3:,.0f} KB after inlining, "
        f"MIME message {sizes['mime'] / 1e3:,.0f} KB. Rendering is done once per recipient.",
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
