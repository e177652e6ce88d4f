"""Storage: tables, migrations and the `Store`, the only place that builds queries."""

from .store import Current, PendingEvent, Store

__all__ = ["Current", "PendingEvent", "Store"]
