"""The poll cycle: the one way litwatch polls. `litwatch poll` (`Service.poll`) and
every poll job of `litwatch run` (the scheduler, through `Service.poll_due`) go through
`PollCycle.run`, so the claims, the isolation of one source's failure, the poll_state
keys and the results cannot differ between them (issue 22).

A cycle polls, in this order:

1. the PubMed queries given, as one `polls.pubmed.PubmedCycle` (one search each, one
   fetch of the union);
2. their feeds, each once however many queries scan it, each under its own claim
   (`Coordinator.exclusive`: one thread of this process and one process at a time).
   A feed another cycle is fetching is skipped alone — that cycle matches it for
   every query scanning it — and the other feeds are polled;
3. with `notices`, the shared notice search, and with `crossref`, the Crossref source
   (last: what this cycle stored is watched too), each under its task's claim, which
   the caller may hold already (the daemon's job for it: the claim is re-entrant).

What one source raises — a store error its data causes, or a bug — is that source's
recorded failure (`isolated`), shown in `status`: the cycle goes on with the others."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from ..config import FeedSettings, QuerySettings, Settings
from ..coordination import Coordinator, LeaseLost, busy
from ..errors import StoreError, first_line
from ..ingest import record_failure
from ..records import CROSSREF, NOTICES, PUBMED, SHARED, feed_source
from ..sources.eutils import EutilsClient
from ..store.ports import PollPort
from ..tasks import CROSSREF_TASK, NOTICES_TASK, poll_task
from .clients import crossref_client, eutils_client
from .results import PollProgress, PollResult, Quiet

if TYPE_CHECKING:
    from ..sources.crossref import CrossrefClient

log = logging.getLogger(__name__)


class Clients:
    """This process's E-utilities and Crossref clients, made when first used with the
    request budgets kept in `claims` (polls/clients.py), and closed with it."""

    def __init__(self, settings: Settings, claims: PollPort) -> None:
        self.settings = settings
        self.claims = claims
        self._eutils: EutilsClient | None = None
        self._crossref: CrossrefClient | None = None

    @property
    def eutils(self) -> EutilsClient:
        if self._eutils is None:
            self._eutils = eutils_client(self.settings.pubmed, self.claims)
        return self._eutils

    @property
    def crossref(self) -> CrossrefClient:
        if self._crossref is None:
            self._crossref = crossref_client(self.settings.crossref, self.claims)
        return self._crossref

    def close(self) -> None:
        if self._eutils is not None:
            self._eutils.close()
        if self._crossref is not None:
            self._crossref.close()


class PollCycle:
    def __init__(
        self,
        settings: Settings,
        store: PollPort,
        coordination: Coordinator,
        clients: Clients,
        now: Callable[[], datetime],
        progress: PollProgress | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.coordination = coordination
        self.clients = clients
        self.now = now  # the host's clock, as stored with each poll
        self.progress: PollProgress = progress or Quiet()

    # ------------------------------------------------------------------ the cycle

    def run(
        self,
        queries: Sequence[QuerySettings],
        *,
        notices: bool = False,
        crossref: bool = False,
        wait: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> list[PollResult]:
        """Poll `queries` (their PubMed searches, their feeds), then the notice search
        and Crossref when asked and configured. `wait`: seconds to wait for a claim
        another process holds, then skip what it covers."""
        answered = self.clients.eutils.answered if any(q.pubmed for q in queries) else 0
        results = self.pubmed(queries)
        results += self.feeds(queries, wait=wait, should_stop=should_stop)
        if notices and self.settings.pubmed.notices:
            reached = any(q.pubmed for q in queries) and self.clients.eutils.answered > answered
            results.append(self._claimed(NOTICES_TASK, "notices", PUBMED, wait, lambda: self.notices(reached=reached)))
        if crossref and self.settings.crossref is not None:
            results.append(self._claimed(CROSSREF_TASK, "crossref", CROSSREF, wait, self.crossref))
        return results

    def claim_queries(
        self, stack: contextlib.ExitStack, queries: Sequence[QuerySettings], *, wait: float
    ) -> tuple[list[QuerySettings], list[PollResult]]:
        """Claim each query's poll for the block of `stack`, as the daemon's job does (a
        start recorded): those won, and a skipped result for each another process has."""
        held, skipped = [], []
        for q in queries:
            h = stack.enter_context(self.coordination.hold(poll_task(q.name), start=True, wait=wait))
            if h.claim.won:
                held.append(q)
            else:
                skipped.append(PollResult(q.name, "*", skipped=busy(h.claim.holder)))
        return held, skipped

    def _claimed(self, task: str, name: str, source: str, wait: float, poll: Callable[[], PollResult]) -> PollResult:
        with self.coordination.hold(task, start=True, wait=wait) as h:
            if not h.claim.won:
                return PollResult(name, source, skipped=busy(h.claim.holder))
            return self.isolated(SHARED, NOTICES if source == PUBMED else source, name, poll)

    # ------------------------------------------------------------------ the sources

    def pubmed(self, queries: Sequence[QuerySettings]) -> list[PollResult]:
        """The PubMed side of a cycle (polls/pubmed.py): one search per query, one fetch
        of the union of what they need, then each query's batch in its own transaction.
        What it raises (a bug) fails its queries, each recorded as failing."""
        from .pubmed import PubmedCycle

        todo = [q for q in queries if q.pubmed]
        if not todo:
            return []
        try:
            return PubmedCycle(self.settings, self.store, self.clients.eutils, self.now(), self.progress).run(todo)
        except LeaseLost:
            raise  # another process holds the claim now: this cycle stops, it does the work
        except Exception as e:  # noqa: BLE001 - logged with its traceback, shown per query
            log.exception("poll pubmed: unexpected error")
            error = f"unexpected error: {type(e).__name__}: {first_line(e)}"
            out = []
            for q in todo:
                record_failure(self.store, q.name, PUBMED, f"query {q.name}: {error}", self.now())
                out.append(PollResult(q.name, PUBMED, error=f"query {q.name}: {error}"))
            return out

    def feeds(
        self, queries: Sequence[QuerySettings], *, wait: float = 0.0, should_stop: Callable[[], bool] = lambda: False
    ) -> list[PollResult]:
        """Each feed of `queries` once, under its claim; one feed's failure, whatever it
        is, is that feed's, and a feed being fetched elsewhere is skipped alone."""
        out = []
        for name in dict.fromkeys(f for q in queries for f in q.feeds):
            source = feed_source(name)
            with self.coordination.exclusive(source, wait=wait, should_stop=should_stop) as held:
                if not held.won:
                    log.info("poll feed=%s: being fetched by %s; skipped", name, held.holder or "this process")
                    out.append(PollResult(name, source, skipped=busy(held.holder)))
                    continue
                feed = self.settings.feed(name)
                out.append(self.isolated(SHARED, source, name, partial(self._feed, feed)))
        return out

    def _feed(self, feed: FeedSettings) -> PollResult:
        from .feeds import poll_feed

        # openFDA's request budgets are kept in this database, shared by every process
        return poll_feed(self.settings, self.store, feed, self.now(), claims=self.store)

    def notices(self, *, reached: bool = False) -> PollResult:
        from .pubmed import poll_notices

        return poll_notices(self.store, self.clients.eutils, self.now(), reached=reached)

    def crossref(self) -> PollResult:
        """The Crossref source's cycle (polls/crossref.py): new notices, and the re-check
        of every stored DOI when `crossref.every` has passed."""
        from .crossref import poll_crossref

        assert self.settings.crossref is not None
        return poll_crossref(self.store, self.clients.crossref, self.now(), self.settings.crossref.interval)

    def isolated(self, query: str, source: str, name: str, poll: Callable[[], PollResult]) -> PollResult:
        """One source's poll. What it raises — a store error its data causes (a value
        the database refuses), or a bug — is that source's recorded failure: the cycle
        goes on with the other sources (issue 13, case 5)."""
        what = {PUBMED: f"query {name}", NOTICES: "notice search", CROSSREF: "Crossref"}.get(source, f"feed {name}")
        try:
            return poll()
        except LeaseLost:
            raise  # another process holds the claim now: this cycle stops, it does the work
        except StoreError as e:
            error = f"{what}: could not store what it fetched: {first_line(e)}"
            log.warning("poll query=%s source=%s: %s", query, source, error)
        except Exception as e:  # noqa: BLE001 - a bug in one source must not end the cycle; logged with its traceback
            log.exception("poll query=%s source=%s: unexpected error", query, source)
            error = f"{what}: unexpected error: {type(e).__name__}: {first_line(e)}"
        record_failure(self.store, query, source, error, self.now())
        return PollResult(name, PUBMED if source in (PUBMED, NOTICES) else source, error=error)


__all__ = ["Clients", "PollCycle"]
