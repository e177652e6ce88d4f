"""Run every litwatch benchmark and print its tables (markdown), machine first.

    python bench/run.py                  # all, a few minutes on 2 cores
    python bench/run.py --quick          # smaller: parse 10k only, poll at 10/s only
    python bench/run.py --only parse,store --markdown /tmp/out.md
    python bench/run.py --only dump,cycle,first_poll   # issue 15's before/after figures

`dump` writes $LITWATCH_BENCH_DIR/state-dump.json (the behaviour dump) and prints its
counts and sha256; `cycle` counts requests per cycle against the minimum; `first_poll`
races a first poll against a plain Biopython script and the parser against the floor.

Needs: pip install -e '.[bench]' (biopython, pyinstrument), PostgreSQL at
$LITWATCH_BENCH_PG (default postgresql+psycopg://postgres@127.0.0.1:5432/test; skipped
if unreachable) and the real PubMed files under ../shared/data/pubmed (or
$LITWATCH_SHARED_DATA) to build the corpora in $LITWATCH_BENCH_DIR (default
/tmp/litwatch-bench). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, PG_URL, WORK, machine_table

BENCHES = {
    "dump": ("dump_state.py", ["--table", str(WORK / "state-dump.json")], ["--table", str(WORK / "state-dump.json")]),
    "cycle": ("bench_cycle.py", [], ["--queries", "8,20"]),
    "first_poll": (
        "bench_first_poll.py",
        ["--repeat", "2", "--profile", "3000"],
        ["--sizes", "3000", "--parse-repeat", "1"],
    ),
    "parse": ("bench_parse.py", [], ["--sizes", "1000,10000", "--repeat", "1"]),
    "feeds": ("bench_feeds.py", [], ["--repeat", "1"]),
    "poll": ("bench_poll.py", [], ["--rates", "10"]),
    "store": ("bench_store.py", [], []),
    "digest": ("bench_digest.py", [], []),
}


def pg_ok() -> bool:
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHES))
    ap.add_argument("--markdown", type=Path, help="also write machine + tables to this file")
    args = ap.parse_args()
    names = [n for n in BENCHES if not args.only or n in args.only.split(",")]
    dbs = ["--dbs", "sqlite,postgresql" if pg_ok() else "sqlite"]
    parts = [machine_table()]
    print(parts[0], flush=True)
    failed = []
    for name in names:
        script, full, quick = BENCHES[name]
        extra = quick if args.quick else full
        if name in ("poll", "store"):
            extra = [*extra, *dbs]
        if not (BENCH / script).exists():
            print(f"### {name}: {script} not present, skipped\n", flush=True)
            continue
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(BENCH / script), *extra], capture_output=True, text=True)
        took = time.perf_counter() - t
        if proc.returncode != 0:
            failed.append(name)
            out = f"### {name}: FAILED ({proc.returncode})\n\n```\n{proc.stderr[-2000:]}\n```\n"
        else:
            out = proc.stdout.rstrip() + f"\n\n({name}: {took:.0f} s)\n"
        print(out, flush=True)
        parts.append(out)
    if args.markdown:
        args.markdown.write_text("\n".join(parts), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
