"""What a fetch of a feed brings, as plain data, whatever its kind (feedkinds.py makes
it, polls/feeds.py stores it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from ..records import Notice, Record

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ..store.ports import IngestPort


@dataclass
class Prepared:
    """An answer as it meets what is stored, in the poll's transaction: `records` to
    store, `fresh` to match as the new answer, `entries` to keep as the feed's entries,
    `notices` the source reports (a preprint's journal version)."""

    records: Sequence[Record]
    fresh: Sequence[Record]
    entries: Sequence[Record]
    notices: Sequence[Notice] = ()


@dataclass
class FeedAnswer:
    """What one fetch of a feed brought. `records` None: nothing new (a 304, or an answer
    still fresh): the feed's stored entries stand. `values`: the poll_state columns to
    record with it (validators, watermark). `what`: the log's word on it. `prepare`: how
    the answer meets what is stored (None: its records are stored, matched and kept as
    they are)."""

    records: Sequence[Record] | None
    values: dict[str, object]
    requests: int
    warnings: list[str] = field(default_factory=list)
    what: str = ""
    prepare: Callable[[IngestPort, Connection], Prepared] | None = None


def day(value: str | None) -> date | None:
    """An ISO day kept in `watermark`; anything else (a feed that was of another kind
    under this name kept its URL there) is no day: the first poll's lookback applies."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None
