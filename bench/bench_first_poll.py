"""First poll against a plain Biopython script (issue 15), side by side in one run.

One PubMed query whose first poll finds N records (3,000 and 10,000; ~10 KB efetch
records from bench/corpus.py), served by tests/helpers/fake_eutils.py in this process on
127.0.0.1; every contender runs in its own interpreter at the API-key rate (10/s):

- `litwatch poll` (CLI subprocess, SQLite): the whole command as a user runs it —
  interpreter start, imports, config, migrations, search, fetch, parse, store, events.
- litwatch in-process: `Service(load(cfg)).poll()` in a fresh interpreter, timed after
  the imports (so: migrations + search + fetch + parse + store + events).
- Biopython: what a user would write — `Entrez.esearch(usehistory="y")`, `Entrez.efetch`
  from the history server in batches of 500, `Entrez.read` each batch, keep the
  articles in a list. Biopython's own limiter (0.1 s between requests with an API key);
  its hard-coded NCBI URL is pointed at the fake by wrapping `Bio.Entrez.urlopen`.
  Timed as a whole process and after its imports. The same script reading each
  answer without parsing ("Biopython fetch only") shows what the requests alone cost.

Wall = the child process from spawn to exit, measured here; "after imports" = the
child's own clock. Peak RSS = the child's VmHWM (its high-water mark since exec). Then litwatch's
parser against the bare lxml floor (bench/floor_pubmed.py, the same fields) on the same
N records from disk, via bench_parse.py's children; goal ≤ 1.2×.

With `--profile N`, also a first poll of N records in-process under cProfile, its time
summed into buckets (parse, fingerprint and events, store, JSON and hashing, network,
imports, migrations...): the before/after profile issue 15 asks for.

    python bench/bench_first_poll.py [--sizes 3000,10000] [--repeat 1] [--profile 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from common import BENCH, ROOT, WORK, peak_rss_kb, ratio, run_child, table

TERM = "benchterm"
BATCH = 500
API_KEY = "bench-not-a-real-key"  # sent only to 127.0.0.1


# ----------------------------------------------------------------------------- children


def child_litwatch(cfg: str) -> None:
    t0 = time.perf_counter()
    from litwatch.config import load
    from litwatch.service import Service

    t1 = time.perf_counter()
    svc = Service(load(cfg))
    results = svc.poll()
    svc.close()
    t2 = time.perf_counter()
    errors = [r.error for r in results if getattr(r, "error", None)]
    if errors:
        raise SystemExit(f"poll failed: {errors[:3]}")
    new = sum(getattr(r, "new", 0) for r in results)
    print(json.dumps({"records": new, "work": t2 - t1, "imports": t1 - t0, "peak_kb": peak_rss_kb()}))


# Where the in-process first poll spends its time, by bucket (cProfile's own time per
# function, summed; the first match wins). cProfile sees the main thread only: if the
# rewrite fetches on another thread, that thread's time shows as waiting here.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("rate-limit waits (time.sleep)", ("time.sleep",)),
    ("imports during the poll", ("<frozen importlib", "importlib", "zipimport")),
    ("migrations (Alembic)", ("/alembic/",)),
    ("network (socket, ssl, http.client)", ("socket", "/ssl.py", "_ssl.", "/http/client.py", "select")),
    ("HTTP client (requests, urllib3)", ("/requests/", "/urllib3/", "/email/", "/idna/", "/charset_normalizer/")),
    ("parse (litwatch.parse, lxml)", ("litwatch/parse/", "lxml")),
    ("fingerprint, diff, events (litwatch.events, records)", ("litwatch/events.py", "litwatch/records.py")),
    ("JSON and hashing", ("/json/", "json.", "_hashlib", "hashlib")),
    ("store (SQLAlchemy, sqlite3, litwatch.store)", ("/sqlalchemy/", "sqlite3", "litwatch/store/")),
    ("litwatch, other (service, sources, config)", ("litwatch/",)),
]


def child_profile(cfg: str) -> None:
    import cProfile
    import pstats

    from litwatch.config import load
    from litwatch.service import Service

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    svc = Service(load(cfg))
    svc.poll()
    svc.close()
    prof.disable()
    wall = time.perf_counter() - t

    def bucket_of(where: str) -> str | None:
        return next((name for name, marks in BUCKETS if any(m in where for m in marks)), None)

    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, callers) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        own = bucket_of(f"{filename}:{func}")
        if own is None and filename == "~" and callers:
            # a builtin (str.split, bytes.join...): its time goes to the bucket of each caller
            for (cfile, _cl, cfunc), (_a, _b, ctt, _d) in callers.items():
                b = bucket_of(f"{cfile}:{cfunc}") or "other"
                totals[b] = totals.get(b, 0.0) + ctt
            continue
        totals[own or "other"] = totals.get(own or "other", 0.0) + tt
    print(json.dumps({"wall": wall, "buckets": totals}))


CORPORA = ("real", "compact")  # bench/corpus.py: ~10 KB with references, or ~3 KB (8 authors, abstract, MeSH)


def serving(n: int, corpus: str = "real") -> Any:
    """The fake E-utilities server holding the first poll's n records, started."""
    from corpus import PMID_MARK, articles, compact_articles

    from helpers.fake_eutils import FakeEutils

    fake = FakeEutils().start()
    today = date.today()  # the CLI polls with the real clock: records entered in the last 20 days
    for i, a in enumerate((compact_articles if corpus == "compact" else articles)(n)):
        pmid = str(36_000_000 + i)
        fake.add(
            pmid,
            terms={TERM},
            edat=today - timedelta(days=1 + i % 20),
            xml=a.decode().replace(PMID_MARK.decode(), pmid),
        )
    return fake


def serve(n: int, corpus: str, where: Path) -> None:
    """Serve the corpus until interrupted, and write what times whole processes against
    it: `litwatch.yaml` + `poll.sh` (a fresh database, then `litwatch poll`) and
    `biopython.py` (the Biopython script), for a paired timer run from outside."""
    fake = serving(n, corpus)
    where.mkdir(parents=True, exist_ok=True)
    cfg = config(where, fake.url)
    db = where / "litwatch.db"
    (where / "poll.sh").write_text(
        f"rm -f {db} {db}-wal {db}-shm\nexec {sys.executable} -m litwatch.cli -c {cfg} poll >/dev/null\n"
    )
    (where / "biopython.py").write_text(BIOPYTHON)
    print(
        f"serving {n:,} {corpus} records at {fake.url}\n"
        f"  sh {where / 'poll.sh'}\n  {sys.executable} {where / 'biopython.py'} {fake.url} read",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


def profile_table(n: int, corpus: str = "real") -> str:
    fake = serving(n, corpus)
    try:
        with tempfile.TemporaryDirectory(prefix="litwatch-first-poll-") as d:
            tmp = Path(d)
            r = spawn([__file__, "--child", "profile", str(config(tmp, fake.url))], tmp)
    finally:
        fake.stop()
    res = json.loads(r["stdout"].strip().splitlines()[-1])
    total = sum(res["buckets"].values())
    order = [name for name, _ in BUCKETS] + ["other"]
    rows = [[b, res["buckets"][b], f"{res['buckets'][b] / total:.0%}"] for b in order if b in res["buckets"]]
    rows.append(["total (profiled)", total, "100%"])
    return table(
        f"First poll of {n:,} records, in-process under cProfile: where the time goes",
        ["bucket", "s", "share"],
        rows,
        note=f"Service(load(cfg)) + poll() + close() after the imports; wall under the profiler {res['wall']:.2f} s "
        "(cProfile roughly doubles the cost of Python-level calls, so read shares, not seconds). Own time per "
        "function summed by the module it lives in (a builtin such as str.split counts for its caller's); "
        "main thread only.",
    )


# The script a user would write, run as `python -c BIOPYTHON <fake url>` (nothing of
# the bench is imported, so its wall time is its own). Only the marked lines are extra:
# pointing Biopython's hard-coded NCBI URL at the fake, timing, and the peak RSS.
BIOPYTHON = f"""
import json, sys, time
t0 = time.perf_counter()
from urllib.request import Request
from Bio import Entrez

real_urlopen = Entrez.urlopen  # bench: send Biopython's requests to the fake
def to_fake(request, *a, **kw):
    full = request.full_url.replace("https://eutils.ncbi.nlm.nih.gov/entrez/eutils/", sys.argv[1])
    return real_urlopen(Request(full, data=request.data, method=request.get_method()), *a, **kw)
Entrez.urlopen = to_fake
t1 = time.perf_counter()

Entrez.email = "bench@example.org"
Entrez.api_key = "{API_KEY}"
found = Entrez.read(Entrez.esearch(db="pubmed", term="{TERM}", usehistory="y", retmax=0))
count = int(found["Count"])
articles = []
for start in range(0, count, {BATCH}):
    handle = Entrez.efetch(db="pubmed", retmode="xml", retstart=start, retmax={BATCH},
                           WebEnv=found["WebEnv"], query_key=found["QueryKey"])  # NCBI takes webenv too
    if sys.argv[2] == "read":
        articles.extend(Entrez.read(handle)["PubmedArticle"])
    else:  # bench: the fetch alone, no parse (a floor, not a script anyone would use)
        articles.extend([None] * handle.read().count(b"<PubmedArticle>"))
    handle.close()

t2 = time.perf_counter()  # bench: report
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print(json.dumps({{"records": len(articles), "work": t2 - t1, "imports": t1 - t0, "peak_kb": hwm}}))
"""


# ----------------------------------------------------------------------------- parent


# `litwatch poll` exactly as `python -m litwatch.cli` runs it, plus an exit hook that
# writes the process's peak RSS (VmHWM) to the file named by $BENCH_HWM
CLI = (
    "import atexit, os\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['BENCH_HWM'], 'w').write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "from litwatch.cli import main\n"
    "main(prog_name='litwatch')\n"
)


def spawn(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child interpreter; wall from spawn to exit."""
    out_path, err_path = tmp / "child.out", tmp / "child.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=out,
            stderr=err,
            cwd=str(ROOT),
            env=dict(os.environ, PYTHONHASHSEED="0", **(env or {})),
        )
        proc.wait()
        wall = time.perf_counter() - t
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed ({proc.returncode}):\n{err_path.read_text(errors='replace')[-3000:]}")
    return {"wall": wall, "stdout": stdout}


def config(tmp: Path, url: str) -> Path:
    path = tmp / "litwatch.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp / "litwatch.db"}"\n'
        f"pubmed:\n  base_url: {url}\n  email: bench@example.org\n  api_key: {API_KEY}\n  timeout: 120\n"
        f"mail:\n  transport: file\n  directory: {tmp / 'outbox'}\n"
        f"queries:\n  - name: bench\n    pubmed: {TERM}\n",
        encoding="utf-8",
    )
    return path


def run_contender(name: str, url: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="litwatch-first-poll-") as d:
        tmp = Path(d)
        cfg = config(tmp, url)
        if name == "litwatch poll (CLI)":
            hwm = tmp / "hwm"
            r = spawn(["-c", CLI, "-c", str(cfg), "poll"], tmp, env={"BENCH_HWM": str(hwm)})
            r["peak_kb"] = int(hwm.read_text())
            line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("bench [pubmed]")), "")
            new = int(line.split("new ", 1)[1].split(",", 1)[0]) if "new " in line else -1
            r.update(records=new, work=None, imports=None)
        elif name == "litwatch in-process":
            r = spawn([__file__, "--child", "litwatch", str(cfg)], tmp)
            r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
        else:
            r = spawn(["-c", BIOPYTHON, url, "read" if name == "Biopython script" else "fetch"], tmp)
            r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    if r["records"] != n:
        raise SystemExit(f"{name}: {r['records']} records, expected {n}")
    return r


CONTENDERS = ("litwatch poll (CLI)", "litwatch in-process", "Biopython script", "Biopython fetch only")


def first_poll(n: int, repeat: int, corpus: str = "real") -> list[dict[str, Any]]:
    fake = serving(n, corpus)
    best: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(repeat):  # interleaved, best wall per contender: the machine is noisy
            for c in CONTENDERS:
                fake.requests.clear()
                r = run_contender(c, fake.url, n)
                r["requests"] = len(fake.requests)
                if c not in best or r["wall"] < best[c]["wall"]:
                    best[c] = r
    finally:
        fake.stop()
    return [{"contender": c, "n": n, **best[c]} for c in CONTENDERS]


def parse_vs_floor(n: int, repeat: int) -> dict[str, Any]:
    from corpus import build

    path = build(n)
    res: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):  # interleaved, best of `repeat`
        for c in ("litwatch", "floor"):
            r = run_child([str(BENCH / "bench_parse.py"), "--child", c, str(path), "--repeat", "1"])
            if c not in res or r["seconds"] < res[c]["seconds"]:
                res[c] = r
    return {"n": n, "mb": path.stat().st_size / 1e6, **res}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="3000,10000")
    ap.add_argument("--repeat", type=int, default=1, help="first polls per contender (best wall kept)")
    ap.add_argument("--parse-repeat", type=int, default=2, help="parser runs per contender (best kept)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="also profile a first poll of N records")
    ap.add_argument("--corpus", choices=CORPORA, default="real", help="~10 KB records, or ~3 KB (compact)")
    ap.add_argument("--serve", type=int, default=0, metavar="N", help="only serve N records (see serve())")
    ap.add_argument("--dir", type=Path, default=WORK / "first-poll", help="where --serve writes its files")
    args = ap.parse_args(argv)
    if args.child:
        (child_profile if args.child[0] == "profile" else child_litwatch)(args.child[1])
        return ""
    if args.serve:
        serve(args.serve, args.corpus, args.dir)
        return ""
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    for n in sizes:
        runs = first_poll(n, args.repeat, args.corpus)
        bio = next(r for r in runs if r["contender"] == "Biopython script")
        for r in runs:
            is_bio = r is bio
            rows.append(
                [
                    f"{n:,}",
                    r["contender"],
                    r["requests"],
                    r["wall"],
                    r["work"] if r["work"] is not None else "-",
                    r["imports"] if r["imports"] is not None else "-",
                    r["peak_kb"] / 1024,
                    "1.00×" if is_bio else ratio(r["wall"], bio["wall"]),
                    "1.00×" if is_bio else "-" if r["work"] is None else ratio(r["work"], bio["work"]),
                ]
            )
    text = table(
        "First poll: litwatch against a plain Biopython script (goal ≤ 1.00×)",
        [
            "records",
            "contender",
            "requests",
            "wall s",
            "after imports s",
            "imports s",
            "peak RSS MB",
            "wall vs Biopython",
            "after imports vs Biopython",
        ],
        rows,
        note="One query, fake E-utilities server on 127.0.0.1 in the bench process, API-key rate (10/s) for "
        f"both, efetch batches of {BATCH}, best of {args.repeat}. litwatch does fetch + parse + store (SQLite) + "
        "events; Biopython fetch + parse (Entrez.read, validating against the shipped DTD) into a list. "
        "'Biopython fetch only' is the same script reading each answer without parsing it: the cost of "
        "the requests at 10/s, a floor for everyone. Wall = spawn to exit of the child interpreter; "
        "'after imports' = the child's own clock once its imports are done (for `litwatch poll` only the "
        "wall is known). Peak RSS = the child's VmHWM. "
        "litwatch splits a search window of ≥ 10,000 records in two (PubMed's esearch cap), so at 10,000 "
        "it makes three searches where Biopython makes one.",
    )
    prows = []
    for n in sizes:
        p = parse_vs_floor(n, args.parse_repeat)
        lw, fl = p["litwatch"], p["floor"]
        prows.append(
            [
                f"{n:,} ({p['mb']:.0f} MB)",
                lw["seconds"],
                fl["seconds"],
                ratio(lw["seconds"], fl["seconds"]),
                lw["peak_kb"] / 1024,
                fl["peak_kb"] / 1024,
            ]
        )
    text += "\n" + table(
        "PubMed parser against the bare lxml floor (goal ≤ 1.20×)",
        ["records", "litwatch s", "floor s", "litwatch / floor", "litwatch peak RSS MB", "floor peak RSS MB"],
        prows,
        note=f"From disk, one fresh interpreter per run (bench_parse.py's children), best of {args.parse_repeat} "
        "interleaved. The floor "
        "(bench/floor_pubmed.py) is lxml.iterparse extracting exactly litwatch's fields.",
    )
    if args.profile:
        text += "\n" + profile_table(args.profile, args.corpus)
    print(text)
    return text


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    main()
