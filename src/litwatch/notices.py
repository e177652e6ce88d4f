"""One event per notice, whatever told us: pure decisions about reports of notices
(errata, retractions, expressions of concern, newer versions and other updates) that
PubMed and Crossref (the publisher, Retraction Watch) make about a stored record.
No I/O; every input, `now` included, is an argument.

A new report is the same notice as an event already stored for that record when:

1. **retraction** — there is one: a record is retracted once, and `events.py` keys its
   retraction by the record alone (`retraction:{source}:{key}`). A partial retraction,
   a withdrawal or a removal from Crossref, Retraction Watch's entry and PubMed's
   `RetractionIn` therefore all land on one key, so the same retraction from PubMed and
   Crossref is one event even when both reach the same poll and nothing is matched.
2. **the notice's identifiers agree** — its DOI (lower case) or its PMID is one the
   event's reports or detail already name. A PubMed notice record carries its DOI, so
   it meets Crossref's report by DOI; PubMed's `ErratumIn` on the original names the
   notice by PMID only, so it meets PubMed's own notice record by PMID.
3. **else (record, kind) within `WINDOW`** (6 weeks) of when litwatch learnt of the
   event — unless the identifiers disagree: both know a DOI (or both a PMID) and they
   differ, which makes two errata of one record a day apart two events. PubMed links a
   notice days to weeks after the publisher deposits it with Crossref; an erratum ten
   weeks after the last one, with nothing to tell them apart, is another erratum.

Addenda, clarifications and new editions ("update" from Crossref) have no PubMed
counterpart and are matched by DOI only; Crossref's `new_version` meets PubMed's
`UpdateIn` (both "newer version") by rules 2 and 3. An unknown Crossref type is kind
"other": recorded (history shows it), never an event, never a retraction.

Dedup keys of new events. The first report of a notice fixes its event's key and every
later report is attributed to that key (`NoticeReport.dedup`), so the keys need not be
equal by construction — only the retraction's is (rule 1). Crossref's keys mirror
`events.py`'s PubMed ones with the notice's DOI where PubMed puts the notice's PMID:
`erratum:{source}:{key}:doi:{doi}`, `concern:…:doi:{doi}`, `version:…:doi:{doi}`
(PubMed: `erratum:{source}:{key}:{pmid}`, `version:…:{pmid}`), `update:…:doi:{doi}`
for the other updates. A PMID never starts with "doi:", so a Crossref key and a PubMed
key never collide by accident, and the same Crossref notice seen again (`update-to` on
the notice, `updated-by` on the original) gives the same key: `add_events` keeps one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import events as ev
from .parse.crossref import OTHER, kind_of
from .records import SOURCE_LABELS, NewEvent, Notice, NoticeEvent, NoticeReport, Record

WINDOW = timedelta(weeks=6)  # rule 3: PubMed links a notice days to weeks after Crossref has it
PUBMED_SOURCE = "pubmed"
NOTICE_KINDS = ("erratum", "retraction", "concern", "update")
# the preprint servers report a preprint's journal version (issue 27, preprints.py)
PREPRINT_SOURCES = {"biorxiv": "bioRxiv", "medrxiv": "medRxiv"}
LABELS = {**SOURCE_LABELS, PUBMED_SOURCE: "PubMed", **PREPRINT_SOURCES}
# how the digest names a notice by Crossref's type ("Correction — publisher notice")
TYPE_LABELS = {
    "correction": "Correction",
    "erratum": "Erratum",
    "corrigendum": "Corrigendum",
    "retraction": "Retraction",
    "partial_retraction": "Partial retraction",
    "withdrawal": "Withdrawal",
    "removal": "Removal",
    "expression_of_concern": "Expression of concern",
    "addendum": "Addendum",
    "clarification": "Clarification",
    "new_version": "Newer version",
    "new_edition": "New edition",
}
_VERSION_TYPES = frozenset({"new_version", "UpdateIn"})  # a newer version of the paper, not a correction


def source_label(source: str) -> str:
    """Who told us, as a digest says it: "Retraction Watch", "publisher notice", "PubMed"."""
    return LABELS.get(source, source or "Crossref")


def _type(update_type: str) -> str:
    return update_type.strip().lower().replace("-", "_").replace(" ", "_")


def family(kind: str, update_type: str = "", dedup: str = "", source: str = "") -> str:
    """What a notice is matched among: its kind, with updates split into newer versions
    ("version": Crossref `new_version`; every PubMed update, `UpdateIn`/`UpdateOf`, is
    one) and the rest ("update": addenda, clarifications, new editions)."""
    if kind != "update":
        return kind
    if (
        source == PUBMED_SOURCE
        or update_type in _VERSION_TYPES
        or _type(update_type) in _VERSION_TYPES
        or dedup.startswith("version:")
    ):
        return "version"
    return "update"


def _family(r: NoticeReport, dedup: str = "") -> str:
    return family(r.kind, r.type, dedup or r.dedup, r.source)


# --------------------------------------------------------------------------- reports


def crossref_report(notice: Notice, record_id: int, now: datetime) -> NoticeReport:
    """Crossref's report of `notice` about the stored record `record_id`."""
    return NoticeReport(
        record_id=record_id,
        kind=kind_of(notice.type),
        type=notice.type,
        source=notice.source or "crossref",
        notice_doi=notice.notice_doi.lower(),
        notice_date=notice.date,
        reported_at=now,
    )


def pubmed_report(
    kind: str,
    record_id: int,
    now: datetime,
    *,
    notice_pmid: str = "",
    notice_doi: str = "",
    ref_type: str = "",
    date: str = "",
) -> NoticeReport:
    """PubMed's report: from the original's CommentsCorrections (`ErratumIn` names the
    notice's PMID, or "ref:<citation>" without one) or from the notice record itself
    (its PMID and its DOI)."""
    return NoticeReport(
        record_id=record_id,
        kind=kind,
        type=ref_type,
        source=PUBMED_SOURCE,
        notice_doi=notice_doi.lower(),
        notice_key=notice_pmid,
        notice_date=date,
        reported_at=now,
    )


# --------------------------------------------------------------------------- events


def crossref_event(notice: Notice, target: Record) -> NewEvent | None:
    """The event a Crossref notice gives the stored record `target`; None for a type
    litwatch does not know (kind "other": recorded, never mailed)."""
    kind = kind_of(notice.type)
    if kind == OTHER:
        return None
    ident = f"{target.source}:{target.key}"
    doi = notice.notice_doi.lower()
    url = f"https://doi.org/{doi}"
    label = source_label(notice.source)
    base: dict[str, Any] = {
        "source_label": label,
        "sources": [label],
        "type": notice.type,
        "label": TYPE_LABELS.get(_type(notice.type), notice.label or notice.type),
    }
    if family(kind, notice.type) == "version":
        newer = {"pmid": "", "title": notice.notice_title, "url": url, "doi": doi, "date": notice.date}
        return NewEvent("update", f"version:{ident}:doi:{doi}", {**base, "newer": [newer]})
    shown = {"pmid": "", "doi": doi, "url": url, "title": notice.notice_title, "date": notice.date}
    detail = {**base, "notice": shown, "notices": []}
    if kind == "retraction":
        return NewEvent(kind, f"retraction:{ident}", detail)
    return NewEvent(kind, f"{kind}:{ident}:doi:{doi}", detail)


def shown_at_first_sight(first: Record, kind: str, update_type: str = "") -> bool:
    """Whether the first stored version of a record already showed a notice of this
    kind (PubMed's CommentsCorrections, a "RETRACTED:" title): it was then a new paper
    shown with its standing, so Crossref's report of such a notice is no news (like
    `events.known_at_first_sight`). Crossref names the notice by DOI and PubMed's
    links by PMID, so this goes by kind: a record first seen with one erratum takes a
    second one from Crossref as known too (history still records it). A feed item's
    first version names no notice: every notice about it is news."""
    if kind == "retraction":
        return ev.is_retracted(first)
    if kind == "erratum":
        return bool(ev.erratum_notices(first))
    if kind == "concern":
        return bool(ev.concern_notices(first))
    if kind == "update" and family(kind, update_type) == "version":
        # a preprint first seen with its journal version already known (`published`)
        return bool(ev.newer_versions(first) or first.published_doi)
    return False


# --------------------------------------------------------------------------- matching


@dataclass
class Known:
    """One notice event of a record, with what identifies its notice: the DOIs and
    PMIDs its reports and detail name, and when litwatch learnt of each report."""

    dedup: str
    family: str
    dois: set[str] = field(default_factory=set)
    pmids: set[str] = field(default_factory=set)
    seen: list[datetime] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(self, report: NoticeReport) -> None:
        if report.notice_doi:
            self.dois.add(report.notice_doi.lower())
        if report.notice_key:
            self.pmids.add(report.notice_key)
        if report.reported_at is not None:
            self.seen.append(report.reported_at)
        if report.source not in self.sources:
            self.sources.append(report.source)


def known_notices(reports: Iterable[NoticeReport], events: Iterable[NoticeEvent]) -> list[Known]:
    """The notice events of one record, from its stored reports and (for events stored
    before reports were kept, or from PubMed without one) the events' own detail."""
    by: dict[str, Known] = {}
    for r in reports:
        if r.dedup and r.kind != OTHER:
            by.setdefault(r.dedup, Known(r.dedup, _family(r))).add(r)
    for e in events:
        fam = family(e.kind, dedup=e.dedup)
        if e.kind not in NOTICE_KINDS or (fam == "update" and not _names_notice(e.detail)):
            continue  # a change of title or abstract is an update, not a notice
        k = by.get(e.dedup)
        if k is None:
            k = by[e.dedup] = Known(e.dedup, fam, sources=[str(s) for s in e.detail.get("sources", [])])
        k.seen.append(e.created_at)
        dois, pmids = _identifiers(e.detail)
        k.dois |= dois
        k.pmids |= pmids
    return list(by.values())


def _names_notice(detail: dict[str, Any]) -> bool:
    return bool(detail.get("notice") or detail.get("notices") or detail.get("newer"))


def _identifiers(detail: dict[str, Any]) -> tuple[set[str], set[str]]:
    """DOIs and PMIDs an event's detail names: `notices` (PMIDs, or "ref:<citation>"),
    `notice` (a PubMed or Crossref notice), `newer` (newer versions)."""
    dois: set[str] = set()
    pmids = {str(p) for p in detail.get("notices", []) if p}
    for shown in [detail.get("notice") or {}, *detail.get("newer", [])]:
        if isinstance(shown, dict):
            if shown.get("doi"):
                dois.add(str(shown["doi"]).lower())
            if shown.get("pmid"):
                pmids.add(str(shown["pmid"]))
    return dois, pmids


def match(report: NoticeReport, known: Sequence[Known], *, window: timedelta = WINDOW) -> str | None:
    """The dedup key of the stored event `report` is a report of, or None: a new notice."""
    fam = _family(report)
    if fam == OTHER:
        return None
    same = [k for k in known if k.family == fam]
    if fam == "retraction":  # rule 1: one retraction per record
        return same[0].dedup if same else None
    doi = report.notice_doi.lower()
    for k in same:  # rule 2
        if (doi and doi in k.dois) or (report.notice_key and report.notice_key in k.pmids):
            return k.dedup
    if fam == "update" or report.reported_at is None:
        return None  # addenda and the like: by DOI only
    when = report.reported_at
    near = [
        (min(abs(when - s) for s in k.seen), i, k)
        for i, k in enumerate(same)
        if k.seen
        and not (doi and k.dois)  # both know a DOI, and they differ: another notice
        and not (report.notice_key and k.pmids)  # both know a PMID, and they differ
    ]
    near = [n for n in near if n[0] <= window]  # rule 3
    return min(near, key=lambda n: (n[0], n[1]))[2].dedup if near else None


@dataclass(frozen=True)
class Attribution:
    """What to do with one new report: record `report` (its `dedup` filled in: the
    event it belongs to, "" for kind "other"); add `event` for every query that matched
    the record when it is a new notice (None: an existing event's, or "other"); and set
    `patch` on the stored events `report.dedup` (`Store.patch_event_detail`) when it
    adds a source to one: a digest not yet sent then names every source."""

    report: NoticeReport
    event: NewEvent | None
    patch: dict[str, object] | None = None


def attribute(
    new: Sequence[tuple[NoticeReport, NewEvent | None]],
    reports: Sequence[NoticeReport],
    events: Sequence[NoticeEvent],
    *,
    window: timedelta = WINDOW,
) -> list[Attribution]:
    """Decide, in order, each new report of one record (with the event it would make
    if it were news) against the record's stored `reports` and notice `events`, and
    against the new reports before it: two reports of one notice in one batch make
    one event, which names both sources."""
    known = known_notices(reports, events)
    stored = {e.dedup: e for e in events}
    fresh: dict[str, int] = {}  # dedup -> index in `out` of the new event made in this batch
    out: list[Attribution] = []
    for report, event in new:
        if report.kind == OTHER or event is None:
            out.append(Attribution(replace(report, dedup=""), None))
            continue
        dedup = match(report, known, window=window)
        if dedup is None and not any(k.dedup == event.dedup for k in known):
            known.append(Known(event.dedup, _family(report, event.dedup)))
            fresh[event.dedup] = len(out)
            out.append(Attribution(replace(report, dedup=event.dedup), event))
        else:
            dedup = dedup or event.dedup  # an identical key: the same event
            out.append(Attribution(replace(report, dedup=dedup), None))
            _name_source(out, len(out) - 1, stored, fresh)
        next(k for k in known if k.dedup == out[-1].report.dedup).add(report)
    return out


def _name_source(out: list[Attribution], i: int, stored: dict[str, NoticeEvent], fresh: dict[str, int]) -> None:
    """Add the source of `out[i]`'s report to the event it was attributed to: the new
    event of this batch (its detail), or the stored one (a patch, the last one wins)."""
    report = out[i].report
    if report.dedup in fresh:
        j = fresh[report.dedup]
        made = out[j].event
        assert made is not None
        patch = sources_patch(NoticeEvent(report.record_id, made.kind, made.dedup, datetime.min, made.detail), report)
        if patch:
            out[j] = replace(out[j], event=NewEvent(made.kind, made.dedup, {**made.detail, **patch}))
        return
    event = stored.get(report.dedup)
    if event is None:
        return
    patch = sources_patch(event, report)
    if patch:
        stored[report.dedup] = replace(event, detail={**event.detail, **patch})
        out[i] = replace(out[i], patch=patch)


def sources_patch(event: NoticeEvent, report: NoticeReport) -> dict[str, object] | None:
    """The detail to set on `event` when `report` was attributed to it, so a digest not
    yet sent names every source ("Retraction — Retraction Watch, PubMed"); None when
    it names this one already. An event from PubMed's CommentsCorrections carries no
    source: it was PubMed."""
    have = [str(s) for s in event.detail.get("sources") or [event.detail.get("source_label")] if s]
    if not have and event.kind != "update":
        have = [source_label(PUBMED_SOURCE)]
    label = source_label(report.source)
    return None if label in have else {"sources": [*have, label]}


def sources_of(dedup: str, reports: Iterable[NoticeReport]) -> list[str]:
    """The labels of the sources that reported the event `dedup`, first reporter first."""
    out: list[str] = []
    for r in sorted((r for r in reports if r.dedup == dedup), key=lambda r: r.reported_at or datetime.min):
        label = source_label(r.source)
        if label not in out:
            out.append(label)
    return out
