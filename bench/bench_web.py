"""The web view's pages on PostgreSQL at scale (issue 26): 100,000 records (a tenth with
a second version whose abstract changed), 1,000,000 events over 20 queries and 12
weeks, 2,000 sent mails binding 100,000 of them. Each page is fetched over HTTP from
the real server (uvicorn + Starlette) on loopback, `--repeat` times; the table shows
the median and the slowest, against the issue's 200 ms.

    python bench/bench_web.py [--records 100000] [--events 1000000] [--repeat 7]

Needs PostgreSQL at $LITWATCH_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
a schema of its own, dropped at the end."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PG_URL  # noqa: E402

LIMIT_MS = 200.0


def fill(url: str, records: int, events: int) -> None:
    from litwatch.store import Store

    Store(url).close()  # the schema, migrated
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(
            sa.text(
                """
        INSERT INTO records (id, source, key, key_hash, doi, current_version, current_hash, first_seen, updated_at)
        SELECT g, 'pubmed', g::text, encode(sha256(g::text::bytea), 'hex'), '10.9/bench.' || g,
               CASE WHEN g % 10 = 0 THEN 2 ELSE 1 END, md5(g::text), now() - interval '90 days', now()
        FROM generate_series(1, :n) g"""
            ),
            {"n": records},
        )
        c.execute(sa.text("SELECT setval(pg_get_serial_sequence('records', 'id'), :n)"), {"n": records})
        c.execute(
            sa.text(
                """
        INSERT INTO versions (record_id, n, fetched_at, hash, fields, changes)
        SELECT g, 1, now() - interval '90 days', md5(g::text),
               json_build_object('title', 'Benchmark paper ' || g || ' on receptor agonists',
                                 'abstract', 'We tested compound ' || g || ' in mice. The results were clear.',
                                 'journal', 'Journal of Benchmarks', 'doi', '10.9/bench.' || g)::text,
               '[]'
        FROM generate_series(1, :n) g"""
            ),
            {"n": records},
        )
        c.execute(
            sa.text(
                """
        INSERT INTO versions (record_id, n, fetched_at, hash, fields, changes)
        SELECT g, 2, now() - interval '10 days', md5(g::text || 'v2'),
               json_build_object('title', 'Benchmark paper ' || g || ' on receptor agonists',
                                 'abstract', 'We tested compound ' || g || ' in mice and men. The results were clear.',
                                 'journal', 'Journal of Benchmarks', 'doi', '10.9/bench.' || g)::text,
               json_build_array(json_build_array('abstract',
                   'We tested compound ' || g || ' in mice. The results were clear.',
                   'We tested compound ' || g || ' in mice and men. The results were clear.'))::text
        FROM generate_series(10, :n, 10) g"""
            ),
            {"n": records},
        )
        c.execute(
            sa.text(
                """
        INSERT INTO events (id, record_id, query, kind, version_n, dedup, created_at, detail)
        SELECT g, (g % :r) + 1, 'q' || (g % 20),
               CASE WHEN g % 10 = 9 AND ((g % :r) + 1) % 10 = 0 THEN 'update' ELSE 'new' END,
               CASE WHEN g % 10 = 9 AND ((g % :r) + 1) % 10 = 0 THEN 2 ELSE 1 END,
               'bench:' || g, now() - (g % 84) * interval '1 day', '{}'
        FROM generate_series(1, :n) g"""
            ),
            {"n": events, "r": records},
        )
        c.execute(sa.text("SELECT setval(pg_get_serial_sequence('events', 'id'), :n)"), {"n": events})
        c.execute(
            sa.text(
                """
        INSERT INTO outbox
            (id, digest, recipient, message_id, subject, mime, items, state, attempts, created_at, sent_at)
        SELECT g, 'weekly', 'team@example.org', '<bench.' || g || '@example.org>', 'weekly: 50 new papers',
               convert_to('Subject: weekly' || chr(13) || chr(10) || chr(13) || chr(10) || 'mail ' || g, 'UTF8'),
               50, 'sent', 1, now() - (g % 84) * interval '1 day', now() - (g % 84) * interval '1 day'
        FROM generate_series(1, 2000) g"""
            )
        )
        c.execute(sa.text("SELECT setval(pg_get_serial_sequence('outbox', 'id'), 2000)"))
        c.execute(
            sa.text(
                """
        INSERT INTO deliveries (event_id, digest, recipient, outbox_id)
        SELECT g, 'weekly', 'team@example.org', (g - 1) / 50 + 1 FROM generate_series(1, LEAST(100000, :n)) g"""
            ),
            {"n": events},
        )
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE"))
    eng.dispose()


def settings_for(url: str, tmp: Path):  # type: ignore[no-untyped-def]
    from litwatch.config import load

    queries = "".join(f"  - name: q{i}\n    pubmed: x{i}\n" for i in range(20))
    path = tmp / "litwatch.yaml"
    path.write_text(
        f'database: "{url}"\npubmed:\n  email: bench@example.org\nmail:\n  transport: file\n'
        f'  directory: {tmp / "outbox"}\n  from: "litwatch <litwatch@example.org>"\n'
        f"queries:\n{queries}digests:\n  - name: weekly\n    to: [team@example.org]\n    queries: [q0]\n",
        encoding="utf-8",
    )
    return load(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()

    from litwatch.service import Service
    from litwatch.web.app import make_app
    from litwatch.web.server import WebServer

    schema = "bench_web_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        t = time.perf_counter()
        fill(url, a.records, a.events)
        print(f"filled {a.records:,} records, {a.events:,} events in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(url, Path(tmp))
            service = Service(settings)
            app = make_app(service, settings, health=lambda: (True, "bench"), metrics=lambda: "")
            server = WebServer(app, port=0).start()
            base = f"http://127.0.0.1:{server.port}"
            mid = a.events // 2
            pages = [
                ("overview (status, 12-week chart)", "/"),
                ("record page, PMID (2 versions, events, mails)", "/record/10"),
                ("record page, DOI", f"/record/10.9/bench.{a.records // 2}"),
                ("events, newest 50", "/events"),
                ("events, one query", "/events?query=q7"),
                ("events, kind update", "/events?kind=update"),
                ("events, date range", "/events?since=2026-11-01&until=2026-11-07"),
                ("events, page 10,000 deep (keyset)", f"/events?before={mid}"),
                ("events, text search (common word)", "/events?q=agonists"),
                ("events, text search (one record)", f"/events?q=compound+{a.records - 1}+"),
                ("digest archive", "/digests/weekly"),
            ]
            rows = []
            for label, path in pages:
                times = []
                for _ in range(a.repeat):
                    t = time.perf_counter()
                    with urllib.request.urlopen(base + path, timeout=120) as r:
                        r.read()
                        assert r.status == 200, (path, r.status)
                    times.append((time.perf_counter() - t) * 1000)
                rows.append((label, path, statistics.median(times), max(times)))
            server.stop()
            service.close()
        print(f"\nweb pages on PostgreSQL, {a.records:,} records, {a.events:,} events, {a.repeat} fetches each\n")
        print("| page | path | median ms | slowest ms | under 200 ms |")
        print("|---|---|---:|---:|---|")
        for label, path, med, worst in rows:
            print(f"| {label} | `{path}` | {med:.0f} | {worst:.0f} | {'yes' if med < LIMIT_MS else 'NO'} |")
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
