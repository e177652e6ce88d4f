"""Scale benchmark (issue 28): a team's database — 1,000 queries, 100,000 records,
1,000,000 versions and events, 100,000 DOIs at full size (`--scale 1`) — on SQLite and
PostgreSQL, and what each operation costs on it: a quiet cycle of every query (the
same day, and the next), a digest of 1,000 items, `status`, `history`, the Crossref
re-check plan. Each size is measured, then again with the stored history doubled
(`--scale s` and `2s`): the ratio says what grows with history.

The database is generated with bulk inserts (SQLAlchemy Core executemany), as a steady
state: every query has matched records for years, each record has 10 versions and 10
events, all delivered to one digest but the last 1,000; the newest 6,000 records are
the queries' day of overlap (3 a query a day, entered today and yesterday), fetched
today. The fake E-utilities server (tests/helpers/fake_eutils.py, a term index added
here) runs in a child process and serves those 6,000; its log gives the requests and
the bytes of every answer. Peak memory is tracemalloc's peak of Python allocations
during the operation (a second, traced run). The client's rate is lifted for the
timings (`--ncbi-rate` runs the same-day cycle at NCBI's 10/s with an API key).

    python bench/bench_scale.py --scale 0.1,0.2 [--backends sqlite,postgresql] [--ncbi-rate]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import date, datetime, timedelta
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from common import PG_URL, guard_network, table

QUERIES = 1_000
FULL_RECORDS = 100_000
VERSIONS = 10  # per record: 1,000,000 versions and events at full size
PER_DAY = 3  # new records a query a day
NOW = datetime(2026, 11, 20, 15, 0)  # 10:00 in New York
DAY = date(2026, 11, 20)
SPAN = timedelta(days=5 * 365)  # the history of the full size; it doubles with the records
DIGEST_ITEMS = 1_000
REAL_RECORD_BYTES = 9_900  # a real PubMed efetch record (bench/RESULTS.md, parsing)
CHUNK = 5_000


# ----------------------------------------------------------------------------- the fake, in a child


def _fake_main(pipe: Pipe, overlap: list[tuple[str, str, str]]) -> None:
    from helpers.fake_eutils import FakeEutils, _inner, _or_terms

    class IndexedFake(FakeEutils):
        """The fake with a term index: 1,000 searches over 6,000 records each would
        time the fake, not litwatch. Searches run one at a time (a cycle's search
        phase), so narrowing `records` for one search is safe here."""

        index: dict[str, set[str]]

        def _search(self, params: dict[str, str]) -> bytes:
            term = _inner(params.get("term", ""))
            ids = set().union(*(self.index.get(t, set()) for t in {term, *_or_terms(term)}))
            everything = self.records
            self.records = {i: everything[i] for i in ids}
            try:
                return super()._search(params)
            finally:
                self.records = everything

    fake = IndexedFake()
    fake.index = {}
    for pmid, term, day in overlap:
        fake.add(pmid, terms=term, edat=date.fromisoformat(day), title=f"Paper {pmid}", doi=f"10.1000/bench.{pmid}")
        fake.index.setdefault(term, set()).add(pmid)
    fake.start()
    pipe.send(fake.url)
    while True:
        cmd = pipe.recv()
        if cmd == "stop":
            fake.close()
            return
        since = int(cmd)
        reqs = fake.requests[since:]
        pipe.send(
            {
                "n": len(fake.requests),
                "requests": len(reqs),
                "bytes": sum(r.sent for r in reqs),
                "esearch": sum(1 for r in reqs if r.utility == "esearch"),
                "efetch": sum(1 for r in reqs if r.utility == "efetch"),
                "mdat": sum(1 for r in reqs if r.utility == "esearch" and r.params.get("datetype") == "mdat"),
                "efetch_bytes": sum(r.sent for r in reqs if r.utility == "efetch"),
                "fetched": sum(_ids_asked(fake, r) for r in reqs if r.utility == "efetch"),
            }
        )


def _ids_asked(fake: Any, r: Any) -> int:
    if "WebEnv" in r.params:
        start, n = int(r.params.get("retstart", "0")), int(r.params.get("retmax", "20"))
        return len(fake.histories.get(r.params["WebEnv"], [])[start : start + n])
    return len([i for i in r.params.get("id", "").split(",") if i])


class Fake:
    def __init__(self, overlap: list[tuple[str, str, str]]) -> None:
        self.pipe, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(target=_fake_main, args=(child, overlap), daemon=True)
        self.proc.start()
        self.url: str = self.pipe.recv()
        self.mark = 0

    def since_mark(self) -> dict[str, int]:
        self.pipe.send(self.mark)
        out: dict[str, int] = self.pipe.recv()
        self.mark = out["n"]
        return out

    def close(self) -> None:
        self.pipe.send("stop")
        self.proc.join(10)


# ----------------------------------------------------------------------------- the database


def overlap_of(n_records: int) -> list[tuple[int, str]]:
    """(record index, its New York entry day) of the newest records: the overlap."""
    n = QUERIES * PER_DAY * 2
    return [
        (i, (DAY - timedelta(days=1 if i < n_records - n // 2 else 0)).isoformat())
        for i in range(n_records - n, n_records)
    ]


def pmid(i: int) -> str:
    return str(10_000_000 + i)


def build(url: str, n_records: int) -> float:
    """The steady-state database of `n_records` records; returns seconds taken."""
    import sqlalchemy as sa

    from helpers.fake_eutils import article_xml
    from litwatch.events import fingerprint
    from litwatch.parse.pubmed import parse_pubmed
    from litwatch.store import Store
    from litwatch.store.keys import key_hash
    from litwatch.store.schema import (
        deliveries,
        digest_recipients,
        digest_state,
        events,
        hits,
        outbox,
        poll_state,
        records,
        versions,
    )

    t0 = time.perf_counter()
    store = Store(url)
    span = SPAN * (n_records / FULL_RECORDS)
    start = NOW - span
    recent = dict(overlap_of(n_records))
    checked = NOW - timedelta(hours=1)

    def fields(i: int) -> tuple[str, str]:
        xml = "<PubmedArticleSet>" + article_xml(pmid(i), title=f"Paper {pmid(i)}", doi=f"10.1000/bench.{pmid(i)}")
        rec = next(iter(parse_pubmed((xml + "</PubmedArticleSet>").encode())))
        return json.dumps(rec.fields(), sort_keys=True), fingerprint(rec)

    template, _ = fields(0)
    days = max(1, span.days)
    with store.engine.begin() as c:
        c.execute(digest_recipients.insert(), [{"digest": "all", "recipient": "team@example.org", "since": start}])
        c.execute(digest_state.insert(), [{"digest": "all", "last_run": checked, "last_sent": checked}])
        # one message a day, to bind the delivered events to
        c.execute(
            outbox.insert(),
            [
                {
                    "id": d + 1,
                    "digest": "all",
                    "recipient": "team@example.org",
                    "message_id": f"<bench-{d}@example.org>",
                    "subject": "digest",
                    "mime": b"x",
                    "items": 0,
                    "state": "sent",
                    "created_at": start + timedelta(days=d),
                    "sent_at": start + timedelta(days=d),
                }
                for d in range(days + 1)
            ],
        )
        c.execute(
            poll_state.insert(),
            [
                {
                    "query": f"q{j:04d}",
                    "source": "pubmed",
                    "watermark": DAY.isoformat(),
                    "mdat_watermark": DAY.isoformat(),
                    "last_ok": checked,
                }
                for j in range(QUERIES)
            ]
            + [
                {
                    "query": "*",
                    "source": "notices",
                    "watermark": DAY.isoformat(),
                    "mdat_watermark": None,
                    "last_ok": checked,
                }
            ],
        )
    event_id = 0
    pending_from = n_records * VERSIONS - DIGEST_ITEMS  # the last 1,000 events are not delivered
    for lo in range(0, n_records, CHUNK):
        idx = range(lo, min(lo + CHUNK, n_records))
        rec_rows, ver_rows, hit_rows, ev_rows, del_rows = [], [], [], [], []
        for i in idx:
            seen = start + span * (i / n_records)
            if i in recent:
                f, h = fields(i)
                seen = NOW - timedelta(days=1 if recent[i] < DAY.isoformat() else 0, hours=2)
            else:
                f, h = (
                    template.replace('"Paper 10000000"', f'"Paper {pmid(i)}"'),
                    hashlib.sha256(str(i).encode()).hexdigest(),
                )
            rec_rows.append(
                {
                    "id": i + 1,
                    "source": "pubmed",
                    "key": pmid(i),
                    "key_hash": key_hash(pmid(i)),
                    "doi": f"10.1000/bench.{pmid(i)}",
                    "current_version": VERSIONS,
                    "current_hash": h,
                    "first_seen": seen,
                    "updated_at": seen,
                    "checked_at": checked if i in recent else seen,
                }
            )
            q = f"q{i % QUERIES:04d}"
            hit_rows.append({"record_id": i + 1, "query": q, "first_seen": seen, "terms": "[]"})
            for n in range(1, VERSIONS + 1):
                ver_rows.append(
                    {
                        "record_id": i + 1,
                        "n": n,
                        "fetched_at": seen,
                        "hash": h if n == VERSIONS else f"{n}",
                        "fields": f,
                        "changes": "[]",
                    }
                )
                event_id += 1
                kind = "new" if n == 1 else "update"
                ev_rows.append(
                    {
                        "id": event_id,
                        "record_id": i + 1,
                        "query": q,
                        "kind": kind,
                        "version_n": n,
                        "dedup": f"{kind}:{pmid(i)}:{n}",
                        "created_at": seen,
                        "detail": "{}",
                    }
                )
                if event_id <= pending_from:
                    del_rows.append(
                        {
                            "event_id": event_id,
                            "digest": "all",
                            "recipient": "team@example.org",
                            "outbox_id": min(days, (seen - start).days) + 1,
                        }
                    )
        with store.engine.begin() as c:
            c.execute(records.insert(), rec_rows)
            c.execute(versions.insert(), ver_rows)
            c.execute(hits.insert(), hit_rows)
            c.execute(events.insert(), ev_rows)
            if del_rows:
                c.execute(deliveries.insert(), del_rows)
    with store.engine.begin() as c:
        if store.engine.dialect.name == "postgresql":
            for t in ("records", "outbox", "events"):
                c.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))"))
            c.execute(sa.text("ANALYZE"))
        else:
            c.execute(sa.text("ANALYZE"))
    store.close()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the operations


def config(tmp: Path, url: str, eutils_url: str) -> Path:
    queries = "".join(f"  - name: q{j:04d}\n    pubmed: term{j:04d}\n" for j in range(QUERIES))
    cfg = tmp / "litwatch.yaml"
    cfg.write_text(
        f'database: "{url}"\n'
        f"pubmed:\n  base_url: {eutils_url}\n  email: bench@example.org\n  api_key: bench\n"
        f'mail:\n  transport: file\n  directory: {tmp / "outbox"}\n  from: "litwatch <litwatch@example.org>"\n'
        f"queries:\n{queries}"
        "digests:\n  - name: all\n    to: [team@example.org]\n    queries: ["
        + ", ".join(f"q{j:04d}" for j in range(QUERIES))
        + f"]\n    max_items: {DIGEST_ITEMS}\n",
        encoding="utf-8",
    )
    return cfg


def say(*args: Any) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def measure(fn: Callable[[], Any], *, traced: bool = True) -> dict[str, float]:
    t = time.perf_counter()
    fn()
    out = {"s": time.perf_counter() - t}
    say(getattr(fn, "__name__", "op"), f"{out['s']:.2f} s")
    if traced:
        tracemalloc.start()
        fn()
        out["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    return out


def run(kind: str, scale: float, ncbi_rate: bool, cycle_memory: bool = True) -> dict[str, dict[str, float]]:
    import sqlalchemy as sa

    from litwatch.config import PubmedSettings, load
    from litwatch.polls.crossref import recheck_plan
    from litwatch.service import Service

    n_records = int(FULL_RECORDS * scale)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if kind == "sqlite":
            url, schema = f"sqlite:///{tmp / 'scale.db'}", ""
        else:
            schema = f"bench_scale_{int(time.time())}_{int(scale * 100)}"
            eng = sa.create_engine(PG_URL)
            with eng.begin() as c:
                c.execute(sa.text(f"CREATE SCHEMA {schema}"))
            eng.dispose()
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        try:
            out["build"] = {"s": build(url, n_records)}
            say(f"built {kind} {n_records} records in {out['build']['s']:.1f} s")
            overlap = [(pmid(i), f"term{i % QUERIES:04d}", day) for i, day in overlap_of(n_records)]
            fake = Fake(overlap)
            rate = PubmedSettings.rate
            if not ncbi_rate:
                PubmedSettings.rate = property(lambda self: 1_000)  # type: ignore[assignment,method-assign]
            clock = {"now": NOW}
            svc = Service(load(config(tmp, url, fake.url)), now=lambda: clock["now"])
            try:
                fake.since_mark()
                same = measure(svc.poll, traced=False)
                got = fake.since_mark()
                same.update(requests=got["requests"], bytes=got["bytes"], efetch=got["efetch"])
                out["quiet cycle, same day"] = same
                if not ncbi_rate:
                    if cycle_memory:
                        tracemalloc.start()
                        svc.poll()
                        same["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
                        tracemalloc.stop()
                    fake.since_mark()
                    clock["now"] = NOW + timedelta(days=1)
                    nxt = measure(svc.poll, traced=False)
                    got = fake.since_mark()
                    nxt.update({k: got[k] for k in ("requests", "bytes", "efetch", "mdat", "fetched")})
                    # with real-size records (~9.9 KB each) instead of the fake's
                    nxt["real_bytes"] = got["bytes"] - got["efetch_bytes"] + got["fetched"] * REAL_RECORD_BYTES
                    out["quiet cycle, next day"] = nxt
                    clock["now"] = NOW
                    out["digest of 1,000 items (dry run)"] = measure(lambda: svc.digest(["all"], dry_run=True))
                    out["status"] = measure(svc.status)
                    out["history (10 versions)"] = measure(lambda: svc.history(pmid(n_records // 2)))

                    def plan() -> int:
                        with svc.store.transaction() as tx:
                            held = svc.store.doi_first_seen(tx)
                        return len(recheck_plan(held, NOW, DAY - timedelta(days=1)))

                    p = measure(plan)
                    due = plan()
                    p.update(requests=math.ceil(due / 50), dois_due=due, dois=n_records)
                    out["Crossref re-check plan"] = p
            finally:
                PubmedSettings.rate = rate  # type: ignore[method-assign]
                svc.close()
                fake.close()
        finally:
            if schema:
                eng = sa.create_engine(PG_URL)
                with eng.begin() as c:
                    c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                eng.dispose()
    return out


def main(argv: list[str] | None = None) -> str:
    global QUERIES
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="0.1,0.2", help="fractions of the full size, comma-separated")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument(
        "--no-cycle-memory", action="store_true", help="skip the traced second run of the cycle (slow under load)"
    )
    ap.add_argument("--queries", type=int, default=QUERIES, help="fewer queries, for a quick look")
    ap.add_argument("--ncbi-rate", action="store_true", help="only the same-day cycle, at NCBI's 10 requests/s")
    args = ap.parse_args(argv)
    QUERIES = args.queries
    guard_network()
    scales = [float(s) for s in args.scale.split(",")]
    lines = []
    for kind in args.backends.split(","):
        results = {s: run(kind, s, args.ncbi_rate, not args.no_cycle_memory) for s in scales}
        ops = list(results[scales[0]])
        rows = []
        for op in ops:
            row: list[Any] = [op]
            for s in scales:
                m = results[s][op]
                row += [
                    f"{m['s']:.2f}",
                    f"{m['requests']:.0f}" if "requests" in m else "",
                    f"{m['bytes'] / 1e3:.0f}" if "bytes" in m else "",
                    f"{m['peak_mb']:.1f}" if "peak_mb" in m else "",
                ]
            if len(scales) > 1:
                a, b = results[scales[0]][op]["s"], results[scales[-1]][op]["s"]
                row.append(f"{b / a:.2f}×" if a else "")
            rows.append(row)
        headers = ["operation"]
        for s in scales:
            r = int(FULL_RECORDS * s)
            headers += [f"s ({r:,} rec)", "requests", "KB", "peak MB"]
        if len(scales) > 1:
            headers.append("time × (history doubled)")
        detail = {s: {op: m for op, m in results[s].items()} for s in scales}
        lines.append(table(f"Scale ({kind}), 1,000 queries", headers, rows, note=json.dumps(detail, default=str)))
        print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
