"""Benchmark 3: a whole poll against the fake E-utilities server (tests/helpers/fake_eutils.py,
on 127.0.0.1): 20 queries, 5,000 unique PMIDs (1,000 of them matched by two queries),
~10 KB efetch records from bench/corpus.py; SQLite and PostgreSQL; at NCBI's real
limit (3 requests/s) and with an API key set (10 requests/s). Then a second poll where
nothing changed. Each scenario runs in its own interpreter (the rate limiter is
process-wide).

    python bench/bench_poll.py [--dbs sqlite,postgresql] [--rates 3,10]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from common import PG_URL, run_child, table

QUERIES = 20
UNIQUE = 5_000
SHARED = 1_000  # records matched by two queries
BATCH = 500  # litwatch's default efetch batch (pubmed.batch_size)


def seed(fake: object) -> dict[str, int]:
    """5,000 records over 20 queries; returns hits per query."""
    from corpus import PMID_MARK, articles

    today = date.today()
    per_query: dict[str, int] = {}
    xml = articles(UNIQUE)
    for i in range(UNIQUE):
        pmid = str(36_000_000 + i)
        q = i % QUERIES
        terms = {f"term{q:02d}"}
        if i < SHARED:
            terms.add(f"term{(q + 1) % QUERIES:02d}")
        for t in terms:
            per_query[t] = per_query.get(t, 0) + 1
        fake.add(  # type: ignore[attr-defined]
            pmid,
            terms=terms,
            edat=today - timedelta(days=1 + i % 20),
            xml=xml[i].decode().replace(PMID_MARK.decode(), pmid),
        )
    return per_query


def config(tmp: Path, url: str, db: str, rate: int) -> Path:
    key = "\n  api_key: bench-not-a-real-key" if rate == 10 else ""
    queries = "".join(f"  - name: q{q:02d}\n    pubmed: term{q:02d}\n" for q in range(QUERIES))
    body = f"""database: "{db}"
pubmed:
  base_url: {url}
  email: bench@example.org
  timeout: 60{key}
mail:
  transport: file
  directory: {tmp / "outbox"}
  from: "litwatch <litwatch@example.org>"
queries:
{queries}"""
    path = tmp / "litwatch.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def pg_schema() -> tuple[str, str]:
    import sqlalchemy as sa

    schema = "bench_" + uuid.uuid4().hex[:10]
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    eng.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    import sqlalchemy as sa

    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


def child(db_kind: str, rate: int) -> None:
    import sqlalchemy as sa

    from helpers.fake_eutils import FakeEutils
    from litwatch.config import load
    from litwatch.service import Service

    fake = FakeEutils().start()
    per_query = seed(fake)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        schema = ""
        if db_kind == "sqlite":
            db = f"sqlite:///{tmp / 'litwatch.db'}"
        else:
            db, schema = pg_schema()
        try:
            svc = Service(load(config(tmp, fake.url, db, rate)))
            out: dict[str, object] = {"db": db_kind, "rate": rate, "hits": sum(per_query.values())}
            for label in ("first", "second"):
                fake.requests.clear()
                t = time.perf_counter()
                results = svc.poll()
                wall = time.perf_counter() - t
                errors = [r.error for r in results if r.error]
                if errors:
                    raise SystemExit(f"poll failed: {errors[:3]}")
                reqs = list(fake.requests)
                out[label] = {
                    "wall": wall,
                    "esearch": sum(1 for r in reqs if r.utility == "esearch"),
                    "efetch": sum(1 for r in reqs if r.utility == "efetch"),
                    "new": sum(r.new for r in results),
                    "events": sum(r.events for r in results),
                }
            with svc.store.engine.connect() as c:
                out["rows"] = {
                    t: c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("records", "versions", "hits", "events")
                }
            svc.close()
        finally:
            fake.stop()
            if schema:
                drop_schema(schema)
    print(json.dumps(out))


def limiter_floor(n: int, rate: int) -> float:
    """Least wall time the sliding-window limiter allows for n requests."""
    return max(0.0, math.ceil(n / rate) - 1) * 1.02


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--dbs", default="sqlite,postgresql")
    ap.add_argument("--rates", default="3,10")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return ""
    runs = []
    for db in args.dbs.split(","):
        for rate in (int(r) for r in args.rates.split(",")):
            runs.append(run_child([__file__, "--child", db, str(rate)], timeout=1200))
    min_first = QUERIES + math.ceil(UNIQUE / BATCH)
    rows = []
    for r in runs:
        for label in ("first", "second"):
            p = r[label]
            n = p["esearch"] + p["efetch"]
            floor = limiter_floor(n, r["rate"])
            minimum = min_first if label == "first" else QUERIES
            rows.append(
                [
                    r["db"],
                    f"{r['rate']}/s" + (" (API key)" if r["rate"] == 10 else ""),
                    label,
                    p["wall"],
                    f"{p['esearch']} + {p['efetch']} = {n}",
                    f"{minimum} ({n / minimum:.2f}×)",
                    floor,
                    p["wall"] - floor,
                    p["new"] if label == "first" else p["new"],
                    p["events"],
                ]
            )
    rows_written = runs[0]["rows"]
    note = (
        f"{QUERIES} queries, {UNIQUE:,} unique PMIDs ({runs[0]['hits']:,} query hits), efetch batch {BATCH}. "
        f"Minimum requests: first poll 1 esearch per query + ceil({UNIQUE:,}/{BATCH}) efetch = {min_first}; "
        f"second poll (nothing changed) 1 esearch per query = {QUERIES}. Limiter floor = the least time "
        "the 3/s or 10/s sliding window allows for that many requests; 'beyond' = wall − floor = "
        "litwatch's own work (parse, diff, store) that the limiter does not hide. "
        f"Rows written by the first poll: {', '.join(f'{k} {v:,}' for k, v in rows_written.items())}; "
        "the second poll writes no record, version or event."
    )
    text = table(
        "Whole poll against the fake E-utilities server",
        [
            "db",
            "rate limit",
            "poll",
            "wall s",
            "requests (esearch + efetch)",
            "minimum",
            "limiter floor s",
            "beyond s",
            "new records",
            "events",
        ],
        rows,
        note=note,
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
