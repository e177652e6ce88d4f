"""openFDA Drugs@FDA (``/drug/drugsfda.json``) bytes → `Record`s: one per approval that
a user would call news. Pure: no I/O, no clock; the date window comes from the caller.

Data: https://open.fda.gov/apis/drug/drugsfda/ (fields: application_number,
sponsor_name, products[].brand_name / active_ingredients[], submissions[] with
submission_type, submission_number, submission_status, submission_status_date
(YYYYMMDD), review_priority, submission_class_code(_description),
submission_property_type[].code, application_docs[]; and the harmonised ``openfda``
block, which new applications often lack until their label is indexed).

What counts (issue 17):

* ``submission_status`` AP (approved). TA (tentative approval: patents or exclusivity
  still block marketing) and every other status is ignored.
* ``submission_type`` ORIG: a new application ("new application"); or SUPPL with
  ``submission_class_code`` EFFICACY: a new indication ("new indication"). Labeling,
  manufacturing (CMC) and other supplements are not news.
* The submission's own status date lies in [since, until]. openFDA returns a whole
  application when *any* of its submissions matches the search, so an application
  found through this month's labeling supplement also carries its 2015 approval;
  that one must not be reported again.

Identity: ``<application_number>:<submission_type>:<submission_number>``
("BLA761036:SUPPL:85"), stable across polls, so overlapping windows cost nothing.
A result that cannot be read is skipped with a warning; if none can be read the page
is a `ParseError`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

import ijson

from ..errors import ParseError
from ..records import Record, feed_source
from .jsonguard import guarded

__all__ = ["OpenFdaParse", "application_records", "drugs_at_fda_url", "parse_drugsfda", "submission_kind"]

DRUGS_AT_FDA = "https://www.accessdata.fda.gov/scripts/cder/daf/index.cfm?event=overview.process&ApplNo={number}"
_DOC_LABELS = {"letter": "approval letter", "label": "label"}


@dataclass(frozen=True)
class OpenFdaParse:
    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    applications: int  # results read
    ignored: int  # submissions in the window that are not approvals of interest (TA, labeling, ...)


def parse_drugsfda(
    data: bytes | IO[bytes],
    *,
    feed_name: str,
    since: date | None = None,
    until: date | None = None,
) -> OpenFdaParse:
    """Parse one drugsfda response page (``{"meta": …, "results": [...]}``), streaming."""
    stream = io.BytesIO(guarded(bytes(data) if isinstance(data, bytearray) else data, what=f"feed {feed_name}"))
    records: list[Record] = []
    warnings: list[str] = []
    seen: set[str] = set()
    apps = failures = ignored = 0
    try:
        for n, app in enumerate(ijson.items(stream, "results.item"), 1):
            apps += 1
            if not isinstance(app, Mapping):
                failures += 1
                warnings.append(f"feed {feed_name}: result {n} is not an object; skipped")
                continue
            try:
                recs, skipped = _application(app, feed_name=feed_name, since=since, until=until)
            except (TypeError, ValueError, AttributeError) as e:
                failures += 1
                warnings.append(f"feed {feed_name}: result {n} ({app.get('application_number', '?')}) skipped: {e}")
                continue
            ignored += skipped
            for rec in recs:
                if rec.key not in seen:
                    seen.add(rec.key)
                    records.append(rec)
    except ijson.JSONError as e:
        raise ParseError(f"feed {feed_name}: the openFDA response is not valid JSON ({e})") from e
    if failures and not records and failures == apps:
        raise ParseError(f"feed {feed_name}: none of the {failures} openFDA results could be read")
    return OpenFdaParse(tuple(records), tuple(warnings), apps, ignored)


def application_records(
    app: Mapping[str, Any], *, feed_name: str, since: date | None = None, until: date | None = None
) -> list[Record]:
    """The approvals of interest in one drugsfda result."""
    return _application(app, feed_name=feed_name, since=since, until=until)[0]


def submission_kind(sub: Mapping[str, Any]) -> str | None:
    """The kind of approval a submission is ("new application", "new indication"), or
    None for anything that is not news."""
    if _s(sub.get("submission_status")).upper() != "AP":
        return None  # TA (tentative), and anything not approved
    stype = _s(sub.get("submission_type")).upper()
    if stype == "ORIG":
        return "new application"
    if stype == "SUPPL" and _s(sub.get("submission_class_code")).upper().startswith("EFFICACY"):
        return "new indication"
    return None


def drugs_at_fda_url(application_number: str) -> str:
    digits = "".join(c for c in application_number if c.isdigit())
    return DRUGS_AT_FDA.format(number=digits) if digits else ""


# --- one application ---------------------------------------------------------------------


def _application(
    app: Mapping[str, Any], *, feed_name: str, since: date | None, until: date | None
) -> tuple[list[Record], int]:
    number = _s(app.get("application_number")).strip()
    if not number:
        raise ValueError("no application_number")
    facts = _Facts.of(app)
    out: list[Record] = []
    ignored = 0
    for sub in _list(app.get("submissions")):
        if not isinstance(sub, Mapping):
            continue
        when = _date(_s(sub.get("submission_status_date")))
        if when is None or (since and when < since) or (until and when > until):
            continue
        kind = submission_kind(sub)
        if kind is None:
            ignored += 1
            continue
        out.append(_record(number, sub, kind, when, facts, feed_name))
    return out, ignored


@dataclass(frozen=True)
class _Facts:
    """What an application says about its product, whichever block says it."""

    sponsor: str
    brands: tuple[str, ...]
    ingredients: tuple[str, ...]
    generic: tuple[str, ...]
    substances: tuple[str, ...]
    manufacturers: tuple[str, ...]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, app: Mapping[str, Any]) -> _Facts:
        products = [p for p in _list(app.get("products")) if isinstance(p, Mapping)]
        ofda = app.get("openfda") if isinstance(app.get("openfda"), Mapping) else {}
        assert isinstance(ofda, Mapping)
        return cls(
            sponsor=_s(app.get("sponsor_name")).strip(),
            brands=_unique([_s(p.get("brand_name")) for p in products] + _strings(ofda.get("brand_name"))),
            ingredients=_unique(
                _s(i.get("name"))
                for p in products
                for i in _list(p.get("active_ingredients"))
                if isinstance(i, Mapping)
            ),
            generic=_unique(_strings(ofda.get("generic_name"))),
            substances=_unique(_strings(ofda.get("substance_name"))),
            manufacturers=_unique(_strings(ofda.get("manufacturer_name"))),
            classes=_unique(_strings(ofda.get("pharm_class_epc"))),
        )

    @property
    def substance(self) -> str:
        names = self.ingredients or self.substances or self.generic
        return "; ".join(names)


def _record(number: str, sub: Mapping[str, Any], kind: str, when: date, f: _Facts, feed_name: str) -> Record:
    stype = _s(sub.get("submission_type")).upper()
    snum = _s(sub.get("submission_number")).strip() or "?"
    flags = _flags(number, sub, kind)
    product = " / ".join(f.brands)
    substance = f.substance
    what = f"{kind} ({number})" if stype == "ORIG" else f"{kind} ({number} supplement {snum})"
    name = f"{product} ({substance.lower()})" if product and substance else (product or substance or number)
    title = f"FDA approval: {name} — {what}"
    page = drugs_at_fda_url(number)
    docs = _documents(sub) + ((("Drugs@FDA", page),) if page else ())
    sentences = [  # each ends in one full stop, whatever the names end in ("Inc.")
        f"{f.sponsor or 'The sponsor'}: {kind}, approved {when.isoformat()}"
        + (f" ({', '.join(flags)})" if flags else "")
        + ".",
        f"Brand: {product}." if product else "",
        f"Active ingredient: {'; '.join(f.ingredients)}." if f.ingredients else "",
        f"Generic name: {'; '.join(f.generic)}." if f.generic else "",
        f"Substance: {'; '.join(f.substances)}." if f.substances else "",
        f"Pharmacologic class: {'; '.join(f.classes)}." if f.classes else "",
        f"Manufacturer: {'; '.join(f.manufacturers)}." if f.manufacturers else "",
        f"Submission class: {_s(sub.get('submission_class_code_description')).strip()}."
        if _s(sub.get("submission_class_code_description")).strip()
        else "",
    ]
    return Record(
        source=feed_source(feed_name),
        key=f"{number}:{stype}:{snum}",
        title=title,
        abstract=" ".join(s.replace("..", ".") for s in sentences if s),
        pub_date=when.isoformat(),
        url=page,
        regulator="FDA",
        reg_kind=kind,
        application=number,
        product=product,
        substance=substance,
        sponsor=f.sponsor,
        reg_flags=flags,
        documents=docs,
    )


def _flags(number: str, sub: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    flags: list[str] = []
    described = _s(sub.get("submission_class_code_description")).lower()
    if "new molecular entity" in described:
        flags.append("new molecular entity")
    if "new active ingredient" in described:
        flags.append("new active ingredient")
    if _s(sub.get("review_priority")).upper().startswith("PRIORITY"):
        flags.append("priority review")
    properties = _list(sub.get("submission_property_type"))
    codes = {_s(p.get("code")).strip().lower() for p in properties if isinstance(p, Mapping)}
    if "orphan" in codes:
        flags.append("orphan")
    if number.upper().startswith("ANDA"):
        flags.append("generic")
    return tuple(flags)


def _documents(sub: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    docs: list[tuple[str, str]] = []
    for doc in _list(sub.get("application_docs")):
        if not isinstance(doc, Mapping):
            continue
        label = _DOC_LABELS.get(_s(doc.get("type")).strip().lower())
        url = _s(doc.get("url")).strip()
        if label and url.startswith(("http://", "https://")) and (label, url) not in docs:
            docs.append((label, url))
    return tuple(docs)


# --- small readers ---------------------------------------------------------------------------


def _date(value: str) -> date | None:
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in _list(value) if isinstance(v, str)]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    seen: set[str] = set()
    for v in values:
        v = " ".join(v.split())
        if v and v.casefold() not in seen:
            seen.add(v.casefold())
            out[v] = None
    return tuple(out)
