"""Requests per poll cycle against the minimum (issue 15): a first cycle and a quiet
cycle (a day later, nothing changed) of 8 and of 20 PubMed queries whose results
overlap, counted from the fake E-utilities server's request log (tests/helpers/fake_eutils.py
on 127.0.0.1), next to the fewest requests that can do the same work:

- first cycle: one esearch per query + efetch of the union of the PMIDs, each once,
  in batches of 500 (no notice search is needed: the records fetched now already
  carry their notices, and litwatch's first notice poll only sets its watermark);
- quiet cycle: one esearch per query + one notice search.

Each PMID is matched by two queries, every third by three (75 PMIDs per query in the
union: 600 for 8 queries, 1,500 for 20); ~10 KB efetch records from bench/corpus.py;
SQLite; API-key rate (10/s). litwatch is driven through `Service(settings,
now=clock).poll()` with an injected clock, so the quiet cycle is a real next day.

    python bench/bench_cycle.py [--queries 8,20] [--per-query 75]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from common import table

BATCH = 500  # efetch batch (litwatch's pubmed.batch_size default, NCBI's advice)
DAY0 = datetime(2026, 11, 20, 12, 0, 0)


def scenario(queries: int, per_query: int) -> dict[str, Any]:
    from corpus import PMID_MARK, articles

    from helpers.fake_eutils import FakeEutils
    from litwatch.config import load
    from litwatch.service import Service

    union = queries * per_query
    fake = FakeEutils().start()
    xml = articles(union)
    hits = 0
    for i in range(union):
        pmid = str(36_000_000 + i)
        terms = {f"term{i % queries:02d}", f"term{(i + 1) % queries:02d}"}
        if i % 3 == 0:
            terms.add(f"term{(i + 3) % queries:02d}")
        hits += len(terms)
        fake.add(
            pmid,
            terms=terms,
            edat=DAY0.date() - timedelta(days=1 + i % 20),
            xml=xml[i].decode().replace(PMID_MARK.decode(), pmid),
        )
    out: dict[str, Any] = {"queries": queries, "union": union, "hits": hits}
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            cfg = tmp / "litwatch.yaml"
            cfg.write_text(
                f'database: "sqlite:///{tmp / "litwatch.db"}"\n'
                f"pubmed:\n  base_url: {fake.url}\n  email: bench@example.org\n"
                "  api_key: bench-not-a-real-key\n  timeout: 60\n"
                f"mail:\n  transport: file\n  directory: {tmp / 'outbox'}\n"
                "queries:\n" + "".join(f"  - name: q{q:02d}\n    pubmed: term{q:02d}\n" for q in range(queries)),
                encoding="utf-8",
            )
            at = [DAY0]
            now: Callable[[], datetime] = lambda: at[0]  # noqa: E731
            svc = Service(load(cfg), now=now)
            try:
                for label, day in (("first", 0), ("quiet", 1)):
                    at[0] = DAY0 + timedelta(days=day)
                    fake.requests.clear()
                    t = time.perf_counter()
                    results = svc.poll()
                    wall = time.perf_counter() - t
                    errors = [r.error for r in results if getattr(r, "error", None)]
                    if errors:
                        raise SystemExit(f"poll failed: {errors[:3]}")
                    reqs = list(fake.requests)
                    out[label] = {
                        "wall": wall,
                        "esearch": sum(1 for r in reqs if r.utility == "esearch"),
                        "efetch": sum(1 for r in reqs if r.utility == "efetch"),
                        "efetched": sum(_ids_asked(fake, r.params) for r in reqs if r.utility == "efetch"),
                    }
            finally:
                svc.close()
    finally:
        fake.stop()
    return out


def _ids_asked(fake: Any, params: dict[str, str]) -> int:
    """PMIDs one efetch asked for: its id list, or its slice of a history-server result."""
    if "id" in params:
        return len([i for i in params["id"].split(",") if i])
    ids = fake.histories.get(params.get("WebEnv", ""), [])
    start = int(params.get("retstart", "0"))
    return len(ids[start : start + int(params.get("retmax", "20"))])


def minimum(label: str, queries: int, union: int) -> tuple[int, str]:
    if label == "first":
        return queries + math.ceil(union / BATCH), f"{queries} + {math.ceil(union / BATCH)}"
    return queries + 1, f"{queries} + 1"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", default="8,20", help="comma-separated query counts")
    ap.add_argument("--per-query", type=int, default=75, help="PMIDs in the union per query")
    args = ap.parse_args(argv)
    rows = []
    for q in (int(x) for x in args.queries.split(",") if x):
        r = scenario(q, args.per_query)
        for label in ("first", "quiet"):
            p = r[label]
            n = p["esearch"] + p["efetch"]
            least, how = minimum(label, q, r["union"])
            rows.append(
                [
                    q,
                    f"{r['union']:,} ({r['hits']:,} hits)",
                    label,
                    f"{p['esearch']} + {p['efetch']} = {n}",
                    f"{least} ({how})",
                    f"{n / least:.2f}×",
                    p["efetched"],
                    p["wall"],
                ]
            )
    text = table(
        "Requests per poll cycle against the minimum",
        [
            "queries",
            "PMIDs (query hits)",
            "cycle",
            "litwatch (esearch + efetch)",
            "minimum",
            "litwatch / minimum",
            "PMIDs efetched",
            "wall s",
        ],
        rows,
        note=f"Counted from the fake server's request log. Minimum: first cycle = one esearch per query + "
        f"ceil(union / {BATCH}) efetch (each PMID once, shared across the queries that found it; no notice "
        "search, as the fetched records carry their notices); quiet cycle (next day, nothing changed) = one "
        "esearch per query + one notice search. 'PMIDs efetched' counts the ids each efetch asked for "
        "(by id, or its slice of a history-server result): the minimum is the union, once. Wall time at the "
        "API-key rate (10/s), SQLite, in-process; noisy on a shared machine.",
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
