"""Crossref REST API answers (`/works/{doi}`, `/works?filter=…`) → notices: the
corrections, retractions, expressions of concern and other updates Crossref knows,
each with its source (the publisher, or Retraction Watch), the notice's DOI, its date
and the DOI of the work it updates. Contains no I/O.

A work names its notices in `updated-by` (this is where Retraction Watch's entries
appear, `"source": "retraction-watch"`, since January 2025); a notice names the works
it updates in `update-to`. Both sides give the same `Notice`, so a notice learnt from
either is one value.

Streaming: the answer is read event by event (ijson) and only one work is built at a
time, so a page of 1,000 full works costs the memory of one work plus the notices kept,
not a parse tree of the whole answer (`keep` drops the rest as they are read).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson

from ..errors import ParseError
from ..records import Notice  # the vocabulary's; named here as before
from .jsonguard import guarded, loads

# Crossref's update types (Crossmark, https://www.crossref.org/documentation/crossmark/
# participating-in-crossmark/ "update type") → litwatch's event kinds. A type Crossref
# adds later is kept as OTHER with its own name in `Notice.type`: recorded, never a retraction.
KINDS = {
    "correction": "erratum",
    "erratum": "erratum",
    "corrigendum": "erratum",
    "retraction": "retraction",
    "partial_retraction": "retraction",
    "withdrawal": "retraction",
    "removal": "retraction",
    "expression_of_concern": "concern",
    "addendum": "update",
    "clarification": "update",
    "new_version": "update",
    "new_edition": "update",
}
OTHER = "other"
_DOI_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)


@dataclass(frozen=True)
class WorksPage:
    """What one answer held: the notices kept, which works it answered for, and the
    cursor of the next page (None on the last page or for a single work)."""

    notices: tuple[Notice, ...]
    dois: frozenset[str]
    next_cursor: str | None
    total: int | None
    items: int  # works in the answer
    skipped: int = 0  # update entries without a usable DOI


def normalize_doi(value: object) -> str:
    """`https://doi.org/10.1021/AM300292V` → `10.1021/am300292v` (DOIs are case-insensitive)."""
    if not isinstance(value, str):
        return ""
    doi = _DOI_PREFIX.sub("", value.strip()).strip()
    return doi.lower() if doi.startswith("10.") else ""


def kind_of(update_type: str) -> str:
    return KINDS.get(update_type.strip().lower().replace("-", "_").replace(" ", "_"), OTHER)


def parse_works(
    body: bytes | IO[bytes],
    *,
    what: str = "Crossref",
    url: str | None = None,
    keep: Callable[[Notice], bool] | None = None,
) -> WorksPage:
    """Parse a `work` or `work-list` answer. Raises `ParseError` (a `SourceError`) for
    an answer that is not JSON, ends early, or is not a works answer."""
    stream = io.BytesIO(guarded(body, what=what, url=url))  # nesting bounded, BOM dropped
    where = f" from {url}" if url else ""
    state = _State(keep)
    try:
        state.read(ijson.parse(stream, use_float=True))
    except ijson.IncompleteJSONError as e:
        detail = _first_line(e)
        problem = (
            "ends early (truncated)" if not detail or "premature EOF" in detail else f"is not valid JSON ({detail})"
        )
        raise ParseError(f"{what}: the answer {problem}{where}", url=url) from e
    except (ijson.JSONError, UnicodeDecodeError, ValueError) as e:
        raise ParseError(f"{what}: the answer is not valid JSON ({_first_line(e)}){where}", url=url) from e
    if state.message_type not in ("work", "work-list"):
        got = state.message_type or "none"
        raise ParseError(f"{what}: not a Crossref works answer (message-type {got}){where}", url=url)
    return WorksPage(
        notices=tuple(state.notices),
        dois=frozenset(state.dois),
        next_cursor=state.cursor if state.message_type == "work-list" else None,
        total=state.total,
        items=state.items,
        skipped=state.skipped,
    )


def _first_line(e: Exception) -> str:
    """yajl's messages quote the text with a caret on further lines: keep the first."""
    lines = str(e).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else ""


def error_message(body: bytes) -> str:
    """Crossref's own words from an error answer: the validation messages of a 400
    (`{"status":"failed","message-type":"validation-failure","message":[{…,"message":"…"}]}`),
    else the body's first line ("Resource not found.")."""
    try:
        data = loads(body, what="Crossref's error answer")
    except (ValueError, ParseError):
        return body.decode("utf-8", "replace").strip().splitlines()[0][:300] if body.strip() else ""
    msg = data.get("message") if isinstance(data, dict) else None
    if isinstance(msg, list):
        return "; ".join(str(m.get("message", "")).strip() for m in msg if isinstance(m, dict))
    if isinstance(msg, dict):
        return str(msg.get("description") or msg.get("message") or msg.get("name") or "")
    return str(msg or "")


class _State:
    def __init__(self, keep: Callable[[Notice], bool] | None) -> None:
        self.keep = keep
        self.message_type = ""
        self.status = ""
        self.cursor: str | None = None
        self.total: int | None = None
        self.notices: dict[Notice, None] = {}  # ordered set
        self.dois: set[str] = set()
        self.items = 0
        self.skipped = 0

    def read(self, events: Iterator[tuple[str, str, Any]]) -> None:
        builder: Any = None
        top = ""
        for prefix, event, value in events:
            if builder is not None:
                builder.event(event, value)
                if event == "end_map" and prefix == top:
                    self.work(builder.value)
                    builder = None
                continue
            if event == "start_map" and (
                prefix == "message.items.item" or (prefix == "message" and self.message_type == "work")
            ):
                builder, top = ijson.ObjectBuilder(), prefix
                builder.event(event, value)
            elif prefix == "status" and event == "string":
                self.status = value
            elif prefix == "message-type" and event == "string":
                self.message_type = value
            elif prefix == "message.next-cursor" and event == "string":
                self.cursor = value or None
            elif prefix == "message.total-results" and event == "number":
                self.total = int(value)

    def work(self, work: Any) -> None:
        self.items += 1  # a short page ends the cursor: count what came, whatever it holds
        if not isinstance(work, dict):
            return
        doi = normalize_doi(work.get("DOI"))
        if doi:
            self.dois.add(doi)
        titles = work.get("title")
        title = " ".join(str(titles[0]).split()) if isinstance(titles, list) and titles else ""
        for entry in _entries(work.get("updated-by")):  # this work, updated by a notice
            self.add(entry, target=doi, notice=normalize_doi(entry.get("DOI")), notice_title="")
        for entry in _entries(work.get("update-to")):  # this work is the notice
            self.add(entry, target=normalize_doi(entry.get("DOI")), notice=doi, notice_title=title)

    def add(self, entry: dict[str, Any], *, target: str, notice: str, notice_title: str) -> None:
        if not target or not notice:
            self.skipped += 1
            return
        update_type = str(entry.get("type") or "")
        n = Notice(
            kind=kind_of(update_type),
            type=update_type,
            target_doi=target,
            notice_doi=notice,
            source=str(entry.get("source") or ""),
            date=_date(entry.get("updated")),
            label=str(entry.get("label") or ""),
            record_id=str(entry.get("record-id") or ""),
            notice_title=notice_title,
        )
        if self.keep is None or self.keep(n):
            self.notices[n] = None


def _entries(value: Any) -> list[dict[str, Any]]:
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []  # null when none


def _date(updated: Any) -> str:
    """Crossref's date object → ISO: `date-parts` [[2019, 7, 26]], else `date-time`."""
    if not isinstance(updated, dict):
        return ""
    parts = updated.get("date-parts")
    if isinstance(parts, list) and parts and isinstance(parts[0], list) and parts[0] and parts[0][0] is not None:
        try:
            nums = [int(p) for p in parts[0][:3]]
        except (TypeError, ValueError):
            nums = []
        if nums:
            return "-".join([f"{nums[0]:04d}", *(f"{p:02d}" for p in nums[1:])])
    when = updated.get("date-time")
    return when[:10] if isinstance(when, str) else ""
