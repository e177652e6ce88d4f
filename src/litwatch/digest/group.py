"""Pure grouping of pending events into what a digest shows.

Sections in order: approvals; errata, retractions and concerns; new papers; updates.
A record stands once per kind with every query that matched it; a feed entry and a
PubMed record with the same DOI are one item with both links. `max_items` caps the
items of one mail; the events of the items left out stay pending for the next one.

One approval, one line (issue 17): an item of a regulator's own data (an openfda or ema
feed: ``Record.regulator`` set) shows regulator, product, substance, sponsor, date,
kind, flags and its documents. A press release that announces the same approval (same
regulator — a press item linking to fda.gov counts as FDA, to ema.europa.eu as EMA —, the
record's substance or brand named in the release's title or summary, dates at most
`SAME_APPROVAL_DAYS` apart) joins that line with its link; a PubMed "First Approval"
paper whose title names a substance or brand approved in the same digest is placed
right after it (`Item.about`). Sources whose data has stopped moving (`stale`) are
listed in the footer next to the failing ones."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..approvals import day_of, decision_names, named_in, press_regulator, same_decision
from ..events import flags
from ..records import PUBMED, PendingEvent, Record, feed_name

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
    regulator: str = ""  # "FDA", "EMA": a regulator's record, or a press release from its site
    announced: list[tuple[str, str]] = field(default_factory=list)  # (title, url): press releases joined in
    about: str = ""  # a paper placed after the approval it names: the name they share
    record_ids: set[int] = field(default_factory=set)  # the records of the work the item shows

    @property
    def regulatory(self) -> bool:
        """A record of a regulator's own data (openfda / ema), not a press release."""
        return bool(self.record.regulator)

    @property
    def reg_kind(self) -> str:
        """What was decided, as a reader says it: "new molecular entity", "new
        indication", "CHMP opinion", "EU authorisation", …; "press release" for a
        release on its own."""
        r = self.record
        if not r.regulator:
            return "press release" if self.regulator else ""
        if r.reg_kind == "new application":
            for flag in ("new molecular entity", "new active ingredient"):
                if flag in r.reg_flags:
                    return flag
        return r.reg_kind

    @property
    def reg_flags(self) -> list[str]:
        return [f for f in self.record.reg_flags if f != self.reg_kind]

    @property
    def reg_date(self) -> str:
        d = _day(self.record.pub_date)
        return d.isoformat() if d else ""

    @property
    def reg_summary(self) -> str:
        """Regulator, date, kind and flags: "FDA, 2026-01-15: new application (priority review, orphan)"."""
        if not self.regulator:
            return ""
        head = ", ".join(p for p in (self.regulator, self.reg_date) if p)
        flags = f" ({', '.join(self.reg_flags)})" if self.reg_flags else ""
        return f"{head}: {self.reg_kind}{flags}" if self.reg_kind else head

    @property
    def product_line(self) -> str:
        """Product, substance and sponsor: "TRAILNOVA (aponermin); sponsor: EXAMPLE BIOSCIENCES INC"."""
        r = self.record
        substance = r.substance.lower() if r.substance.isupper() else r.substance
        if r.product and substance and substance.casefold() != r.product.casefold():
            what = f"{r.product} ({substance})"
        else:
            what = r.product or substance
        parts = [what] if what else []
        if r.sponsor:
            parts.append(f"sponsor: {r.sponsor}")
        return "; ".join(parts)

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
        if self.regulatory and self.record.url:
            return self.record.url  # the Drugs@FDA or EMA page, not the letter's PDF
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
    stale: list[dict[str, Any]] = field(default_factory=list)  # {"name", "note"}: sources whose data stopped moving

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
    if r.regulator:
        # the regulator's documents: approval letter, label, Drugs@FDA or EMA page
        out = [(label[:1].upper() + label[1:], url) for label, url in r.documents]
        if r.url and all(url != r.url for _, url in out):
            out.append((feed_name(r.source), r.url))
        return out
    if r.source == PUBMED:
        out.append(("PubMed", r.web_url))
    elif r.url:
        out.append((feed_name(r.source), r.url))
    if r.doi:
        out.append(("DOI", r.doi_url))
    return out


def _item_key(e: PendingEvent) -> tuple[str, str]:
    """One line per work and kind (issue 25): a paper's arrival from a feed and from
    PubMed, an approval's press release and the regulator's record. Events of no known
    work (built by hand) fall back to the DOI, as before works."""
    kind = "arrival" if e.kind in ("new", "approval") else e.kind
    if e.work_id:
        return (kind, f"work:{e.work_id}")
    doi = e.record.doi.lower()
    return (e.kind, f"doi:{doi}" if doi else f"id:{e.record_id}")


def _add_links(item: Item, r: Record) -> None:
    if item.record.regulator and not r.regulator:
        return  # a press release joins a decision's line as announcing it (`_add_record`)
    for link in _links(r):
        if link not in item.links:
            item.links.append(link)


def _add_record(item: Item, e: PendingEvent) -> None:
    """Another record of the item's work: PubMed's metadata is preferred for a paper, the
    regulator's record for a decision (a press release joins it as announcing it)."""
    r = e.record
    if e.record_id in item.record_ids:
        return
    if e.kind == "approval" and item.kind == "new":
        item.kind = "approval"  # the work's arrival is an approval
    if r.regulator and not item.record.regulator:
        press = item.record
        item.record, item.regulator = r, r.regulator
        if press.source != PUBMED and press.url:
            item.announced.append((press.title, press.url))
            item.links = [lk for lk in item.links if lk[1] != press.url]
            item.links.append((f"{r.regulator} press release", press.url))
    elif item.record.regulator and not r.regulator:
        if r.source != PUBMED and r.url and (r.title, r.url) not in item.announced:
            item.announced.append((r.title, r.url))
            if all(url != r.url for _, url in item.links):
                item.links.append((f"{item.regulator} press release", r.url))
    elif r.source == PUBMED and item.record.source != PUBMED:
        item.record = r  # one paper, one line: prefer the PubMed record's metadata, keep both links


def group(
    name: str,
    events: Sequence[PendingEvent],
    *,
    max_items: int,
    now: datetime,
    queries: Sequence[str] = (),
    failing: Sequence[dict[str, Any]] = (),
    config: str = "",
    stale: Sequence[dict[str, Any]] = (),
    work_records: Mapping[int, Sequence[tuple[int, Record]]] | None = None,
) -> DigestData:
    """The digest of `events`, one item per work and kind; `work_records` (work id →
    [(record id, record)]) lends each item the links of its work's other records."""
    work_records = work_records or {}
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
                regulator=_regulator(e.record, e.kind),
            )
        else:
            _add_record(item, e)
        _add_links(item, e.record)
        item.record_ids.add(e.record_id)
        item.event_ids.append(e.id)
        if e.query not in item.queries:
            item.queries.append(e.query)
        for t in e.terms:
            if t not in item.terms:
                item.terms.append(t)
        _merge_detail(item, e.detail)
    for (_, unit), item in items.items():
        # the work's other records (another source of the same paper or decision): their links
        first = next(e for e in events if e.id == item.event_ids[0])
        for rid, rec in work_records.get(first.work_id, ()) if unit.startswith("work:") else ():
            if rid not in item.record_ids:
                _add_record(item, replace(first, record_id=rid, record=rec, kind=item.kind))
                _add_links(item, rec)
                item.record_ids.add(rid)
    ordered = sorted(items.values(), key=_order)
    ordered = join_approvals(ordered)
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
        stale=list(stale),
    )


NOTICE_KINDS = frozenset(("retraction", "concern", "erratum"))


def _order(i: Item) -> tuple[int, datetime, int]:
    return (_KIND_ORDER[i.kind], i.created_at, i.event_ids[0])


# --------------------------------------------------------------------------- approvals


def join_approvals(ordered: list[Item]) -> list[Item]:
    """The approvals of `ordered` (sorted by `_order`) made one line per approval: each
    press release that announces a regulator's record of the digest is joined to it, and
    each paper naming what such a record approved follows it. Other items are untouched."""
    approvals = [i for i in ordered if i.kind == "approval"]
    if not any(i.regulatory for i in approvals):
        return ordered
    records = [i for i in approvals if i.regulatory]
    joined: set[int] = set()
    for press in approvals:
        if press.regulatory or not press.regulator or press.record.source == PUBMED:
            continue
        target = _same_approval(press, records)
        if target is not None:
            _join(target, press)
            joined.add(id(press))
    rest = sorted((i for i in approvals if id(i) not in joined), key=_order)
    papers: dict[int, list[Item]] = {}
    placed: set[int] = set()
    for paper in rest:
        if paper.regulatory or paper.record.source != PUBMED:
            continue
        for rec in records:
            name = _named_in(_names(rec.record), paper.record.title)
            if name:
                paper.about = name
                papers.setdefault(id(rec), []).append(paper)
                placed.add(id(paper))
                break
    line: list[Item] = []
    for item in rest:
        if id(item) in placed:
            continue
        line.append(item)
        line.extend(papers.get(id(item), []))
    return line + [i for i in ordered if i.kind != "approval"]  # approvals come first


def _same_approval(press: Item, records: Sequence[Item]) -> Item | None:
    """The regulator's record a press release announces (`approvals.same_decision`)."""
    when = _day(press.record.pub_date) or press.created_at.date()
    return same_decision(press.record, press.regulator, when, [(rec, rec.record) for rec in records])


def _join(target: Item, press: Item) -> None:
    if (press.record.title, press.record.url) not in target.announced:
        target.announced.append((press.record.title, press.record.url))
    if press.record.url and all(url != press.record.url for _, url in target.links):
        target.links.append((f"{press.regulator} press release", press.record.url))
    target.event_ids = sorted(target.event_ids + press.event_ids)
    for q in press.queries:
        if q not in target.queries:
            target.queries.append(q)
    for t in press.terms:
        if t not in target.terms:
            target.terms.append(t)
    target.created_at = min(target.created_at, press.created_at)


_names = decision_names
_named_in = named_in
_day = day_of


def _regulator(r: Record, kind: str) -> str:
    """Whose decision an item reports: the record's regulator, or for a press release
    announcing an approval, the regulator whose site it is on."""
    if r.regulator:
        return r.regulator
    return press_regulator(r) if kind == "approval" else ""


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
