"""What a shared request budget reserved, read where it is decided.

A fake server that refuses above a rate judges request *arrivals*; on a loaded machine
a request reserved on time can arrive late (a process woke up late, a thread waited for
the GIL), so its refusals depend on the load as much as on litwatch. The reservations
do not: `coordination.RequestBudget.reserve` computes each slot on the database's clock
from the slots before it. Checking those is checking litwatch's pacing, whatever the load."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def recorded_slots(store: Any) -> Iterator[dict[str, list[float]]]:
    """While open, every slot `RequestBudget` reserves through `store` (each call of
    `set_budget_starts` appends one: the last of its list), by budget name."""
    slots: dict[str, list[float]] = {}
    real: Callable[..., None] = store.set_budget_starts

    def record(tx: Any, name: str, starts: list[float]) -> None:
        real(tx, name, starts)
        if starts:
            slots.setdefault(name, []).append(starts[-1])

    store.set_budget_starts = record
    try:
        yield slots
    finally:
        del store.set_budget_starts  # the class's method again


def peak(times: Sequence[float], window: float = 1.0) -> int:
    """The most of `times` within any `window` seconds (a start counts from itself on)."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


SLOTLOG = Path(__file__).parent / "slotlog"


def slot_env(path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` for a litwatch subprocess that writes each slot it reserves to `path`
    (helpers/slotlog/sitecustomize.py)."""
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(SLOTLOG), *filter(None, [env.get("PYTHONPATH")])]),
        "LITWATCH_TEST_SLOTS": str(path),
    }


def read_slots(path: Path, name_prefix: str = "") -> list[float]:
    """The slots the subprocesses wrote to `path`, sorted (budgets named `name_prefix`...)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, slot = line.rsplit(" ", 1)
        if name.startswith(name_prefix):
            out.append(float(slot))
    return sorted(out)
