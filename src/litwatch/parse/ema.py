"""EMA medicines data (``medicines-output-medicines_json-report_en.json``) bytes or a
stream → `Record`s for human medicines. Pure: no I/O, no clock (``since`` and ``now``
come from the caller).

The document is ``{"meta": {"total_records", "timestamp"}, "data": [{...}, ...]}``,
one object of about 40 string fields per medicine, human and veterinary, dates
``DD/MM/YYYY``, flags "Yes"/"No" (EMA, "Download medicine data", JSON format). It is
read with ijson one medicine at a time, so a file of tens of megabytes is never held
twice (the bytes, plus the Records of the few medicines that matter).

One medicine can give up to three records, each its own identity, so each is reported
once however often the file is read:

* ``<product number>#chmp-opinion`` — a positive CHMP opinion (``opinion_adopted_date``;
  ``opinion_status`` not "Negative"): an approval, "CHMP opinion".
* ``<product number>#eu-authorisation`` — the EU marketing authorisation
  (``marketing_authorisation_date``): an approval, "EU authorisation".
* ``<product number>#<status>`` — a withdrawal, suspension, refusal, negative opinion
  or withdrawn application, dated by its own date field: reported as an `update`.

``since`` drops records dated before it, unless the medicine itself was first
published on or after it (``first_published_date``): the file holds every medicine
since 1995, and a poll wants what happened since the last one, or what became
visible since then (EMA publishes a product's page weeks after the decision: the real
Itvisma, opinion 23/04/2026, authorisation 30/06/2026, first published 28/07/2026).

Field names have changed before. A field litwatch does not know, or a known one that
is missing, is a warning that names it, never a crash; a medicine without a name or a
product number is skipped with a warning. Malformed JSON is a `ParseError` (a cut-off
download must not look like a file in which medicines vanished).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any

import ijson

from ..errors import ParseError
from ..records import Record, feed_source
from .feeds import html_to_text
from .jsonguard import guarded

__all__ = ["KNOWN_FIELDS", "EmaParse", "medicine_records", "parse_ema", "staleness"]

# The fields of the medicines report (EMA JSON, 2026), in the file's order.
KNOWN_FIELDS = (
    "category",
    "name_of_medicine",
    "ema_product_number",
    "medicine_status",
    "opinion_status",
    "latest_procedure_affecting_product_information",
    "international_non_proprietary_name_common_name",
    "active_substance",
    "therapeutic_area_mesh",
    "species_veterinary",
    "patient_safety",
    "atc_code_human",
    "atcvet_code_veterinary",
    "pharmacotherapeutic_group_human",
    "pharmacotherapeutic_group_veterinary",
    "therapeutic_indication",
    "accelerated_assessment",
    "additional_monitoring",
    "advanced_therapy",
    "biosimilar",
    "conditional_approval",
    "exceptional_circumstances",
    "generic",
    "orphan_medicine",
    "prime_priority_medicine",
    "marketing_authorisation_developer_applicant_holder",
    "european_commission_decision_date",
    "start_of_rolling_review_date",
    "start_of_evaluation_date",
    "opinion_adopted_date",
    "withdrawal_of_application_date",
    "marketing_authorisation_date",
    "refusal_of_marketing_authorisation_date",
    "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date",
    "suspension_of_marketing_authorisation_date",
    "revision_number",
    "first_published_date",
    "last_updated_date",
    "medicine_url",
)
_KNOWN = frozenset(KNOWN_FIELDS)

# medicine_status → (reg_kind, the field that dates it). "Authorised" and "Opinion" are
# covered by the opinion and authorisation records.
_STATUS = {
    "withdrawn": ("withdrawal", "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date"),
    "lapsed": ("withdrawal", "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date"),
    "expired": ("withdrawal", "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date"),
    "revoked": ("withdrawal", "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date"),
    "not renewed": ("withdrawal", "withdrawal_expiry_revocation_lapse_of_marketing_authorisation_date"),
    "suspended": ("suspension", "suspension_of_marketing_authorisation_date"),
    "refused": ("refusal", "refusal_of_marketing_authorisation_date"),
    "application withdrawn": ("application withdrawn", "withdrawal_of_application_date"),
    "withdrawn application": ("application withdrawn", "withdrawal_of_application_date"),
}
_QUIET_STATUS = frozenset({"authorised", "opinion", "", "authorised under exceptional circumstances"})
_FLAGS = (
    ("orphan_medicine", "orphan"),
    ("conditional_approval", "conditional approval"),
    ("accelerated_assessment", "accelerated assessment"),
    ("prime_priority_medicine", "PRIME"),
    ("exceptional_circumstances", "exceptional circumstances"),
    ("advanced_therapy", "advanced therapy"),
    ("biosimilar", "biosimilar"),
    ("generic", "generic"),
)
_SLUG = {
    "CHMP opinion": "chmp-opinion",
    "EU authorisation": "eu-authorisation",
    "negative CHMP opinion": "negative-opinion",
    "withdrawal": "withdrawal",
    "suspension": "suspension",
    "refusal": "refusal",
    "application withdrawn": "application-withdrawn",
}
_TITLE = {
    "CHMP opinion": "Positive CHMP opinion",
    "EU authorisation": "EU authorisation",
    "negative CHMP opinion": "Negative CHMP opinion",
    "withdrawal": "EU authorisation withdrawn",
    "suspension": "EU authorisation suspended",
    "refusal": "EU authorisation refused",
    "application withdrawn": "EU application withdrawn",
}


@dataclass(frozen=True)
class EmaParse:
    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    medicines: int  # entries read, human and veterinary
    human: int
    newest_update: date | None  # the latest last_updated_date of any entry (staleness)
    timestamp: str  # meta.timestamp as given


def parse_ema(data: bytes | IO[bytes], *, feed_name: str, since: date | None = None) -> EmaParse:
    """Read the whole document; raise `ParseError` if it is not EMA medicines JSON."""
    stream = io.BytesIO(guarded(bytes(data) if isinstance(data, bytearray) else data, what=f"feed {feed_name}"))
    acc = _Accumulator(feed_name, since)
    meta: Mapping[str, Any] = {}
    saw_data = False
    try:
        events = ijson.parse(stream)
        for prefix, event, value in events:
            if prefix == "meta" and event == "start_map":
                built = _build(event, value, events)
                meta = built if isinstance(built, Mapping) else {}
            elif prefix == "data" and event == "start_array":
                saw_data = True
            elif prefix == "data.item":
                item = _build(event, value, events) if event in ("start_map", "start_array") else value
                acc.add(item)
    except ijson.JSONError as e:
        raise ParseError(f"feed {feed_name}: the EMA medicines file is not valid JSON ({e})") from e
    if not saw_data:
        raise ParseError(f'feed {feed_name}: not EMA medicines data (no "data" array)')
    return acc.result(str(meta.get("timestamp", "")))


def medicine_records(m: Mapping[str, Any], *, feed_name: str, since: date | None = None) -> list[Record]:
    """The records of one human medicine (see the module docstring)."""
    return _records(m, feed_name=feed_name, since=since, warn=lambda _msg: None)


def staleness(newest_update: date | None, now: datetime | date, days: int) -> str | None:
    """A message if the file's last_updated_dates have not moved for more than `days`
    days before `now` (EMA updates the file daily), else None."""
    today = now.date() if isinstance(now, datetime) else now
    if newest_update is None:
        return "the EMA medicines file has no last_updated_date at all; is it still the medicines report?"
    age = (today - newest_update).days
    if age > days:
        return (
            f"the EMA medicines file looks stale: its newest last_updated_date is {newest_update.isoformat()}, "
            f"{age} days before {today.isoformat()} (more than {days})"
        )
    return None


# --- reading ------------------------------------------------------------------------------


def _build(event: str, value: Any, events: Iterator[tuple[str, str, Any]]) -> Any:
    """The object or array that starts with (event, value), built from the events that
    follow it; the iterator is left just after its end."""
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for _prefix, ev, val in events:
        builder.event(ev, val)
        if ev in ("start_map", "start_array"):
            depth += 1
        elif ev in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                break
    return builder.value


class _Accumulator:
    def __init__(self, feed_name: str, since: date | None) -> None:
        self.feed_name = feed_name
        self.since = since
        self.records: list[Record] = []
        self.keys: set[str] = set()
        self.medicines = 0
        self.human = 0
        self.newest: date | None = None
        self.unknown: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()
        self.problems: dict[str, None] = {}

    def add(self, item: object) -> None:
        self.medicines += 1
        if not isinstance(item, Mapping):
            self.problems[f"feed {self.feed_name}: a medicine entry is not an object; skipped"] = None
            return
        keys = set(item)
        self.unknown.update(keys - _KNOWN)
        self.missing.update(_KNOWN - keys)
        updated = _date(_text(item.get("last_updated_date")))
        if updated and (self.newest is None or updated > self.newest):
            self.newest = updated
        if not _is_human(item):
            return
        self.human += 1
        for rec in _records(item, feed_name=self.feed_name, since=self.since, warn=self._warn):
            if rec.key not in self.keys:
                self.keys.add(rec.key)
                self.records.append(rec)

    def _warn(self, message: str) -> None:
        self.problems[f"feed {self.feed_name}: {message}"] = None

    def result(self, timestamp: str) -> EmaParse:
        warnings = []
        if self.unknown:
            names = ", ".join(sorted(self.unknown))
            warnings.append(
                f"feed {self.feed_name}: fields litwatch does not know in the EMA medicines file: {names} "
                "(EMA may have renamed or added a field; they are ignored)"
            )
        if self.missing:
            names = ", ".join(f"{f} (in {n} of {self.medicines})" for f, n in sorted(self.missing.items()))
            warnings.append(f"feed {self.feed_name}: fields missing from the EMA medicines file: {names}")
        warnings.extend(self.problems)
        return EmaParse(tuple(self.records), tuple(warnings), self.medicines, self.human, self.newest, timestamp)


def _is_human(m: Mapping[str, Any]) -> bool:
    category = _text(m.get("category")).strip().lower()
    if category:
        return category == "human"
    # no category (renamed?): human products are numbered EMEA/H/C/..., veterinary EMEA/V/C/...
    return _text(m.get("ema_product_number")).upper().startswith("EMEA/H/")


def _records(m: Mapping[str, Any], *, feed_name: str, since: date | None, warn: Callable[[str], None]) -> list[Record]:
    name = _text(m.get("name_of_medicine")).strip()
    number = _text(m.get("ema_product_number")).strip()
    if not name or not number:
        warn("a human medicine without name_of_medicine or ema_product_number was skipped")
        return []
    out: list[tuple[str, date]] = []
    opinion = _date(_text(m.get("opinion_adopted_date")), warn)
    negative = _text(m.get("opinion_status")).strip().lower() == "negative"
    if opinion:
        out.append(("negative CHMP opinion" if negative else "CHMP opinion", opinion))
    authorised = _date(_text(m.get("marketing_authorisation_date")), warn)
    if authorised:
        out.append(("EU authorisation", authorised))
    status = _text(m.get("medicine_status")).strip().lower()
    if status in _STATUS:
        kind, field = _STATUS[status]
        when = _date(_text(m.get(field)), warn) or _date(_text(m.get("last_updated_date")), warn)
        if when:
            out.append((kind, when))
    elif status not in _QUIET_STATUS:
        warn(f"medicine_status {m.get('medicine_status')!r} is not one litwatch knows; only its dates were used")
    # EMA publishes a product's page weeks after the decision: a medicine first published
    # within the window is new to us, whatever the dates of its events (keys keep each once)
    published = _date(_text(m.get("first_published_date")), lambda _msg: None)
    fresh = since is not None and published is not None and published >= since
    return [_record(m, kind, when, feed_name) for kind, when in out if since is None or fresh or when >= since]


def _record(m: Mapping[str, Any], kind: str, when: date, feed_name: str) -> Record:
    name = _text(m.get("name_of_medicine")).strip()
    number = _text(m.get("ema_product_number")).strip()
    inn = _text(m.get("international_non_proprietary_name_common_name")).strip()
    active = _text(m.get("active_substance")).strip()
    holder = _text(m.get("marketing_authorisation_developer_applicant_holder")).strip()
    areas = [a.strip() for a in _text(m.get("therapeutic_area_mesh")).split(";") if a.strip()]
    indication = html_to_text(_text(m.get("therapeutic_indication")), single_line=True)
    flags = tuple(label for field, label in _FLAGS if _text(m.get(field)).strip().lower() == "yes")
    url = _text(m.get("medicine_url")).strip()
    substance = inn or active
    shown = f"{name} ({substance})" if substance and substance.lower() != name.lower() else name
    sentences = [
        f"{holder or 'The applicant'}: {kind} {when.isoformat()}" + (f" ({', '.join(flags)})" if flags else "") + ".",
        f"Therapeutic area: {'; '.join(areas)}." if areas else "",
        f"Indication: {indication}" if indication else "",
        f"Active substance: {active}." if active and active.lower() != inn.lower() else "",
        f"Product number: {number}.",
    ]
    return Record(
        source=feed_source(feed_name),
        key=f"{number}#{_SLUG[kind]}",
        title=f"{_TITLE[kind]}: {shown}",
        abstract=" ".join(s for s in sentences if s),
        pub_date=when.isoformat(),
        url=url if url.startswith(("http://", "https://")) else "",
        regulator="EMA",
        reg_kind=kind,
        application=number,
        product=name,
        substance=substance,
        sponsor=holder,
        reg_flags=flags,
        documents=(("EMA medicine page", url),) if url.startswith(("http://", "https://")) else (),
    )


def _date(value: str, warn: Callable[[str], None] | None = None) -> date | None:
    """DD/MM/YYYY → date; "" → None; anything else → None and a warning."""
    value = value.strip()
    if not value:
        return None
    parts = value.split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        try:
            return date(int(parts[2]), int(parts[1]), int(parts[0]))
        except ValueError:
            pass
    if warn is not None:
        warn(f"date {value!r} is not DD/MM/YYYY; ignored")
    return None


def _text(value: object) -> str:
    """A field as text: strings as given, a list of strings joined (some mirrors wrap
    every value in a list), anything else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(v for v in value if isinstance(v, str))
    return ""
