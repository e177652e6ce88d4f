"""Pure decisions about change: the canonical form of a record, field diffs, and
classification into events. No I/O; every input is an argument.

How one change is shown once: a version that brings a retraction, erratum or
expression of concern yields one event per notice kind it gains, and the field
changes of that version (a title turning "RETRACTED: ...", say) ride along in the
event's detail; a separate `update` is emitted only when no notice kind was gained.
Dedup keys are shared by the two ways a notice is seen (the original gaining
`ErratumIn`/`RetractionIn`, or the notice record itself), so the digest reports it once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import approvals
from .records import (
    CONCERN_NOTICE_TYPES,
    CONCERN_ON_NOTICE,
    CONCERN_ON_ORIGINAL,
    ERRATUM_NOTICE_TYPES,
    ERRATUM_ON_NOTICE,
    ERRATUM_ON_ORIGINAL,
    FIELD_NAMES,
    RETRACTED_TYPES,
    RETRACTION_NOTICE_TYPES,
    RETRACTION_ON_NOTICE,
    RETRACTION_ON_ORIGINAL,
    UPDATE_ON_NOTICE,
    UPDATE_ON_ORIGINAL,
    FieldChange,
    NewEvent,
    Record,
    content_hash,
)

if TYPE_CHECKING:
    from .records import EventRow

# Order carries no meaning in these (MeSH, keywords and publication types are sets
# in the PubMed DTD; CommentsCorrections order varies between exports).
UNORDERED = frozenset({"mesh", "keywords", "pubtypes", "links"})
# Changes to these are news ("update"); the rest is indexing, kept as versions only.
SUBSTANTIVE = ("title", "abstract", "authors", "doi", "url")

_RETRACTED_TITLE = re.compile(r"^\s*\[?\s*(retracted|withdrawn)\b\s*[\]:.\-]", re.IGNORECASE)
_WITHDRAWN_TITLE = re.compile(r"^\s*withdrawn\s*:", re.IGNORECASE)
_APPROVAL_TITLE = re.compile(
    r"\bfirst(?:\s+global)?\s+approval\b"
    r"|\bapproval\s+summary\b"
    r"|\b(?:FDA|EMA|MHRA|PMDA|NMPA|European\s+Commission|Health\s+Canada)\s+(?:grants?\s+)?approv"
    r"|\bapproved\s+by\s+the\s+(?:U\.?S\.?\s+)?(?:FDA|EMA|Food\s+and\s+Drug\s+Administration|European)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------- canonical form


def _norm(text: str) -> str:
    return " ".join(text.split())


def canonical(record: Record) -> dict[str, Any]:
    """Whitespace folded, unordered fields sorted, link citations reduced to (type, PMID):
    two parses of the same record, however serialised, give equal dicts."""
    # Read from the record's attributes, as `Record.fields()` lists them, without
    # building that dict first (a poll hashes every record it fetches: #22); the result
    # is the same dict, so stored hashes are unchanged.
    out: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = getattr(record, name)
        if not value:
            continue
        if name == "abstract":
            value = "\n".join(line for line in (_norm(v) for v in value.splitlines()) if line)
        elif name == "links":
            value = [list(v) for v in sorted({(lk.ref_type, lk.pmid) for lk in value})]
        elif isinstance(value, str):
            value = _norm(value)
        elif isinstance(value, tuple | list):
            value = [_norm(v) if isinstance(v, str) else list(v) if isinstance(v, tuple) else v for v in value]
            if name in UNORDERED:
                value = sorted(set(value))
        if value:
            out[name] = value
    return out


def fingerprint(record: Record) -> str:
    """Hash of the canonical form: equal for a record seen again unchanged."""
    return content_hash(canonical(record))


def diff(old: Record, new: Record) -> list[FieldChange]:
    a, b = canonical(old), canonical(new)
    return [FieldChange(f, a.get(f), b.get(f)) for f in FIELD_NAMES if a.get(f) != b.get(f)]


# --------------------------------------------------------------------------- record state


def is_retracted(r: Record) -> bool:
    return bool(
        r.link_pmids(RETRACTION_ON_ORIGINAL)
        or any(lk.ref_type in RETRACTION_ON_ORIGINAL for lk in r.links)
        or r.has_pubtype(RETRACTED_TYPES)
        or _RETRACTED_TITLE.match(r.title)
    )


def erratum_notices(r: Record) -> set[str]:
    return _notices(r, ERRATUM_ON_ORIGINAL)


def concern_notices(r: Record) -> set[str]:
    return _notices(r, CONCERN_ON_ORIGINAL)


def newer_versions(r: Record) -> set[str]:
    """Keys (PMID, else "ref:<citation>") of the newer versions `UpdateIn` names."""
    return _notices(r, UPDATE_ON_ORIGINAL)


def _notices(r: Record, ref_types: frozenset[str]) -> set[str]:
    # a link without a PMID still counts, keyed by its citation text
    return {lk.pmid or f"ref:{_norm(lk.source)}" for lk in r.links if lk.ref_type in ref_types}


def is_notice(r: Record) -> bool:
    """An erratum, retraction or concern notice: reported as news about the record it
    names, never as a new paper. (Corrected-and-republished articles and updates
    name an original too, but are papers in their own right.)"""
    return r.has_pubtype(ERRATUM_NOTICE_TYPES | RETRACTION_NOTICE_TYPES | CONCERN_NOTICE_TYPES) or any(
        lk.ref_type in ("ErratumFor", "RetractionOf", "ExpressionOfConcernFor") for lk in r.links
    )


def flags(r: Record) -> list[str]:
    """Labels shown next to an item: what is known about its standing."""
    out = []
    if is_retracted(r):
        out.append("retracted")
    if concern_notices(r):
        out.append("expression of concern")
    if erratum_notices(r):
        out.append("corrected")
    if newer_versions(r):
        out.append("newer version")  # e.g. a preprint whose journal article appeared
    if r.published_doi:
        out.append(f"published in {r.published_journal or 'a journal'}")  # a preprint's journal version
    return out


# --------------------------------------------------------------------------- classification


def is_approval_title(title: str) -> bool:
    return bool(_APPROVAL_TITLE.search(title))


def classify_new(record: Record, *, approvals_source: bool = False) -> str | None:
    """The event for a record a query matches for the first time; None for a notice.

    - a record of a structured regulatory source (kind openfda / ema: ``reg_kind`` set)
      is what its kind says: an `approval`, or an `update` for a withdrawal, suspension
      or refusal (`approvals.event_kind`);
    - an item of an ``approvals: true`` feed (a regulator's press releases) is an
      `approval` only when it announces one (`approvals.announces_approval`): the same
      feed carries recalls, warnings and round-ups, which are `new`;
    - any other record is an `approval` when its title says so ("Aponermin: First
      Approval"), else `new`.
    """
    if is_notice(record):
        return None
    if record.reg_kind:
        return approvals.event_kind(record) or "new"
    if approvals_source:
        return "approval" if approvals.announces_approval(record.title, record.abstract) else "new"
    if is_approval_title(record.title):
        return "approval"
    return "new"


def _ident(r: Record) -> str:
    return f"{r.source}:{r.key}"


def classify_change(old: Record, new: Record, changes: list[FieldChange], version_n: int) -> list[NewEvent]:
    """Events for a known record that changed from `old` to `new` (version `version_n`)."""
    shown = [[c.field, c.old, c.new] for c in changes if c.field in SUBSTANTIVE]
    ident = _ident(new)
    if new.server:
        return _preprint_change(old, new, shown, version_n)
    out: list[NewEvent] = []
    if is_retracted(new) and not is_retracted(old):
        notices = sorted(new.link_pmids(RETRACTION_ON_ORIGINAL))
        out.append(NewEvent("retraction", f"retraction:{ident}", {"notices": notices, "changes": shown}))
    for kind, gained in (
        ("concern", concern_notices(new) - concern_notices(old)),
        ("erratum", erratum_notices(new) - erratum_notices(old)),
    ):
        for notice in sorted(gained):
            out.append(NewEvent(kind, f"{kind}:{ident}:{notice}", {"notices": [notice], "changes": shown}))
    for key in sorted(newer_versions(new) - newer_versions(old)):
        # a newer version (PubMed `UpdateIn`: the published article of a preprint) is
        # news of substance, not a correction: an `update` shown as "newer version"
        out.append(NewEvent("update", f"version:{ident}:{key}", {"newer": [_newer(new, key)], "changes": shown}))
    if not out and shown:
        out.append(NewEvent("update", f"update:{ident}:v{version_n}", {"changes": shown}))
    return out


def is_withdrawn(r: Record) -> bool:
    """A preprint whose server posted its withdrawal (a version of type "withdrawn",
    titled "WITHDRAWN: ...")."""
    return r.pub_status == "withdrawn" or bool(_WITHDRAWN_TITLE.match(r.title))


def _preprint_change(old: Record, new: Record, shown: list[list[Any]], version_n: int) -> list[NewEvent]:
    """A preprint's versions are versions of one record (issue 27): its withdrawal is a
    `retraction` shown as "Withdrawn"; a new version vN an `update` shown as a newer
    version, with what changed. Its journal version is a notice from the server
    (preprints.py), not decided here; nor is a change of `published_doi` news here."""
    ident = _ident(new)
    label = new.server
    if is_withdrawn(new) and not is_withdrawn(old):
        detail = {"label": "Withdrawn", "sources": [label], "source_label": label, "notices": [], "changes": shown}
        # one withdrawal per preprint; a Crossref retraction report of it meets it (one retraction per record)
        return [NewEvent("retraction", f"withdrawn:{ident}", detail)]
    if is_withdrawn(new):
        return []
    if _int(new.preprint_version) > _int(old.preprint_version):
        v = new.preprint_version
        posted = f", posted {new.pub_date}" if new.pub_date else ""
        url = f"{new.url}v{v}" if new.url else ""  # bioRxiv's and medRxiv's page of that version
        newer = {"pmid": "", "title": f"new version v{v}{posted}", "url": url, "doi": ""}
        return [NewEvent("update", f"preprint:{ident}:v{v}", {"newer": [newer], "sources": [label], "changes": shown})]
    if shown:
        return [NewEvent("update", f"update:{ident}:v{version_n}", {"changes": shown})]
    return []


def _int(value: str) -> int:
    return int(value) if value.isdigit() else 0


def _newer(r: Record, key: str) -> dict[str, str]:
    """What the digest shows of a newer version named by a link: its citation and URL."""
    link = next(
        (lk for lk in r.links if lk.ref_type in UPDATE_ON_ORIGINAL and (lk.pmid or f"ref:{_norm(lk.source)}") == key),
        None,
    )
    pmid = link.pmid if link else ""
    return {
        "pmid": pmid,
        "title": _norm(link.source) if link else "",
        "url": f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" if pmid else "",
        "doi": "",
    }


def notice_targets(notice: Record) -> list[tuple[str, str]]:
    """(kind, target PMID) for each record a notice names, from its CommentsCorrections."""
    out = []
    for kind, ref_types in (
        ("retraction", RETRACTION_ON_NOTICE),
        ("concern", CONCERN_ON_NOTICE),
        ("erratum", ERRATUM_ON_NOTICE),
        ("update", UPDATE_ON_NOTICE),  # the newer version names the one it replaces
    ):
        for pmid in sorted(notice.link_pmids(ref_types)):
            out.append((kind, pmid))
    return out


def known_at_first_sight(first: Record, kind: str, notice_key: str) -> bool:
    """Whether the first stored version of a record already carried this notice: it
    was then reported as a new paper with its standing shown, so the notice is no news."""
    if kind == "retraction":
        return is_retracted(first)
    known = {"erratum": erratum_notices, "concern": concern_notices, "update": newer_versions}[kind]
    return notice_key in known(first)


def notice_event(kind: str, target: Record, notice: Record) -> NewEvent:
    """The event a notice gives its target; dedup matches `classify_change`'s."""
    ident = _ident(target)
    if kind == "update":  # `notice` is the newer version of `target`
        newer = {"pmid": notice.key, "title": notice.title, "url": notice.web_url, "doi": notice.doi}
        return NewEvent("update", f"version:{ident}:{notice.key}", {"newer": [newer]})
    dedup = f"retraction:{ident}" if kind == "retraction" else f"{kind}:{ident}:{notice.key}"
    detail = {
        "notices": [notice.key],
        "notice": {"pmid": notice.key, "title": notice.title, "url": notice.web_url, "doi": notice.doi},
    }
    return NewEvent(kind, dedup, detail)


# --------------------------------------------------------------------------- the decider


@dataclass
class Saved:
    """One record of a batch as saving it left it: `status` "created", "changed" or
    "same"; `old` and `changes` are the previous version and the diff when it changed."""

    record: Record
    record_id: int
    n: int
    old: Record | None
    changes: list[FieldChange]
    status: str


@dataclass
class Plan:
    """What a batch adds besides its versions: the queries' first hits (record id, query,
    terms) and the events, in order (the first of two with one dedup key wins)."""

    hits: list[tuple[int, str, tuple[str, ...]]] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)


def decide(
    *,
    saved: Sequence[Saved],
    matches: Mapping[str, Mapping[int, tuple[str, ...]]],
    hits: Mapping[int, set[str]],
    current: Mapping[int, tuple[Record, int]],
    approvals_source: bool = False,
    notices: Iterable[tuple[str, int, Record]] = (),
    first_versions: Mapping[int, Record] | None = None,
    heard: Mapping[int, set[str]] | None = None,
) -> Plan:
    """The events that follow from what a batch stored, decided on data alone.

    - `saved`: the batch's records after saving; a changed one is news (`classify_change`)
      to every query that had matched it before this batch (`hits`);
    - `matches`: {query: {record id: terms}}; a query matching a record for the first time
      (not in `hits`) gets a hit and `new`/`approval` (`classify_new`; notices get none),
      on the record's current version from `current` {id: (record, n)};
    - `notices`: (kind, target id, notice) for the PubMed notices of the batch naming a
      stored record: an event of the target for every query that matches it, this batch's
      first hits included — unless the target's first version (`first_versions`) already
      showed it;
    - `heard`: {record id: queries}: the queries that already had this work through
      another record — the preprint whose journal version this record is (issue 27):
      the first hit is kept (the article's own notices are news), but not as `new`."""
    plan = Plan()
    heard = heard or {}
    seen: set[tuple[str, str]] = set()

    def add(record_id: int, query: str, n: int, e: NewEvent) -> None:
        if (query, e.dedup) not in seen:
            seen.add((query, e.dedup))
            plan.events.append(_row(record_id, query, n, e))

    # changes first: a query matching a changed record for the first time learns of it
    # as new, not as an update of something it never showed
    for s in saved:
        if s.old is None:
            continue
        for e in classify_change(s.old, s.record, s.changes, s.n):
            for query in sorted(hits.get(s.record_id, set())):
                add(s.record_id, query, s.n, e)
    added: dict[int, set[str]] = {}
    for query, matched in matches.items():
        for rid, terms in matched.items():
            if query in hits.get(rid, set()) or query in added.get(rid, set()):
                continue
            added.setdefault(rid, set()).add(query)
            plan.hits.append((rid, query, terms))
            record, n = current[rid]
            kind = classify_new(record, approvals_source=approvals_source)
            if kind == "new" and query in heard.get(rid, ()):
                continue  # the journal version of a preprint this query had: one work, one alert
            if kind is not None:  # a notice: reported as news about what it names, not as a paper
                add(rid, query, n, NewEvent(kind, f"first:{record.source}:{record.key}"))
    first = first_versions or {}
    for kind, rid, notice in notices:
        if known_at_first_sight(first[rid], kind, notice.key):
            continue  # it was a new paper already showing this notice: not news twice
        target, n = current[rid]
        e = notice_event(kind, target, notice)
        for query in sorted(hits.get(rid, set()) | added.get(rid, set())):
            add(rid, query, n, e)
    return plan


def _row(record_id: int, query: str, version_n: int, e: NewEvent) -> EventRow:
    return {
        "record_id": record_id,
        "query": query,
        "kind": e.kind,
        "version_n": version_n,
        "dedup": e.dedup,
        "detail": e.detail,
    }
