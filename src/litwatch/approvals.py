"""Which records announce a regulatory approval. Pure: words and records in, answers out.

Two questions, both asked when a record first matches a query (issue 17):

* `approval_phrase` / `announces_approval`: does a press-release item (a feed marked
  ``approvals: true``) announce an approval? Regulators' news feeds carry approvals
  next to recalls, warnings, safety communications and daily round-ups; only the
  first are approvals, the rest are `new` items. The title decides; a title that says
  neither (e.g. "New option for patients with myeloma") is decided by the first
  sentence of the summary. Any sign of a non-approval wins over approval words, so
  "Company recalls FDA-approved …", "FDA Roundup: … approves …" and "FDA withdraws
  approval of …" are not approvals.
* `event_kind`: for the structured sources (kind openfda / ema), what a record's
  ``reg_kind`` is reported as: an `approval`, or an `update` (withdrawal, suspension,
  refusal, negative opinion, withdrawn application).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import TypeVar
from urllib.parse import urlsplit

from .records import APPROVAL_REG_KINDS, PUBMED, UPDATE_REG_KINDS, Record

__all__ = [
    "SAME_APPROVAL_DAYS",
    "announces_approval",
    "approval_phrase",
    "day_of",
    "decision_names",
    "event_kind",
    "named_in",
    "press_regulator",
    "same_decision",
]

T = TypeVar("T")

_APPROVAL = re.compile(
    r"\baccelerated\s+approvals?\b"
    r"|\bgrant(?:s|ed|ing)?\s+(?:a\s+)?(?:conditional\s+)?marketing\s+authori[sz]ations?\b"
    r"|\bauthori[sz](?:e|es|ed|ing)\s+(?:the\s+)?marketing\b"
    r"|\brecommend(?:s|ed|ing)?\s+(?:the\s+)?(?:granting|approval|authori[sz]ation)\b"
    r"|\bpositive\s+(?:CHMP\s+)?opinion\b"
    r"|\bapprov(?:e|es|ed|al|als|ing)\b"
    r"|\bauthori[sz](?:e|es|ed|ing|ation|ations)\b",
    re.IGNORECASE,
)
_NOT_APPROVAL = re.compile(
    r"\brecall(?:s|ed|ing)?\b"
    r"|\bwarn(?:s|ed|ing|ings)?\b"
    r"|\balert(?:s|ed|ing)?\b"
    r"|\bsafety\s+communication\b"
    r"|\bround-?ups?\b"
    r"|\bwithdr[ae]w(?:s|n|al|ing)?\b"
    r"|\brevok(?:e|es|ed|ing)\b|\brevocation\b"
    r"|\bsuspen(?:d|ds|ded|ding|sion)\b"
    r"|\brefus(?:e|es|ed|al)\b"
    r"|\breject(?:s|ed|ion)?\b"
    r"|\bdeclin(?:e|es|ed)\b"
    r"|\bden(?:y|ies|ied)\b"
    r"|\bcomplete\s+response\b"
    r"|\bnegative\s+opinion\b"
    r"|\bnot\s+(?:been\s+|yet\s+)?(?:approved|authori[sz]ed)\b"
    r"|\badvisory\s+committee\b"
    r"|\bshortages?\b"
    r"|\bseiz(?:e|es|ed|ure)\b"
    r"|\bpropos(?:e|es|ed)\b",
    re.IGNORECASE,
)
# A full stop after a lower-case word or a number ends a sentence; "U.S. Food" does not.
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)]{2}[.!?])\s+(?=[A-Z])")


def approval_phrase(title: str, summary: str = "") -> str | None:
    """The words that make the item an approval announcement, or None."""
    for text in (title, _first_sentence(summary)):
        if _NOT_APPROVAL.search(text):
            return None
        m = _APPROVAL.search(text)
        if m:
            return " ".join(m.group(0).split())
    return None


def announces_approval(title: str, summary: str = "") -> bool:
    return approval_phrase(title, summary) is not None


def event_kind(record: Record) -> str | None:
    """The event a regulatory record (kind openfda / ema) is reported as, by its
    ``reg_kind``: "approval" or "update"; None for any other record."""
    if record.reg_kind in APPROVAL_REG_KINDS:
        return "approval"
    if record.reg_kind in UPDATE_REG_KINDS:
        return "update"
    return None


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return _SENTENCE_END.split(text, maxsplit=1)[0] if text else ""


# --------------------------------------------------------------------------- one decision
# A press release and the regulator's record of the decision it announces are one work
# (issue 25; the digest joined them within one mail since issue 17): same regulator — a
# release on fda.gov is FDA's, on ema.europa.eu EMA's —, the record's brand or substance
# named in the release's title or summary, dates at most SAME_APPROVAL_DAYS apart.

SAME_APPROVAL_DAYS = 14
_PRESS_HOSTS = (("fda.gov", "FDA"), ("ema.europa.eu", "EMA"))
_BIOLOGIC_SUFFIX = re.compile(r"-[a-z]{4}$")  # FDA's four-letter suffix: "pivekimab sunirine-pvzy"
_MIN_NAME = 4  # shorter names ("AB") would match words by chance


def press_regulator(r: Record) -> str:
    """The regulator whose site a (non-PubMed, non-regulatory) record links to, or ""."""
    if r.regulator or r.source == PUBMED or not r.url:
        return ""
    host = (urlsplit(r.url).hostname or "").lower()
    for suffix, regulator in _PRESS_HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return regulator
    return ""


def decision_names(r: Record) -> list[str]:
    """The names an approval goes by: brands, then substances (FDA's "-xxxx" suffix of
    biologics also without it), longest first within each."""
    out: list[str] = []
    for group in (r.product.split(" / "), r.substance.split(";")):
        names: list[str] = []
        for n in group:
            n = " ".join(n.split())
            names.append(n)
            short = _BIOLOGIC_SUFFIX.sub("", n.lower())
            if short != n.lower():
                names.append(short)
        out.extend(sorted((n for n in names if len(n) >= _MIN_NAME), key=len, reverse=True))
    return out


def named_in(names: Sequence[str], text: str) -> str:
    """The first of `names` that `text` names as a whole word (case-insensitive), or ""."""
    for name in names:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE):
            return name.lower() if name.isupper() else name
    return ""


def day_of(value: str) -> date | None:
    """The day of an ISO date or date-time ("2026-01-15", "2026-01-15T21:05:00Z")."""
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def same_decision(press: Record, regulator: str, when: date, decisions: Sequence[tuple[T, Record]]) -> T | None:
    """Which of `decisions` (a handle and the regulator's record) the press release
    `press` of `regulator`, dated `when`, announces: the nearest in date of those that
    qualify, or None."""
    text = f"{press.title}\n{press.abstract}"
    best: tuple[int, int, T] | None = None
    for i, (handle, rec) in enumerate(decisions):
        decided = day_of(rec.pub_date)
        if rec.regulator != regulator or decided is None:
            continue
        apart = abs((decided - when).days)
        if apart > SAME_APPROVAL_DAYS or not named_in(decision_names(rec), text):
            continue
        if best is None or (apart, i) < best[:2]:
            best = (apart, i, handle)
    return best[2] if best else None
