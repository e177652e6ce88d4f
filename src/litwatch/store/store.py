"""`Store`: the one facade over the database, with intention-revealing methods over
SQLAlchemy Core. Each concern is a module of its own, whose part of `Store` is a mixin:

- engine.py — engine, migrations, transactions, `write`, the database's clock, the edge
  where SQLAlchemy's exceptions become `StoreError`
- versions.py — records and versions
- events.py — hits and events, and the events still to deliver
- notices.py — each source's report of a notice, and the notice events to match it against
- outbox.py — outbox messages and their deliveries
- progress.py — poll state, PubMed's missing records and overflowed days, feed
  entries, digest state and recipients
- claims.py — task leases and the request budget
- web.py — what the web view reads, and the unsubscribed recipients

Mixins rather than composition: callers keep one object and one flat vocabulary
(`store.poll_ok(tx, …)`, not `store.progress.poll_ok(tx, …)`), no method is written
twice to forward it, and the concerns share nothing but `StoreCore` (engine, dialect,
the database's clock), which each mixin subclasses so mypy checks its use of it. No
two parts define the same name (tests/test_store.py checks), so the order of the bases
decides nothing. What a caller may rely on is in ports.py, as Protocols."""

from __future__ import annotations

from .claims import ClaimsStore
from .engine import guard_public, make_engine
from .events import EventsStore
from .keys import DEDUP_LIMIT, DOI_LIMIT, dumps, key_hash, lookup_form
from .notices import NoticesStore
from .outbox import OutboxStore
from .progress import ProgressStore
from .versions import RecordsStore
from .web import WebStore

PARTS = (RecordsStore, EventsStore, NoticesStore, OutboxStore, ProgressStore, ClaimsStore, WebStore)


@guard_public
class Store(RecordsStore, EventsStore, NoticesStore, OutboxStore, ProgressStore, ClaimsStore, WebStore):
    """The database of one litwatch: `Store(url)` creates or migrates its schema.
    Every public method raises `StoreError` (`StoreConflict` for a conflict a rerun
    resolves) for a database error, never a SQLAlchemy exception."""


__all__ = ["DEDUP_LIMIT", "DOI_LIMIT", "PARTS", "Store", "dumps", "key_hash", "lookup_form", "make_engine"]
