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

from .records import APPROVAL_REG_KINDS, UPDATE_REG_KINDS, Record

__all__ = ["announces_approval", "approval_phrase", "event_kind"]

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
