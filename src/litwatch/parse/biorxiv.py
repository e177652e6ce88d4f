"""bioRxiv and medRxiv API answers (api.biorxiv.org, issue 27) → preprint records and
journal-version links. Pure: no I/O, no clock.

Two endpoints, one envelope: ``{"messages": [{status, cursor, count, total, ...}],
"collection": [...]}``. `messages[0]` gives `cursor`, `count` and `total`, some as
strings ("total": "1029"); an empty interval answers ``{"messages": [{"status": "no
posts found"}], "collection": []}``.

- ``details/{server}/{from}/{to}/{cursor}``: every posted version, with ``doi``,
  ``title``, ``authors`` ("Surname, A.; Surname, B."), ``date`` (posting date),
  ``version`` ("1", "2"), ``type`` ("new results", "withdrawn", ...), ``category``,
  ``abstract``, ``license`` and ``published`` (the journal DOI, or "NA"). A withdrawal
  is a new version of type "withdrawn" whose title starts "WITHDRAWN:".
- ``pubs/{server}/{from}/{to}/{cursor}``: preprints whose journal version appeared in
  the interval: ``preprint_doi`` (older answers: ``biorxiv_doi``), ``published_doi``,
  ``published_journal``, ``published_date``.

A preprint's versions are versions of one record, keyed by its DOI (lower case): the
highest version of a page wins. An item that cannot be read is skipped with a warning;
a page of which nothing can be read, or that is not such an envelope, is a
`ParseError`. The caller caps the answer's size (sources/biorxiv.py), and `json`'s
nesting limit turns an answer nested beyond reason into a `ParseError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..records import Record, feed_source

__all__ = [
    "CATEGORIES",
    "SERVERS",
    "normal_category",
    "DetailsPage",
    "Paging",
    "PubsPage",
    "Published",
    "parse_details",
    "parse_pubs",
    "preprint_url",
    "is_withdrawn",
]

# how a digest names each server (Record.server)
SERVERS = {"biorxiv": "bioRxiv", "medrxiv": "medRxiv"}
_SITES = {"biorxiv": "https://www.biorxiv.org", "medrxiv": "https://www.medrxiv.org"}
_WITHDRAWN_TITLE = re.compile(r"^\s*withdrawn\s*:", re.IGNORECASE)
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


# The subject collections of each server (bioRxiv's and medRxiv's "subject area" lists),
# as the `category` field spells them; `?category=` takes them with "_" for spaces.
CATEGORIES: dict[str, frozenset[str]] = {
    "biorxiv": frozenset(
        {
            "animal behavior and cognition",
            "biochemistry",
            "bioengineering",
            "bioinformatics",
            "biophysics",
            "cancer biology",
            "cell biology",
            "clinical trials",
            "developmental biology",
            "ecology",
            "epidemiology",
            "evolutionary biology",
            "genetics",
            "genomics",
            "immunology",
            "microbiology",
            "molecular biology",
            "neuroscience",
            "paleontology",
            "pathology",
            "pharmacology and toxicology",
            "physiology",
            "plant biology",
            "scientific communication and education",
            "synthetic biology",
            "systems biology",
            "zoology",
        }
    ),
    "medrxiv": frozenset(
        {
            "addiction medicine",
            "allergy and immunology",
            "anesthesia",
            "cardiovascular medicine",
            "dentistry and oral medicine",
            "dermatology",
            "emergency medicine",
            "endocrinology",
            "epidemiology",
            "forensic medicine",
            "gastroenterology",
            "genetic and genomic medicine",
            "geriatric medicine",
            "health economics",
            "health informatics",
            "health policy",
            "health systems and quality improvement",
            "hematology",
            "hiv aids",
            "infectious diseases",
            "intensive care and critical care medicine",
            "medical education",
            "medical ethics",
            "nephrology",
            "neurology",
            "nursing",
            "nutrition",
            "obstetrics and gynecology",
            "occupational and environmental health",
            "oncology",
            "ophthalmology",
            "orthopedics",
            "otolaryngology",
            "pain medicine",
            "palliative medicine",
            "pathology",
            "pediatrics",
            "pharmacology and therapeutics",
            "primary care research",
            "psychiatry and clinical psychology",
            "public and global health",
            "radiology and imaging",
            "rehabilitation medicine and physical therapy",
            "respiratory medicine",
            "rheumatology",
            "sexual and reproductive health",
            "sports medicine",
            "surgery",
            "toxicology",
            "transplantation",
            "urology",
        }
    ),
}


def normal_category(name: str) -> str:
    """`cancer-biology`, `Cancer_Biology`, `cancer biology` → `cancer biology`."""
    return " ".join(name.replace("_", " ").replace("-", " ").replace("/", " ").lower().split())


@dataclass(frozen=True)
class Paging:
    """`messages[0]`: where this page starts, how many items it holds, how many the
    interval has (None when the server did not say)."""

    status: str
    cursor: int
    count: int
    total: int | None

    @property
    def empty(self) -> bool:
        return self.count == 0 or self.status.strip().lower() == "no posts found"

    def next_cursor(self) -> int | None:
        """Where the next page starts, or None after the last one. Paged by what the
        server reports (30 a page in 2026, 100 in the help page), never by a constant."""
        if self.empty or self.total is None:
            return None
        nxt = self.cursor + self.count
        return nxt if nxt < self.total else None


@dataclass(frozen=True)
class DetailsPage:
    records: tuple[Record, ...]
    paging: Paging
    warnings: tuple[str, ...]
    items: int  # collection items read (every version)


@dataclass(frozen=True)
class Published:
    """A preprint's journal version, as `pubs` (or `details`' `published`) says."""

    preprint_doi: str  # lower case
    published_doi: str  # lower case
    journal: str = ""
    date: str = ""  # ISO day the journal version appeared, or ""


@dataclass(frozen=True)
class PubsPage:
    links: tuple[Published, ...]
    paging: Paging
    warnings: tuple[str, ...]
    items: int


def preprint_url(server: str, doi: str, version: str = "") -> str:
    """The preprint's page: https://www.medrxiv.org/content/10.1101/2020.01.01.123v2."""
    site = _SITES.get(server.lower(), _SITES["biorxiv"])
    return f"{site}/content/{doi}" + (f"v{version}" if version else "")


def is_withdrawn(record: Record) -> bool:
    """A withdrawal notice: the version the server posts when a preprint is withdrawn."""
    return record.pub_status == "withdrawn" or bool(_WITHDRAWN_TITLE.match(record.title))


def parse_details(body: bytes, *, feed_name: str, server: str) -> DetailsPage:
    """One `details` page → one record per preprint (its highest version on the page)."""
    envelope, paging = _envelope(body, feed_name, "details")
    records: dict[str, Record] = {}
    warnings: list[str] = []
    items = failures = 0
    for n, item in enumerate(envelope, 1):
        items += 1
        try:
            rec = _record(item, feed_name=feed_name, server=server)
        except (TypeError, ValueError) as e:
            failures += 1
            warnings.append(f"feed {feed_name}: preprint {n} skipped: {e}")
            continue
        have = records.get(rec.key)
        if have is None or _version(have) <= _version(rec):
            records[rec.key] = rec
    if failures and failures == items:
        raise ParseError(f"feed {feed_name}: none of the {items} preprints of the answer could be read")
    return DetailsPage(tuple(records.values()), paging, tuple(warnings), items)


def parse_pubs(body: bytes, *, feed_name: str) -> PubsPage:
    """One `pubs` page → the journal versions it announces."""
    envelope, paging = _envelope(body, feed_name, "pubs")
    links: list[Published] = []
    warnings: list[str] = []
    items = 0
    for n, item in enumerate(envelope, 1):
        items += 1
        if not isinstance(item, Mapping):
            warnings.append(f"feed {feed_name}: published article {n} is not an object; skipped")
            continue
        pre = _doi(item.get("preprint_doi") or item.get("biorxiv_doi"))
        pub = _doi(item.get("published_doi"))
        if not pre or not pub:
            warnings.append(f"feed {feed_name}: published article {n} has no usable preprint or journal DOI; skipped")
            continue
        links.append(Published(pre, pub, _text(item.get("published_journal")), _day(item.get("published_date"))))
    if items and not links:
        raise ParseError(f"feed {feed_name}: none of the {items} published articles of the answer could be read")
    return PubsPage(tuple(links), paging, tuple(warnings), items)


# --------------------------------------------------------------------------- helpers


def _envelope(body: bytes, feed_name: str, endpoint: str) -> tuple[list[Any], Paging]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ParseError(f"feed {feed_name}: the {endpoint} answer is not valid JSON ({_first(e)})") from e
    if not isinstance(data, Mapping) or not isinstance(data.get("messages"), list):
        raise ParseError(f"feed {feed_name}: the {endpoint} answer has no `messages`; not an api.biorxiv.org answer")
    messages = data["messages"]
    head = messages[0] if messages and isinstance(messages[0], Mapping) else {}
    collection = data.get("collection")
    if collection is None:
        collection = []
    if not isinstance(collection, list):
        raise ParseError(f"feed {feed_name}: the {endpoint} answer's `collection` is not a list")
    status = _text(head.get("status"))
    if status and status.lower() not in ("ok", "no posts found"):
        raise ParseError(f"feed {feed_name}: the {endpoint} answer says {status!r}")
    count = _int(head.get("count"))
    paging = Paging(
        status=status or "ok",
        cursor=_int(head.get("cursor")) or 0,
        count=len(collection) if count is None else count,
        total=_int(head.get("total")),
    )
    return collection, paging


def _record(item: Any, *, feed_name: str, server: str) -> Record:
    if not isinstance(item, Mapping):
        raise TypeError("not an object")
    doi = _doi(item.get("doi"))
    if not doi:
        raise ValueError("no DOI")
    version = _text(item.get("version"))
    if version and not version.isdigit():
        raise ValueError(f"version {version!r} is not a number")
    kind = _text(item.get("type")).lower()
    published = _doi(item.get("published"))  # "NA" → ""
    site = _text(item.get("server")).lower() or server
    name = SERVERS.get(site, SERVERS.get(server, server))
    category = _text(item.get("category"))
    return Record(
        source=feed_source(feed_name),
        key=doi,
        title=_text(item.get("title")),
        abstract=_text(item.get("abstract")),
        authors=tuple(a for a in (" ".join(p.split()) for p in _text(item.get("authors")).split(";")) if a),
        journal=name,
        pub_date=_day(item.get("date")),
        doi=doi,
        # the unversioned page shows the latest version: a new version changes no link
        url=preprint_url(site if site in _SITES else server, doi),
        pub_status="withdrawn" if kind == "withdrawn" else "",
        keywords=(category,) if category else (),
        server=name,
        preprint_version=version,
        published_doi=published,
    )


def _version(r: Record) -> int:
    return int(r.preprint_version) if r.preprint_version.isdigit() else 0


def _doi(value: object) -> str:
    doi = _text(value).removeprefix("https://doi.org/").removeprefix("doi:").strip().lower()
    return doi if _DOI.match(doi) else ""


def _text(value: object) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _int(value: object) -> int | None:
    """`count`, `cursor` and `total` come as numbers or as strings ("1029")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _day(value: object) -> str:
    text = _text(value)
    return text[:10] if re.match(r"^\d{4}-\d\d-\d\d", text) else ""


def _first(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]
