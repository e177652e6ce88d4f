"""The vocabulary shared by parsers, events, store and digests. Stdlib only.

A `Record` is one parse of one real-world item (a PubMed citation or a feed entry).
Its `fields()` form is what is stored per version and what diffs compare; fields that
are empty are left out so that adding a new field later leaves old versions equal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NotRequired, TypedDict

PUBMED = "pubmed"

# CommentsCorrections RefTypes (PubMed DTD, pubmed_250101.dtd) that litwatch acts on.
# "...In" sits on the original and names the notice; "...For"/"...Of"/"...From" sits on
# the notice (or republished article) and names the original.
ERRATUM_ON_ORIGINAL = frozenset({"ErratumIn", "CorrectedandRepublishedIn"})
RETRACTION_ON_ORIGINAL = frozenset({"RetractionIn", "RetractedandRepublishedIn"})
CONCERN_ON_ORIGINAL = frozenset({"ExpressionOfConcernIn"})
ERRATUM_ON_NOTICE = frozenset({"ErratumFor", "CorrectedandRepublishedFrom"})
RETRACTION_ON_NOTICE = frozenset({"RetractionOf", "RetractedandRepublishedFrom"})
CONCERN_ON_NOTICE = frozenset({"ExpressionOfConcernFor"})
# A newer version is not a correction: `UpdateIn` names the published article of a
# preprint or the update of a review, `UpdateOf` the version it replaces (issue 16).
UPDATE_ON_ORIGINAL = frozenset({"UpdateIn"})
UPDATE_ON_NOTICE = frozenset({"UpdateOf"})

ERRATUM_NOTICE_TYPES = frozenset({"published erratum"})
RETRACTION_NOTICE_TYPES = frozenset({"retraction of publication", "retraction notice"})
CONCERN_NOTICE_TYPES = frozenset({"expression of concern"})
RETRACTED_TYPES = frozenset({"retracted publication"})

EVENT_KINDS = ("approval", "erratum", "retraction", "concern", "new", "update")

# What a regulatory record (Record.reg_kind) says happened. The first group announces an
# approval (event `approval`); the second a product leaving or not reaching the market,
# which SPEC.md reports as an `update`.
APPROVAL_REG_KINDS = frozenset({"new application", "new indication", "CHMP opinion", "EU authorisation"})
UPDATE_REG_KINDS = frozenset({"withdrawal", "suspension", "refusal", "negative CHMP opinion", "application withdrawn"})
REGULATORY_KINDS = APPROVAL_REG_KINDS | UPDATE_REG_KINDS


@dataclass(frozen=True)
class Link:
    """One CommentsCorrections entry: its RefType and the PMID it names (may be empty)."""

    ref_type: str
    pmid: str = ""
    source: str = ""


@dataclass(frozen=True)
class Record:
    source: str  # "pubmed" or "feed:<name>"
    key: str  # the PMID, or the feed entry's identity
    title: str = ""
    abstract: str = ""  # PubMed abstract (labels kept), or a feed summary as text
    authors: tuple[str, ...] = ()
    journal: str = ""
    volume: str = ""
    issue: str = ""
    pages: str = ""
    pub_date: str = ""  # as printed: "2024 Jan 15", "2023 Dec-2024 Jan" (MedlineDate)
    article_date: str = ""  # ISO date of electronic publication
    entrez_date: str = ""  # ISO date PubMed got it (PubMedPubDate entrez)
    pubmed_date: str = ""
    doi: str = ""
    pmcid: str = ""
    pubtypes: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    mesh: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    status: str = ""  # MedlineCitation/@Status: Publisher, In-Process, MEDLINE...
    pub_status: str = ""  # PublicationStatus: ppublish, epublish, aheadofprint
    url: str = ""  # the entry's link (feeds); PubMed URLs are derived from the PMID
    summary_html: str = ""  # sanitised HTML summary of a feed entry, for the mail
    extra: tuple[tuple[str, str], ...] = field(default=())
    # Regulatory records (feeds of kind openfda and ema; issue 17). Empty for papers and
    # feed entries, so their stored forms and hashes are unchanged.
    regulator: str = ""  # "FDA", "EMA"
    reg_kind: str = ""  # one of REGULATORY_KINDS: what happened ("new application", "EU authorisation", ...)
    application: str = ""  # "BLA761460", "EMEA/H/C/006498"
    product: str = ""  # brand name(s) as the regulator writes them
    substance: str = ""  # active ingredient / INN
    sponsor: str = ""  # applicant or marketing-authorisation holder
    reg_flags: tuple[str, ...] = ()  # "new molecular entity", "priority review", "orphan", ...
    documents: tuple[tuple[str, str], ...] = ()  # (label, url): approval letter, label, Drugs@FDA page
    # Preprints (feeds of kind biorxiv and medrxiv; issue 27). Empty for everything else,
    # so other records' stored forms and hashes are unchanged.
    server: str = ""  # "bioRxiv", "medRxiv": the record is a preprint, keyed by its DOI
    preprint_version: str = ""  # "2": the version posted last
    published_doi: str = ""  # the journal version's DOI (lower case), once known
    published_journal: str = ""  # its journal, as the server names it

    @property
    def pmid(self) -> str:
        return self.key if self.source == PUBMED else ""

    def fields(self) -> dict[str, Any]:
        """The canonical stored form: JSON-able, empty fields left out."""
        out: dict[str, Any] = {}
        for name in FIELD_NAMES:
            value = getattr(self, name)
            if not value:
                continue
            if name == "links":
                value = [[lk.ref_type, lk.pmid] + ([lk.source] if lk.source else []) for lk in value]
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[name] = value
        return out

    @classmethod
    def from_fields(cls, source: str, key: str, data: dict[str, Any]) -> Record:
        kw: dict[str, Any] = {}
        for name, value in data.items():
            if name not in FIELD_NAMES:
                continue  # a field a newer litwatch wrote; ignore rather than fail
            if name == "links":
                value = tuple(Link(*v) for v in value)
            elif name in ("extra", "documents"):
                value = tuple(tuple(v) for v in value)
            elif isinstance(value, list):
                value = tuple(value)
            kw[name] = value
        return cls(source=source, key=key, **kw)

    def link_pmids(self, ref_types: frozenset[str]) -> set[str]:
        return {lk.pmid for lk in self.links if lk.ref_type in ref_types and lk.pmid}

    def has_pubtype(self, names: frozenset[str]) -> bool:
        return any(p.lower() in names for p in self.pubtypes)

    @property
    def web_url(self) -> str:
        if self.source == PUBMED:
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.key}/"
        return self.url

    @property
    def doi_url(self) -> str:
        return f"https://doi.org/{self.doi}" if self.doi else ""


FIELD_NAMES = tuple(f for f in Record.__dataclass_fields__ if f not in ("source", "key"))


def content_hash(fields: dict[str, Any]) -> str:
    """Stable hash of a canonical field dict (sorted keys, version byte first)."""
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(b"\x01" + blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class NewEvent:
    """An event decided by `events.classify`, before it is stored.

    ``dedup`` makes it idempotent: the store keeps one event per (query, dedup)."""

    kind: str
    dedup: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoticeReport:
    """One source's report of one notice (erratum, retraction, concern, update, or a
    type litwatch does not know: "other") about one stored record: who told us
    (`source`: "pubmed", "publisher", "retraction-watch"), which notice (its DOI, lower
    case, and/or the PubMed PMID of the notice record), when it was issued and when
    litwatch learnt it, and the event's dedup key it was attributed to ("" for "other":
    recorded, never mailed). Kept in `notice_reports` (0007); `notices.py` decides."""

    record_id: int
    kind: str  # erratum | retraction | concern | update | other
    type: str  # the source's own name: corrigendum, partial_retraction, ErratumIn, ...
    source: str
    notice_doi: str = ""
    notice_key: str = ""  # the notice's PMID
    notice_date: str = ""  # ISO date, or a prefix of one ("2019-07"), or ""
    reported_at: datetime | None = None
    dedup: str = ""

    @property
    def ident(self) -> str:
        """What names the notice: its DOI, else its PMID (the table's uniqueness)."""
        return self.notice_doi or self.notice_key


@dataclass(frozen=True)
class NoticeEvent:
    """A stored event of a notice kind, as `notices.py` matches a new report against it
    (one per record and dedup key, whatever the queries: the earliest `created_at`)."""

    record_id: int
    kind: str
    dedup: str
    created_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


# ====================================================================== crossing rooms
# Types that parsers, polls, ingest, store and digests all read: here, so that reading
# one (a digest grouping pending events) loads neither SQLAlchemy nor a parser.

# who told of a Crossref notice, as a digest names them
SOURCE_LABELS = {"retraction-watch": "Retraction Watch", "publisher": "publisher notice"}


@dataclass(frozen=True)
class Notice:
    """One update of one work, as Crossref records it."""

    kind: str  # erratum | retraction | concern | update | other
    type: str  # Crossref's own name: corrigendum, partial_retraction, new_version, ...
    target_doi: str  # the work updated (lower case)
    notice_doi: str  # the notice (lower case); may equal target_doi for an update in place
    source: str  # "publisher", "retraction-watch", or what Crossref says
    date: str  # when the update was issued: "2019-07-26", "2019-07", "2019" or ""
    label: str = ""  # Crossref's label, e.g. "Expression of concern"
    record_id: str = ""  # Retraction Watch's record id
    # the notice's title, when the answer held the notice itself; not part of identity,
    # so the notice learnt from either side (`updated-by` or `update-to`) is one value
    notice_title: str = field(default="", compare=False)

    @property
    def source_label(self) -> str:
        """How a digest names who told us: "Retraction Watch", "publisher notice"."""
        return SOURCE_LABELS.get(self.source, self.source or "Crossref")


class EventRow(TypedDict):
    """An event to insert (`add_events`): `dedup` makes it one per query."""

    record_id: int
    query: str
    kind: str
    version_n: int
    dedup: str
    detail: NotRequired[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event with its record's current version, for a digest. `detail` is the
    event's own JSON (the digest may add a notice's title to it while rendering)."""

    id: int
    record_id: int
    query: str
    kind: str
    version_n: int
    detail: dict[str, Any]
    created_at: datetime
    record: Record
    terms: tuple[str, ...]


# ====================================================================== poll_state keys
# Each source's progress is one `poll_state` row, keyed (query, source). These are the
# only spellings of those keys: polls write them, `status`, digests and the daemon read them.

SHARED = "*"  # the query of a source shared by every query (feeds, notice search, Crossref)
NOTICES = "notices"  # the shared PubMed notice search
CROSSREF = "crossref"  # the Crossref source's new notices (polls/crossref.py)
CROSSREF_RECHECK = "crossref-recheck"  # ... and its re-check of every stored DOI
_FEED = "feed:"


def feed_source(name: str) -> str:
    """A feed's source: its poll_state source (query SHARED), its records' `source`,
    and the name of the claim that keeps two processes from fetching it at once."""
    return _FEED + name


def feed_name(source: str) -> str:
    """The feed a `feed_source` names."""
    return source.removeprefix(_FEED)


def query_keys(name: str, pubmed: bool, feeds: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The poll_state rows a query's own poll moves: its PubMed search, its feeds."""
    return ([(name, PUBMED)] if pubmed else []) + [(SHARED, feed_source(f)) for f in feeds]
