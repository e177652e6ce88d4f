"""Works: pure decisions about which records are one work, and which news of a work a
recipient has heard already. No I/O; every input is an argument (issue 25).

A reader is told about a work — a paper, an approval — not about the rows litwatch
stores for it (SPEC.md, "Alerts are about works, not rows"). Records join a work by the
identifiers they share (`records.work_idents`: DOI, PMID, PMCID; a regulator's
application and submission, or product number and decision); a press release joins the
decision it names (`approvals.same_decision`). Ingest makes the joins as records arrive
(`ingest.join_works`), merging two works when a later record names both.

Two records with one DOI and clearly different titles (`title_clash`: a publisher's
DOI error, a DOI pasted into the wrong feed item) are not joined silently: the later
one keeps a work of its own and the doubt is stored, which `status` and `history` show.

A recipient hears each news of a work once (`heard`), whatever record or query the
event came from: its arrival (`new` or `approval`), each notice (erratum, retraction,
concern, newer version: the same one from another source is the same news), each
change of substance.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .records import DeliveredNews, PendingEvent, Record, work_idents

ARRIVAL_KINDS = frozenset({"new", "approval"})
NOTICE_KINDS = frozenset({"erratum", "retraction", "concern", "update"})
# Below this similarity (difflib ratio of the normalised titles), two titles are of
# two papers: a feed's "[ASAP]" prefix or a subtitle dropped stays well above it.
TITLE_SIMILAR = 0.6
_WORD = re.compile(r"\w+")


def _title_words(title: str) -> list[str]:
    return _WORD.findall(title.lower())


def title_clash(a: str, b: str) -> bool:
    """Whether two titles are clearly of two different papers: both known, neither's
    words contained in the other's, and little alike. A missing title clashes with
    nothing (a feed item without a title is joined by its DOI)."""
    wa, wb = _title_words(a), _title_words(b)
    if not wa or not wb:
        return False
    ta, tb = " ".join(wa), " ".join(wb)
    if ta in tb or tb in ta:
        return False
    return difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).ratio() < TITLE_SIMILAR


# --------------------------------------------------------------------------- heard


def notice_identifiers(detail: Mapping[str, Any]) -> set[str]:
    """The notices an event's detail names: "doi:…" and "pmid:…" of `notices` (PMIDs),
    `notice` and `newer` — the same notice learnt from PubMed and Crossref shares one."""
    out = {f"pmid:{p}" for p in detail.get("notices", []) if p and not str(p).startswith("ref:")}
    for shown in [detail.get("notice") or {}, *detail.get("newer", [])]:
        if isinstance(shown, dict):
            if shown.get("doi"):
                out.add("doi:" + str(shown["doi"]).lower())
            if shown.get("pmid"):
                out.add(f"pmid:{shown['pmid']}")
    return out


def same_news(kind: str, dedup: str, detail: Mapping[str, Any], other: DeliveredNews) -> bool:
    """Whether an event (of the same work as `other`) tells what `other` told."""
    if kind in ARRIVAL_KINDS:
        return other.kind in ARRIVAL_KINDS
    if kind != other.kind:
        return False
    if dedup == other.dedup:
        return True
    if kind == "retraction":
        return True  # a work is retracted once (events.py, notices.py rule 1)
    if kind == "update" and dedup.startswith("update:"):
        return False  # a change of substance: its own news, by its own key
    return bool(notice_identifiers(detail) & notice_identifiers(other.detail))


def heard(pending: Sequence[PendingEvent], delivered: Iterable[DeliveredNews]) -> dict[int, int]:
    """The pending events whose news the recipient has had already, through another
    event of the same work: event id → the outbox message that told it. They are bound
    to that message, never mailed (a later source of the same news adds its link)."""
    by_work: dict[int, list[DeliveredNews]] = {}
    for d in delivered:
        by_work.setdefault(d.work_id, []).append(d)
    out: dict[int, int] = {}
    for e in pending:
        if not e.work_id:
            continue
        for d in by_work.get(e.work_id, []):
            if d.event_id != e.id and same_news(e.kind, e.dedup, e.detail, d):
                out[e.id] = d.outbox_id
                break
    return out


__all__ = [
    "ARRIVAL_KINDS",
    "cluster",
    "NOTICE_KINDS",
    "TITLE_SIMILAR",
    "heard",
    "notice_identifiers",
    "same_news",
    "title_clash",
]


# --------------------------------------------------------------------------- building works


def cluster(records: Sequence[tuple[int, Record]]) -> tuple[dict[int, int], dict[str, int], list[tuple[int, int, str]]]:
    """Works of stored records, in the order they were stored (migration 0012 builds
    the works of a database from its records this way; ingest does the same one batch
    at a time): record id → the id of the first record of its work, identifier → that
    same id, and the doubts (record, the other record, identifier) of DOIs not joined."""
    root: dict[int, int] = {}
    keys: dict[str, int] = {}
    titles: dict[int, list[tuple[int, str]]] = {}

    def find(r: int) -> int:
        while root[r] != r:
            root[r] = root[root[r]]
            r = root[r]
        return r

    doubts: list[tuple[int, int, str]] = []
    for rid, rec in records:
        root[rid] = rid
        mine: list[str] = []
        found: set[int] = set()
        for ident in work_idents(rec):
            other = keys.get(ident)
            if other is None:
                mine.append(ident)
                continue
            w = find(other)
            members = titles.get(w, [])
            if ident.startswith("doi:") and members and all(title_clash(rec.title, t) for _, t in members):
                doubts.append((rid, members[0][0], ident))
                continue
            found.add(w)
        w = min(found) if found else rid
        for other in found | {rid}:
            if other != w:
                root[other] = w
                titles.setdefault(w, []).extend(titles.pop(other, []))
        titles.setdefault(w, []).append((rid, rec.title))
        for ident in mine:
            keys[ident] = w
    return {r: find(r) for r in root}, {i: find(w) for i, w in keys.items()}, doubts
