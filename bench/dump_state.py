"""Behaviour dump for refactorings of the poll path (issue 15): poll fixed inputs
through the local fake servers with an injected clock, then write everything litwatch
stored about them — records, versions (fields and changes), events (kind, query,
dedup, detail) and hits (query, terms) — with ids and times dropped and every list
sorted, as one JSON file. Run it before and after a change; the two dumps must be
identical.

    python bench/dump_state.py before.json              # all three scenarios
    python bench/dump_state.py --only pubmed,feeds out.json
    python bench/dump_state.py --compare before.json after.json   # exit 0 identical, 1 not
    python bench/dump_state.py --table out.json          # also print counts and sha256 (bench/run.py)

Scenarios (each on a fresh SQLite database, its own fake servers, two cycles):

- `pubmed`: every PubmedArticle in ../shared/data/pubmed (or $LITWATCH_SHARED_DATA),
  served by tests/helpers/fake_eutils.py to four queries with overlapping terms (so records
  are shared between queries). Cycle 2, a day later: the later real version of a PMID
  found in two files (e.g. jcore's "partially changed" excerpt), titles changed, ErratumIn
  / RetractionIn (+ "RETRACTED:" title) added to originals with and without their notice
  in the notice search, notices naming unchanged or unknown records, expression of
  concern, MeSH-only changes, and two new papers.
- `corpus`: bench/corpus.py's efetch-like records (default 3,000), eight queries each
  PMID matched by two or three of them; cycle 2 is quiet (nothing changed).
- `feeds`: every file in ../shared/data/feeds served by tests/helpers/feedhost.py, scanned by
  two queries with `match` expressions over overlapping feed lists; in cycle 2 one
  entry's title changes and one entry is added.

How litwatch is driven: only through public entry points — `litwatch.config.load` and
`litwatch.service.Service(settings, now=clock).poll()` — with an injected fixed clock
(noon UTC, so UTC and US Eastern agree on the day). The fakes are used only through
`FakeEutils.add / change / url / requests` and `FeedHost.feed / url`.

How the state is read: plain SQL (SQLAlchemy Core, reflected tables) over the five
tables ARCHITECTURE.md lists — records (source, key, doi, current_version), versions
(record_id, n, fields, changes), hits (record_id, query, terms), events (record_id,
version_n, kind, query, dedup, detail), poll_state (query, source, watermark,
last_error: the progress and errors after each cycle) — not through `Store`, whose shape the rewrite
changes. Record ids are replaced by (source, key); times (fetched_at, first_seen,
created_at) are left out. Which cycle created each version, hit and event is kept (by
diffing the state after each cycle), since that is behaviour too. `progress_after_each_cycle`
is the one part whose *representation* may legitimately change (say, a watermark kept
in another form): a difference there is to be read, not necessarily a regression; the
other parts must be identical. If the rewrite renames
one of these columns, this script fails loudly naming it; adapt `snapshot()` only.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from common import SHARED_DATA
from lxml import etree

DAY0 = datetime(2026, 11, 20, 12, 0, 0)  # naive UTC, as litwatch stores; noon: same Eastern day
NOTICE_TERMS = {  # one of the OR-ed parts of litwatch's notice search, per notice type
    "erratum": '"published erratum"[pt]',
    "retraction": '"retraction of publication"[pt]',
    "concern": '"expression of concern"[pt]',
}


# ----------------------------------------------------------------------------- driving litwatch


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _config(tmp: Path, body: str) -> Any:
    from litwatch.config import load

    path = tmp / "litwatch.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp / "litwatch.db"}"\n'
        "mail:\n  transport: file\n"
        f"  directory: {tmp / 'outbox'}\n" + body,
        encoding="utf-8",
    )
    return load(path)


def _pubmed_block(url: str) -> str:
    # API-key rate (10/s) only to keep the dump quick; the key is never sent anywhere but 127.0.0.1
    return f"pubmed:\n  base_url: {url}\n  email: dump@example.org\n  api_key: dump-not-a-real-key\n  timeout: 60\n"


def _cycles(
    settings: Any, db: str, steps: list[Callable[[], None]], scrub: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll once per step (the step first changes the fakes), a day apart; snapshot after
    each. `scrub` replaces run-specific strings (a fake server's port) in the dump."""
    from litwatch.service import Service

    clock = Clock(DAY0)
    svc = Service(settings, now=clock)
    snaps = []
    polls = []
    try:
        for i, step in enumerate(steps):
            clock.at = DAY0 + timedelta(days=i)
            step()
            results = svc.poll()
            polls.append(sorted(_result_summary(r) for r in results))
            snaps.append(snapshot(db))
    finally:
        svc.close()
    for i, p in enumerate(polls, 1):
        for line in p:
            print(f"  cycle {i}: {line}", file=sys.stderr)
    out = _with_cycles(snaps)
    if scrub:
        text = json.dumps(out, sort_keys=True, ensure_ascii=False)
        for old, new in scrub.items():
            text = text.replace(old, new)
        out = json.loads(text)
    return out


def _result_summary(r: Any) -> str:
    """For the log only (not the dump): PollResult's shape may change."""
    line = getattr(r, "line", None)
    return line() if callable(line) else repr(r)


# ----------------------------------------------------------------------------- reading the state


def snapshot(db: str) -> dict[str, list[Any]]:
    import sqlalchemy as sa

    eng = sa.create_engine(db)
    md = sa.MetaData()
    md.reflect(eng, only=["records", "versions", "hits", "events", "poll_state"])
    rec, ver, hit, evt, ps = (md.tables[t] for t in ("records", "versions", "hits", "events", "poll_state"))
    with eng.connect() as c:
        ident = {r.id: (r.source, r.key) for r in c.execute(sa.select(rec.c.id, rec.c.source, rec.c.key))}
        records = [
            {"source": r.source, "key": r.key, "doi": r.doi, "current_version": r.current_version}
            for r in c.execute(sa.select(rec.c.source, rec.c.key, rec.c.doi, rec.c.current_version))
        ]
        versions = [
            {
                "source": ident[r.record_id][0],
                "key": ident[r.record_id][1],
                "n": r.n,
                "fields": json.loads(r.fields),
                "changes": json.loads(r.changes),
            }
            for r in c.execute(sa.select(ver.c.record_id, ver.c.n, ver.c.fields, ver.c.changes))
        ]
        hits = [
            {
                "source": ident[r.record_id][0],
                "key": ident[r.record_id][1],
                "query": r.query,
                "terms": json.loads(r.terms) if r.terms else [],
            }
            for r in c.execute(sa.select(hit.c.record_id, hit.c.query, hit.c.terms))
        ]
        events = [
            {
                "source": ident[r.record_id][0],
                "key": ident[r.record_id][1],
                "version_n": r.version_n,
                "kind": r.kind,
                "query": r.query,
                "dedup": r.dedup,
                "detail": json.loads(r.detail) if r.detail else {},
            }
            for r in c.execute(
                sa.select(evt.c.record_id, evt.c.version_n, evt.c.kind, evt.c.query, evt.c.dedup, evt.c.detail)
            )
        ]
        progress = [
            {"query": r.query, "source": r.source, "watermark": r.watermark, "last_error": r.last_error}
            for r in c.execute(sa.select(ps.c.query, ps.c.source, ps.c.watermark, ps.c.last_error))
        ]
    eng.dispose()
    return {
        "progress": _sorted(progress),
        "records": _sorted(records),
        "versions": _sorted(versions),
        "events": _sorted(events),
        "hits": _sorted(hits),
    }


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, ensure_ascii=False))


def _key(kind: str, r: dict[str, Any]) -> str:
    if kind == "versions":
        return f"{r['source']}|{r['key']}|v{r['n']}"
    if kind == "events":
        return f"{r['query']}|{r['dedup']}"
    return f"{r['source']}|{r['key']}|{r['query']}"


def _with_cycles(snaps: list[dict[str, list[Any]]]) -> dict[str, Any]:
    """The final state, each version, hit and event tagged with the cycle that created it."""
    last = snaps[-1]
    out: dict[str, Any] = {
        "records": last["records"],
        "progress_after_each_cycle": [{"after_cycle": i, **r} for i, s in enumerate(snaps, 1) for r in s["progress"]],
    }
    for kind in ("versions", "events", "hits"):
        born: dict[str, int] = {}
        for i, snap in enumerate(snaps, 1):
            for r in snap[kind]:
                born.setdefault(_key(kind, r), i)
        out[kind] = [{"cycle": born[_key(kind, r)], **r} for r in last[kind]]
    out["counts"] = {
        f"cycle {i}": {k: len(s[k]) for k in ("records", "versions", "events", "hits")} for i, s in enumerate(snaps, 1)
    }
    return out


# ----------------------------------------------------------------------------- scenario: real PubMed records


def real_articles() -> dict[str, list[bytes]]:
    """Every PubmedArticle in shared/data/pubmed, by PMID, each distinct version in
    file order (sorted paths)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    out: dict[str, list[bytes]] = {}
    for f in sorted((SHARED_DATA / "pubmed").rglob("*.xml")):
        try:
            tree = etree.parse(str(f), parser)
        except etree.XMLSyntaxError:
            continue
        for a in tree.iter("PubmedArticle"):
            pmid = (a.findtext("MedlineCitation/PMID") or "").strip()
            if not pmid:
                continue
            a = copy.deepcopy(a)
            a.tail = None
            b = etree.tostring(a, encoding="utf-8")
            seen = out.setdefault(pmid, [])
            if b not in seen:
                seen.append(b)
    if not out:
        raise SystemExit(f"no PubmedArticle under {SHARED_DATA / 'pubmed'}")
    return out


def _edit(xml: bytes, fn: Callable[[etree._Element], None]) -> str:
    a = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    fn(a)
    return etree.tostring(a, encoding="unicode")


def _set_title(suffix: str = "", prefix: str = "") -> Callable[[etree._Element], None]:
    def fn(a: etree._Element) -> None:
        t = a.find("MedlineCitation/Article/ArticleTitle")
        assert t is not None
        text = "".join(t.itertext())
        for child in list(t):
            t.remove(child)
        t.text = prefix + text + suffix

    return fn


def _add_link(ref_type: str, pmid: str) -> Callable[[etree._Element], None]:
    def fn(a: etree._Element) -> None:
        mc = a.find("MedlineCitation")
        assert mc is not None
        ccl = mc.find("CommentsCorrectionsList")
        if ccl is None:
            ccl = etree.SubElement(mc, "CommentsCorrectionsList")
        cc = etree.SubElement(ccl, "CommentsCorrections", RefType=ref_type)
        etree.SubElement(cc, "RefSource").text = f"Dump J. 2026;1:{pmid}"
        etree.SubElement(cc, "PMID", Version="1").text = pmid

    return fn


def _add_mesh(term: str) -> Callable[[etree._Element], None]:
    def fn(a: etree._Element) -> None:
        mc = a.find("MedlineCitation")
        assert mc is not None
        mhl = mc.find("MeshHeadingList")
        if mhl is None:
            mhl = etree.SubElement(mc, "MeshHeadingList")
        mh = etree.SubElement(mhl, "MeshHeading")
        etree.SubElement(mh, "DescriptorName", UI="D999999", MajorTopicYN="N").text = term

    return fn


def _both(*fns: Callable[[etree._Element], None]) -> Callable[[etree._Element], None]:
    def fn(a: etree._Element) -> None:
        for f in fns:
            f(a)

    return fn


def scenario_pubmed(tmp: Path) -> dict[str, Any]:
    from helpers.fake_eutils import FakeEutils, article_xml

    arts = real_articles()
    pmids = sorted(arts, key=int)
    day0, day1 = DAY0.date(), DAY0.date() + timedelta(days=1)
    fake = FakeEutils().start()
    terms_of: dict[str, set[str]] = {}
    for i, p in enumerate(pmids):
        terms = {t for t, on in (("alpha", i % 2 == 0), ("beta", i % 3 == 0), ("gamma", i % 5 in (1, 4))) if on}
        if i % 4 == 1:
            terms.add("delta")
        terms = terms or {"gamma"}
        terms_of[p] = terms
        fake.add(p, terms=terms, edat=day0 - timedelta(days=1 + i % 20), xml=arts[p][0].decode())
    # queries overlap: alpha/beta share every 6th record, alpha-or-delta shares all of alpha's
    queries = {"q_alpha": "alpha", "q_beta": "beta", "q_gamma": "gamma", "q_alpha_or_delta": "alpha OR delta"}
    body = (
        _pubmed_block(fake.url)
        + "queries:\n"
        + "".join(f"  - name: {n}\n    pubmed: {t}\n" for n, t in queries.items())
    )
    settings = _config(tmp, body)

    # cycle 2: what changed, on records picked by position (not one record twice)
    plain = [p for p in pmids if len(arts[p]) == 1]
    pick = iter(plain[3::7])
    notice_pmid = iter(str(39_900_001 + k) for k in range(100))
    plan: list[tuple[str, str]] = []

    def change(pmid: str, how: Callable[[etree._Element], None], what: str) -> None:
        fake.change(pmid, mdat=day1, xml=_edit(arts[pmid][0], how))
        plan.append((pmid, what))

    def notice(kind: str, target: str, what: str, n: str = "") -> None:
        n = n or next(notice_pmid)
        pubtype, ref = {
            "erratum": ("Published Erratum", "ErratumFor"),
            "retraction": ("Retraction of Publication", "RetractionOf"),
            "concern": ("Expression of Concern", "ExpressionOfConcernFor"),
        }[kind]
        fake.add(
            n,
            terms={NOTICE_TERMS[kind]},
            edat=day1,
            xml=article_xml(
                n, title=f"{pubtype}: {target}", pubtypes=(pubtype,), links=((ref, target),), doi=f"10.5555/notice.{n}"
            ),
        )
        plan.append((n, f"{what} (notice of {target})"))

    def cycle2() -> None:
        # a later real version of the same PMID from another file
        for p in pmids:
            if len(arts[p]) > 1:
                fake.change(p, mdat=day1, xml=arts[p][-1].decode())
                plan.append((p, "later real version from shared/data"))
        for _ in range(3):
            change(next(pick), _set_title(suffix=" (revised)"), "title changed")
        for _ in range(2):  # erratum seen both ways: ErratumIn on the original and the notice itself
            target, n = next(pick), next(notice_pmid)
            change(target, _add_link("ErratumIn", n), "ErratumIn added")
            notice("erratum", target, "erratum notice", n)
        change(next(pick), _add_link("ErratumIn", "39999990"), "ErratumIn added, notice never searched")
        target, n = next(pick), next(notice_pmid)
        change(target, _both(_add_link("RetractionIn", n), _set_title(prefix="RETRACTED: ")), "RetractionIn + title")
        notice("retraction", target, "retraction notice", n)
        notice("erratum", next(pick), "erratum notice only, original unchanged")
        notice("concern", next(pick), "expression of concern notice only")
        notice("erratum", "1", "erratum notice naming an unknown PMID")
        for _ in range(2):
            change(next(pick), _add_mesh("Dump Testing"), "MeSH only")
        change(next(pick), _both(_add_mesh("Dump Testing"), _set_title(suffix=".")), "MeSH + title punctuation")
        for k, terms in enumerate(({"alpha", "beta"}, {"gamma"})):
            p = str(39_800_001 + k)
            fake.add(p, terms=terms, edat=day1, xml=article_xml(p, title=f"A new paper {k}", doi=f"10.5555/new.{p}"))
            plan.append((p, f"new paper, terms {sorted(terms)}"))

    try:
        out = _cycles(
            settings, f"sqlite:///{tmp / 'litwatch.db'}", [lambda: None, cycle2], {fake.url: "http://eutils/"}
        )
    finally:
        fake.stop()
    out["input"] = {
        "articles": len(pmids),
        "queries": queries,
        "cycle 2 changes": sorted(f"{p}: {w}" for p, w in plan),
    }
    return out


# ----------------------------------------------------------------------------- scenario: bench corpus


def scenario_corpus(tmp: Path, n: int) -> dict[str, Any]:
    from corpus import PMID_MARK, articles

    from helpers.fake_eutils import FakeEutils

    queries = 8
    day0 = DAY0.date()
    fake = FakeEutils().start()
    xml = articles(n)
    for i in range(n):
        pmid = str(36_000_000 + i)
        terms = {f"term{i % queries:02d}", f"term{(i + 1) % queries:02d}"}
        if i % 3 == 0:
            terms.add(f"term{(i + 3) % queries:02d}")
        fake.add(
            pmid,
            terms=terms,
            edat=day0 - timedelta(days=1 + i % 20),
            xml=xml[i].decode().replace(PMID_MARK.decode(), pmid),
        )
    body = (
        _pubmed_block(fake.url)
        + "queries:\n"
        + "".join(f"  - name: c{q:02d}\n    pubmed: term{q:02d}\n" for q in range(queries))
    )
    try:
        out = _cycles(_config(tmp, body), f"sqlite:///{tmp / 'litwatch.db'}", [lambda: None, lambda: None])
    finally:
        fake.stop()
    out["input"] = {"articles": n, "queries": queries, "cycle 2": "quiet: nothing changed"}
    return out


# ----------------------------------------------------------------------------- scenario: feeds


FEED_A_MATCH = '(plant* OR cell* OR protein* OR gene* OR "example entry") AND NOT mouse'
FEED_B_MATCH = 'forest* OR vegetation OR "example entry" OR drug* OR plant* OR FDA'
CHANGED_FEED = "general/reader/full.rss"
TITLE_OLD = b"<title>Example entry</title>"
TITLE_NEW = b"<title>Example entry, revised</title>"
NEW_ITEM = (
    b"<item><title>Plant cell walls under drought: an example entry</title>"
    b"<link>http://www.example.com/blog/post/99</link>"
    b'<guid isPermaLink="false">dump-new-item-99</guid>'
    b"<description>Forest and plant cell responses.</description></item>\n</channel>"
)


def scenario_feeds(tmp: Path) -> dict[str, Any]:
    from helpers.feedhost import FeedHost

    root = SHARED_DATA / "feeds"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"no feeds under {root}")
    names = {f: "f_" + "".join(c if c.isalnum() else "_" for c in f) for f in files}
    host = FeedHost().start()
    for f in files:
        host.feed("/" + f, (root / f).read_bytes())
    feeds_yaml = "feeds:\n" + "".join(f"  - name: {names[f]}\n    url: {host.url('/' + f)}\n" for f in files)
    a = [names[f] for f in files if f.split("/")[0] in ("journals", "general")]
    b = [names[f] for f in files if f.split("/")[0] in ("journals", "regulators", "edge")] + [names[CHANGED_FEED]]
    queries = {"feed_a": (a, FEED_A_MATCH), "feed_b": (b, FEED_B_MATCH)}
    body = (
        feeds_yaml
        + "queries:\n"
        + "".join(f"  - name: {q}\n    feeds: [{', '.join(fs)}]\n    match: '{m}'\n" for q, (fs, m) in queries.items())
    )

    def cycle2() -> None:
        raw = (root / CHANGED_FEED).read_bytes()
        if TITLE_OLD not in raw:
            raise SystemExit(f"{CHANGED_FEED} no longer has {TITLE_OLD!r}: update dump_state.py")
        host.feed("/" + CHANGED_FEED, raw.replace(TITLE_OLD, TITLE_NEW, 1).replace(b"</channel>", NEW_ITEM, 1))

    try:
        out = _cycles(
            _config(tmp, body),
            f"sqlite:///{tmp / 'litwatch.db'}",
            [lambda: None, cycle2],
            {host.base: "http://feedhost"},
        )
    finally:
        host.stop()
    out["input"] = {
        "feeds": len(files),
        "queries": {q: {"feeds": len(fs), "match": m} for q, (fs, m) in queries.items()},
        "cycle 2 changes": [f"{CHANGED_FEED}: one title changed, one item added"],
    }
    return out


# ----------------------------------------------------------------------------- compare


def compare(a: Path, b: Path, max_lines: int = 60) -> int:
    da, db = json.loads(a.read_text(encoding="utf-8")), json.loads(b.read_text(encoding="utf-8"))
    if da == db:
        print(f"identical: {a} and {b}")
        return 0
    print(f"DIFFERENT: {a} and {b}")
    for section in sorted(set(da) | set(db)):
        sa_, sb_ = da.get(section), db.get(section)
        if sa_ == sb_:
            continue
        if not isinstance(sa_, dict) or not isinstance(sb_, dict):
            print(f"  {section}: only in {'one' if sa_ is None or sb_ is None else 'both, differs'}")
            continue
        for part in sorted(set(sa_) | set(sb_)):
            xa, xb = sa_.get(part), sb_.get(part)
            if xa == xb:
                continue
            if isinstance(xa, list) and isinstance(xb, list):
                ka = {json.dumps(r, sort_keys=True, ensure_ascii=False) for r in xa}
                kb = {json.dumps(r, sort_keys=True, ensure_ascii=False) for r in xb}
                print(
                    f"  {section}.{part}: {len(ka - kb)} only in A, {len(kb - ka)} only in B (of {len(xa)} / {len(xb)})"
                )
                lines = [f"    - {s}" for s in sorted(ka - kb)] + [f"    + {s}" for s in sorted(kb - ka)]
                for line in lines[:max_lines]:
                    print(line[:400])
                if len(lines) > max_lines:
                    print(f"    … {len(lines) - max_lines} more")
            else:
                ta = json.dumps(xa, indent=1, sort_keys=True, ensure_ascii=False).splitlines()
                tb = json.dumps(xb, indent=1, sort_keys=True, ensure_ascii=False).splitlines()
                print(f"  {section}.{part}:")
                for line in list(difflib.unified_diff(ta, tb, "A", "B", lineterm="", n=1))[2 : 2 + max_lines]:
                    print("    " + line[:400])
    return 1


# ----------------------------------------------------------------------------- main

SCENARIOS = ("pubmed", "corpus", "feeds")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, help="write the dump here")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--corpus", type=int, default=3000, help="records in the corpus scenario")
    ap.add_argument("--table", action="store_true", help="print a markdown table of counts and the dump's sha256")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        ap.error("give a file to write the dump to, or --compare A B")
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    dump: dict[str, Any] = {}
    for name in only:
        t = time.perf_counter()
        print(f"{name}:", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix=f"litwatch-dump-{name}-") as d:
            if name == "pubmed":
                dump[name] = scenario_pubmed(Path(d))
            elif name == "corpus":
                dump[name] = scenario_corpus(Path(d), args.corpus)
            else:
                dump[name] = scenario_feeds(Path(d))
        counts = dump[name]["counts"]
        print(f"  {name}: {json.dumps(counts)} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    text = json.dumps(dump, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text.encode()):,} bytes", file=sys.stderr)
    if args.table:
        print(summary(dump, text, args.out))
    return 0


def summary(dump: dict[str, Any], text: str, path: Path) -> str:
    import hashlib

    from common import table

    rows = []
    for name, sec in dump.items():
        c = sec["counts"]
        rows.append(
            [name]
            + [" → ".join(f"{c[k][part]:,}" for k in sorted(c)) for part in ("records", "versions", "events", "hits")]
            + [hashlib.sha256(json.dumps(sec, sort_keys=True).encode()).hexdigest()[:16]]
        )
    return table(
        "Behaviour dump (bench/dump_state.py): state after cycle 1 → cycle 2",
        ["scenario", "records", "versions", "events", "hits", "sha256 (section)"],
        rows,
        note=f"Dump {path} ({len(text.encode()):,} bytes, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}). "
        "Equal hashes mean identical behaviour; compare two dumps with "
        "`python bench/dump_state.py --compare A B` for a readable diff.",
    )


if __name__ == "__main__":
    sys.exit(main())
