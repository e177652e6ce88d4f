"""Loaded at start-up by a litwatch subprocess whose PYTHONPATH holds this directory
(helpers.budget.slot_env): every request slot it reserves in a shared budget is
appended to $LITWATCH_TEST_SLOTS as `name slot` (the database's clock, epoch seconds).
What the process was given, not when its request reached a fake: see helpers/budget.py."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

_PATH = os.environ.get("LITWATCH_TEST_SLOTS")

if _PATH:
    from litwatch.store import Store  # its public methods are wrapped (store.guard_public): wrap the wrapper

    _real = Store.set_budget_starts

    def _recording(self: Any, tx: Any, name: str, starts: Sequence[float]) -> None:
        _real(self, tx, name, starts)
        if starts:
            # after the statement, before the commit: a reservation rolled back would be
            # listed too (one more, never one fewer), which only makes the check stricter
            with open(_PATH, "a", encoding="utf-8") as f:
                f.write(f"{name} {starts[-1]!r}\n")

    Store.set_budget_starts = _recording  # type: ignore[method-assign]
