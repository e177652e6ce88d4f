"""`sources.eutils.prefetched` (issue 15): batch k+1 is fetched on a worker thread while
the caller parses batch k. The same items in the same order; one ahead, never two (the
memory bound: two batches); an error is raised in the caller at the item where the
source stopped, and nothing is asked for after it; a caller that stops early does not
wait for the request in flight. The source here is a plain generator that records what
it was asked for, standing in for EutilsClient.efetch_history."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from litwatch.errors import SourceError
from litwatch.sources.eutils import prefetched


class Source:
    """Items 0..n-1; `started` lists the items asked for, in order; `fail_at` raises
    a SourceError instead of that item; `hold` blocks the item until released."""

    def __init__(self, n: int, *, fail_at: int | None = None, hold: int | None = None) -> None:
        self.n, self.fail_at, self.hold = n, fail_at, hold
        self.started: list[int] = []
        self.finished: list[int] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.lock = threading.Condition()

    def __iter__(self) -> Iterator[int]:
        for k in range(self.n):
            with self.lock:
                self.started.append(k)
                self.threads.add(threading.current_thread().name)
                self.lock.notify_all()
            if k == self.hold:
                self.release.wait(10)
            if k == self.fail_at:
                raise SourceError(f"efetch (records {k}): HTTP 500 (gave up after 5 attempts)")
            self.finished.append(k)
            yield k

    def wait_started(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.started) >= count, 30), self.started


def test_same_items_in_order_fetched_on_a_worker_thread() -> None:
    src = Source(7)
    assert list(prefetched(src)) == list(range(7))
    assert all(t.startswith("litwatch-prefetch") for t in src.threads)  # the requests are not made by the caller


def test_one_batch_ahead_never_two() -> None:
    src = Source(5)
    seen = []
    for k in prefetched(src):
        seen.append(k)
        if k + 1 < src.n:
            src.wait_started(k + 2)  # the next batch is fetched while this one is "parsed"
        time.sleep(0.05)  # room for a worker that would run further ahead (a check that nothing happens)
        assert src.started == list(range(min(k + 2, src.n))), (k, src.started)
    assert seen == list(range(5))


def test_an_error_is_raised_at_its_batch_and_nothing_is_asked_after_it() -> None:
    src = Source(6, fail_at=3)
    got = []
    with pytest.raises(SourceError, match=r"records 3\): HTTP 500"):
        for k in prefetched(src):
            got.append(k)
    assert got == [0, 1, 2] and src.started == [0, 1, 2, 3]


def test_a_caller_that_stops_does_not_wait_for_the_request_in_flight() -> None:
    src = Source(5, hold=1)  # batch 1's request hangs
    before = set(threading.enumerate())
    items = prefetched(src)
    assert next(items) == 0
    (worker,) = set(threading.enumerate()) - before
    src.wait_started(2)
    items.close()  # the caller's parse failed: returns at once, the request is left to finish
    assert src.finished == [0]  # batch 1's request was still in flight when close() returned
    src.release.set()
    worker.join(30)  # the request in flight finishes, then the worker ends
    assert not worker.is_alive()
    assert src.started == [0, 1]  # and the worker asked for nothing more
