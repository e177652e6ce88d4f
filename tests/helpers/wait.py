"""Waiting on a condition instead of sleeping for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str], step: float = 0.02) -> T:
    """Poll `predicate` until it returns something true and return that; fail the test
    saying `what` was awaited (a function: called then, to say what was seen) if
    `timeout` seconds pass first. The timeout is a bound
    against hanging, not a measurement: pick it generously."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(step)
