"""Benchmark 2: feed parsing. litwatch's feed path (`parse_feed`: identity, plain-text
and sanitised-HTML summaries, DOIs, dates, authors; then a `match` expression per query
on title and summary) vs plain feedparser (+ the naive lower-case substring match a
one-off script would do) on one 5,000-item RSS 2.0 feed made from the bench corpus
(titles, abstracts as HTML descriptions, links, guids, dates, authors, DOIs).
Best of N, interleaved.

    python bench/bench_feeds.py [--items 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from common import table

MATCH = '(cancer OR tumour OR tumor OR "cell line*") AND NOT mouse'
NAIVE_TERMS = ("cancer", "tumour", "tumor", "cell line")


def make_feed(n: int) -> bytes:
    from corpus import build

    from litwatch.parse.pubmed import parse_pubmed

    with open(build(10_000), "rb") as f:
        recs = [r for _, r in zip(range(n), parse_pubmed(f), strict=False)]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    items = []
    for i, r in enumerate(recs):
        abstract = r.abstract[:900]
        desc = f"<p><i>{escape(r.journal)}</i>, {escape(r.pub_date)}</p><p>{escape(abstract)}</p>" + (
            f'<p><a href="https://doi.org/{escape(r.doi)}">doi:{escape(r.doi)}</a></p>' if r.doi else ""
        )
        items.append(
            f"<item><title>{escape(r.title)}</title>"
            f"<link>https://journal.example.org/article/{r.key}</link>"
            f'<guid isPermaLink="false">bench-{r.key}</guid>'
            f"<pubDate>{format_datetime(t0 - timedelta(minutes=i))}</pubDate>"
            + "".join(f"<dc:creator>{escape(a)}</dc:creator>" for a in r.authors[:3])
            + f"<description>{escape(desc)}</description></item>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<channel><title>Bench Journal</title><link>https://journal.example.org/</link>"
        "<description>bench</description>\n" + "".join(items) + "</channel></rss>\n"
    ).encode()


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    import feedparser

    from litwatch.match import compile_match
    from litwatch.parse.feeds import parse_feed

    data = make_feed(args.items)
    matcher = compile_match(MATCH)

    def fp_plain() -> tuple[int, int]:
        d = feedparser.parse(io.BytesIO(data))
        return len(d.entries), -1

    def fp_naive() -> tuple[int, int]:
        d = feedparser.parse(io.BytesIO(data))
        hit = 0
        for e in d.entries:
            text = (e.get("title", "") + " " + e.get("summary", "")).lower()
            hit += any(t in text for t in NAIVE_TERMS) and "mouse" not in text
        return len(d.entries), hit

    def lw_parse() -> tuple[int, int]:
        return len(parse_feed(data, feed_name="bench").records), -1

    def lw_match() -> tuple[int, int]:
        recs = parse_feed(data, feed_name="bench").records
        return len(recs), sum(1 for r in recs if matcher.hits(r.title, r.abstract) is not None)

    contenders: dict[str, Any] = {
        "feedparser.parse": fp_plain,
        "feedparser.parse + naive substring match": fp_naive,
        "litwatch parse_feed": lw_parse,
        "litwatch parse_feed + match": lw_match,
    }
    best: dict[str, float] = {}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            t = time.perf_counter()
            counts[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    base = best["feedparser.parse"]
    mb = len(data) / 1e6
    rows = [
        [
            name,
            counts[name][0],
            "-" if counts[name][1] < 0 else counts[name][1],
            s,
            counts[name][0] / s,
            mb / s,
            f"{s / base:.2f}×",
        ]
        for name, s in best.items()
    ]
    text = table(
        f"Feed parsing: one RSS 2.0 feed, {args.items:,} items, {mb:.1f} MB, best of {args.repeat}",
        ["contender", "entries", "matched", "s", "entries/s", "MB/s", "time vs feedparser"],
        rows,
        note=f"match expression: `{MATCH}` (whole words, NFKC, per text). The naive match is substring "
        "search on lower-cased title+summary (it also hits 'tumours', 'precancerous', HTML markup).",
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
