"""Pure grouping of pending events into what a digest shows.

Sections in order: approvals; errata, retractions and concerns; new papers; updates.
A record stands once per kind with every query that matched it; a feed entry and a
PubMed record with the same DOI are one item with both links. `max_items` caps the
items of one mail; the events of the items left out stay pending for the next one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..events import flags
from ..records import PUBMED, Record
from ..store import PendingEvent

SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("approvals", "Approvals", ("approval",)),
    ("notices", "Errata, retractions and concerns", ("retraction", "concern", "erratum")),
    ("new", "New papers", ("new",)),
    ("updates", "Updates", ("update",)),
)
_ISO_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT")
_KIND_ORDER = {k: i for i, k in enumerate(("approval", "retraction", "concern", "erratum", "new", "update"))}
KIND_LABEL = {
    "approval": "Approval",
    "retraction": "Retraction",
    "concern": "Expression of concern",
    "erratum": "Erratum",
    "new": "New",
    "update": "Update",
}
_COUNT_WORDS = {
    "approval": ("approval", "approvals"),
    "erratum": ("erratum", "errata"),
    "retraction": ("retraction", "retractions"),
    "concern": ("expression of concern", "expressions of concern"),
    "new": ("new paper", "new papers"),
    "update": ("update", "updates"),
}
_KIND_FLAG = {
    "retraction": "retracted",
    "concern": "expression of concern",
    "erratum": "corrected",
    "update": "newer version",
}
_LINK_RANK = {"PubMed": 0, "DOI": 1}
LONG_TEXT = 160  # longer old/new values are shown as a word diff


@dataclass
class Change:
    """One field's change. Long text and lists also carry `words`, a compact diff:
    [(op, text)] with op in "=", "-", "+", whose texts join with `sep`."""

    field: str
    old: str
    new: str
    words: list[tuple[str, str]] | None = None
    sep: str = " "


@dataclass
class Item:
    kind: str
    record: Record
    links: list[tuple[str, str]]  # (label, url)
    queries: list[str]
    terms: list[str]
    event_ids: list[int]
    created_at: datetime
    notices: list[dict[str, Any]] = field(default_factory=list)
    newer: list[dict[str, Any]] = field(default_factory=list)  # newer versions (PubMed UpdateIn)
    changes: list[Change] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # who told us: "Retraction Watch", "PubMed"
    type_label: str = ""  # the notice's own name, when its source gives one: "Correction"

    @property
    def label(self) -> str:
        """ "Retraction — Retraction Watch", "Correction — publisher notice", "Erratum — PubMed"."""
        if self.kind == "update" and self.newer:
            base = "Newer version"  # not an erratum: the paper has a newer version (SPEC.md, Events)
        else:
            base = self.type_label or KIND_LABEL[self.kind]
        return f"{base} — {', '.join(self.sources)}" if self.sources else base

    @property
    def status(self) -> list[str]:
        """The record's standing, less what the item's own kind already says
        (a retraction item need not also be flagged "retracted")."""
        return [f for f in self.flags if f != _KIND_FLAG.get(self.kind)]

    @property
    def url(self) -> str:
        return self.links[0][1] if self.links else ""

    @property
    def authors_short(self) -> str:
        a = list(self.record.authors)
        return ", ".join(a[:3]) + (" et al." if len(a) > 3 else "")

    @property
    def citation(self) -> str:
        r = self.record
        parts = [r.journal]
        date = r.pub_date or r.article_date or r.entrez_date
        if date:
            parts.append(date[:10] if _ISO_DATETIME.match(date) else date)  # a feed's time of day is noise here
        vol = r.volume + (f"({r.issue})" if r.issue else "")
        if vol:
            parts.append(vol + (f":{r.pages}" if r.pages else ""))
        return ". ".join(p for p in parts if p)


@dataclass
class Section:
    key: str
    title: str
    items: list[Item]


@dataclass
class DigestData:
    name: str
    sections: list[Section]
    counts: dict[str, int]
    more_waiting: int
    period_start: datetime | None
    period_end: datetime
    event_ids: list[int]
    queries: list[str]
    failing: list[dict[str, Any]] = field(default_factory=list)
    config: str = ""

    @property
    def items(self) -> int:
        return sum(len(s.items) for s in self.sections)

    @property
    def summary(self) -> str:
        return summary_line(self.counts)


def summary_line(counts: dict[str, int]) -> str:
    parts = []
    for kind in ("approval", "erratum", "retraction", "concern", "new", "update"):
        n = counts.get(kind, 0)
        if n:
            one, many = _COUNT_WORDS[kind]
            parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts) or "nothing new"


def _links(r: Record) -> list[tuple[str, str]]:
    out = []
    if r.source == PUBMED:
        out.append(("PubMed", r.web_url))
    elif r.url:
        out.append((r.source.removeprefix("feed:"), r.url))
    if r.doi:
        out.append(("DOI", r.doi_url))
    return out


def _item_key(e: PendingEvent) -> tuple[str, str]:
    doi = e.record.doi.lower()
    return (e.kind, f"doi:{doi}" if doi else f"id:{e.record_id}")


def group(
    name: str,
    events: Sequence[PendingEvent],
    *,
    max_items: int,
    now: datetime,
    queries: Sequence[str] = (),
    failing: Sequence[dict[str, Any]] = (),
    config: str = "",
) -> DigestData:
    items: dict[tuple[str, str], Item] = {}
    for e in events:
        key = _item_key(e)
        item = items.get(key)
        if item is None:
            item = items[key] = Item(
                kind=e.kind,
                record=e.record,
                links=_links(e.record),
                queries=[],
                terms=[],
                event_ids=[],
                created_at=e.created_at,
                flags=flags(e.record),
            )
        elif e.record.source == PUBMED and item.record.source != PUBMED:
            # one paper, one line: prefer the PubMed record's metadata, keep both links
            item.record = e.record
        for link in _links(e.record):
            if link not in item.links:
                item.links.append(link)
        item.event_ids.append(e.id)
        if e.query not in item.queries:
            item.queries.append(e.query)
        for t in e.terms:
            if t not in item.terms:
                item.terms.append(t)
        _merge_detail(item, e.detail)
    ordered = sorted(items.values(), key=lambda i: (_KIND_ORDER[i.kind], i.created_at, i.event_ids[0]))
    for item in ordered:
        # PubMed, then DOI, then feed links, whichever event came first: the title links the first
        item.links.sort(key=lambda lk: _LINK_RANK.get(lk[0], len(_LINK_RANK)))
        item.queries.sort()
    shown, rest = ordered[:max_items], ordered[max_items:]
    sections = []
    counts: dict[str, int] = {}
    for section_key, title, kinds in SECTIONS:
        sec_items = [i for i in shown if i.kind in kinds]
        if sec_items:
            sections.append(Section(section_key, title, sec_items))
        for i in sec_items:
            counts[i.kind] = counts.get(i.kind, 0) + 1
    start = min((e.created_at for e in events), default=None)
    return DigestData(
        name=name,
        sections=sections,
        counts=counts,
        more_waiting=len(rest),
        period_start=start,
        period_end=now,
        event_ids=[eid for i in shown for eid in i.event_ids],
        queries=list(queries),
        failing=list(failing),
        config=config,
    )


NOTICE_KINDS = frozenset(("retraction", "concern", "erratum"))


def _merge_detail(item: Item, detail: dict[str, Any]) -> None:
    sources = [str(s) for s in detail.get("sources") or [detail.get("source_label")] if s]
    if not sources and item.kind in NOTICE_KINDS:
        sources = ["PubMed"]  # events from PubMed's CommentsCorrections carry no source
    for src in sources:
        if src not in item.sources:
            item.sources.append(src)
    if detail.get("label") and not item.type_label:
        item.type_label = str(detail["label"])
    notice = detail.get("notice")
    if notice:  # every key the templates read: PubMed's notices have no date, Crossref's no PMID
        notice = {"pmid": "", "doi": "", "title": "", "url": "", "date": "", **notice}
    if notice and notice not in item.notices:
        item.notices.append(notice)
    for pmid in detail.get("notices", []):
        if not any(n.get("pmid") == pmid for n in item.notices) and not str(pmid).startswith("ref:"):
            url = f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
            item.notices.append({"pmid": pmid, "url": url, "title": "", "doi": "", "date": ""})
    for newer in detail.get("newer", []):
        if newer not in item.newer:
            item.newer.append(newer)
    for fname, old, new in detail.get("changes", []):
        if any(c.field == fname for c in item.changes):
            continue
        item.changes.append(_change(fname, old, new))


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def _change(fname: str, old: Any, new: Any) -> Change:
    a, b = _as_text(old), _as_text(new)
    ch = Change(fname, a, b)
    if isinstance(old, list) and isinstance(new, list) and old and new:
        # author lists: "Liang Y" added reads better than two struck-through lists
        ch.words, ch.sep = _diff([str(v) for v in old], [str(v) for v in new], "; ", 3), "; "
    elif len(a) > LONG_TEXT or len(b) > LONG_TEXT:
        ch.words = word_diff(a, b)
    return ch


def word_diff(old: str, new: str, context: int = 8) -> list[tuple[str, str]]:
    """A compact word diff: changed runs in full, unchanged runs cut to `context` words."""
    return _diff(old.split(), new.split(), " ", context)


def _diff(a: list[str], b: list[str], sep: str, context: int) -> list[tuple[str, str]]:
    out: list[tuple[str, list[str]]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            words = a[i1:i2]
            if len(words) > 2 * context:
                words = [*words[:context], "…", *words[-context:]]
            out.append(("=", words))
            continue
        if i2 > i1:
            out.append(("-", a[i1:i2]))
        if j2 > j1:
            out.append(("+", b[j1:j2]))
    if out and out[0][0] == "=" and len(out[0][1]) > context:
        out[0] = ("=", ["…", *out[0][1][-context:]])
    if out and out[-1][0] == "=" and len(out[-1][1]) > context:
        out[-1] = ("=", [*out[-1][1][:context], "…"])
    return [(op, sep.join(words)) for op, words in out]
