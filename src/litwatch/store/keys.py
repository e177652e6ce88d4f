"""The stored forms of values: JSON as written, a key's hash, the bounded lookup form
of an indexed value, and id lists cut to a size one `IN (...)` takes. Contains no queries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CHUNK = 500  # ids per IN (...) clause
DOI_LIMIT = 300  # records.doi
DEDUP_LIMIT = 400  # events.dedup


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def key_hash(key: str) -> str:
    """What identifies a record's key in the database (records.key_hash): keys have no
    length limit, and PostgreSQL indexes refuse long values."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def lookup_form(value: str, limit: int) -> str:
    """`value` itself up to `limit` characters, else "sha256:" and its hash: the form
    kept in an indexed column that is only ever compared (events.dedup, records.doi).
    Deterministic, so the same value finds its row again; migration 0003 rewrote
    longer values SQLite had kept."""
    return value if len(value) <= limit else "sha256:" + key_hash(value)


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
