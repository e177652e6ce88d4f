"""Storage: tables, migrations and the `Store`, the only place that builds queries.
What the rest of litwatch needs of it is in `ports` (Protocols); what it returns, in
`rows` (frozen row types)."""

from .rows import Current, PendingEvent
from .store import Store

__all__ = ["Current", "PendingEvent", "Store"]
