"""What `litwatch status` and `litwatch history` show: read from the store, with the
daemon's schedule (tasks.py, the same pure functions the daemon uses) for next runs
and retries. Reads only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .config import DigestSettings, QuerySettings, Settings
from .digest.build import REPORT_GAPS_FOR, Digests, overflow_text
from .errors import UsageError
from .polls.feedkinds import stale_note
from .records import CROSSREF, CROSSREF_RECHECK, NOTICES, SHARED, NoticeReport, feed_source
from .store.ports import ServicePort
from .store.rows import Lease, MissingPmid, Overflow, PollState
from .store.works import WorkDoubt

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

from .tasks import (
    SourceTimes,
    crossref_plan,
    digest_task,
    last_success,
    next_planned,
    next_retry,
    notices_plan,
    plan_of,
    poll_task,
    retry_at,
    retry_base,
    task_sources,
)


class StatusView:
    def __init__(self, settings: Settings, store: ServicePort, digests: Digests) -> None:
        self.settings = settings
        self.store = store
        self.digests = digests
        self.now = digests.now

    def history(self, ident: str) -> list[dict[str, Any]]:
        with self.store.transaction() as tx:
            found = self.store.find_records(tx, ident)
            if not found:
                raise UsageError(f"no stored record with PMID, DOI or feed entry id {ident!r}")
            ids = [rid for rid, _, _ in found]
            work_of = self.store.works_of(tx, ids)
            members = self.store.records_of_works(tx, set(work_of.values()))
            # a notice reported about another record of the work (the feed item of a paper
            # looked up by PMID) is this record's news too: shown with it, sources and all
            reports = self.store.notice_reports_for(tx, {r for rids in members.values() for r in rids} | set(ids))
            doubts = self.store.work_doubts(tx, ids)
            names = self._record_names(tx, {r for rids in members.values() for r in rids})
            out = []
            for rid, source, key in found:
                out.append(
                    {
                        "source": source,
                        "key": key,
                        "versions": self.store.versions_of(tx, rid),
                        # which source reported which notice, and when
                        "notices": _work_reports(rid, members.get(work_of.get(rid, 0), []), ids, reports),
                        # the other records of its work (one paper, one decision: issue 25)
                        "work": [names[r] for r in members.get(work_of.get(rid, 0), []) if r != rid and r in names],
                        "doubts": [doubt_line(d, rid) for d in doubts if rid in (d.record_id, d.other_id)],
                    }
                )
            return out

    def _record_names(self, tx: Connection, record_ids: set[int]) -> dict[int, str]:
        """ "pubmed 123", "feed:journal ami-1" for each record id."""
        return {rid: f"{c.record.source} {c.record.key}" for rid, c in self.store.current_by_id(tx, record_ids).items()}

    def status(self) -> dict[str, Any]:
        with self.store.transaction() as tx:
            now = _Now(self.now(), self.store.db_now(tx))
            states = {(r.query, r.source): r for r in self.store.all_poll_states(tx)}
            leases = self.store.leases(tx)
            tz = self.settings.timezone
            queries = []
            # each query's rows, counts and gaps read once for all (issue 28: `status` of
            # a thousand queries makes a handful of queries, not thousands)
            names = [q.name for q in self.settings.queries]
            by_query: dict[str, list[PollState]] = {}
            for (qn, _), row in states.items():
                by_query.setdefault(qn, []).append(row)
            times = _times(states)
            counts = self.store.count_records_by_query(tx, names)
            missing = self.store.missing_reports(tx, names)
            overflows: dict[str, list[Overflow]] = {}
            for o in self.store.overflows(tx, names, since=now.host - REPORT_GAPS_FOR):
                overflows.setdefault(o.query, []).append(o)
            for q in self.settings.queries:
                rows = by_query.get(q.name, [])
                last_ok = max((r.last_ok for r in rows if r.last_ok), default=None)
                errs = [r for r in rows if r.failing_since is not None]
                queries.append(
                    {
                        "name": q.name,
                        "last_success": _iso(last_ok),
                        "last_error": errs[0].last_error if errs else None,
                        "failing_since": _iso(errs[0].failing_since) if errs else None,
                        "next_run": _iso(self._next_poll(q, times, leases, now)),
                        "records": counts.get(q.name, 0),
                        **_gaps(missing.get(q.name, []), overflows.get(q.name, []), now.host),
                    }
                )
            feeds = []
            for f in self.settings.feeds:
                r = states.get((SHARED, feed_source(f.name)))
                feeds.append(
                    {
                        "name": f.name,
                        "last_success": _iso(r.last_ok) if r else None,
                        "last_error": r.last_error if r and r.failing_since else None,
                        "failing_since": _iso(r.failing_since) if r else None,
                        "disabled": bool(r.disabled) if r else False,
                        "stale": stale_note(f, r, now.host),  # kind ema: its data stopped moving
                        "next_retry": self._retry(r, self._feed_period(f.name, now.host)),
                    }
                )
            sources = []
            crossref = crossref_plan(self.settings, now.host)
            if self.settings.crossref is not None:
                r = states.get((SHARED, CROSSREF))
                checked = states.get((SHARED, CROSSREF_RECHECK))
                sources.append(
                    {
                        "name": "crossref",
                        "last_success": _iso(r.last_ok) if r else None,
                        "last_error": r.last_error if r and r.failing_since else None,
                        "failing_since": _iso(r.failing_since) if r else None,
                        "last_recheck": _iso(checked.last_ok) if checked else None,
                        "recheck_note": checked.last_error if checked else None,
                        "disabled": False,
                        "stale": None,
                        "next_retry": self._retry(r, crossref.period(tz, now.host)) if crossref else None,
                    }
                )
            notices = notices_plan(self.settings, now.host)
            if notices is not None:
                r = states.get((SHARED, NOTICES))
                sources.append(
                    {
                        "name": "notices",
                        "last_success": _iso(r.last_ok) if r else None,
                        "last_error": r.last_error if r and r.failing_since else None,
                        "failing_since": _iso(r.failing_since) if r else None,
                        "next_retry": self._retry(r, notices.period(tz, now.host)),
                        "disabled": False,
                        "stale": None,
                    }
                )
            digests = []
            for d in self.settings.digests:
                st = self.store.digest_state(tx, d.name)
                pending, skipped = 0, 0
                for to in d.to:
                    since = self.digests.recipient_since(tx, d, to, now.host)
                    waiting, early = self.store.count_pending(
                        tx, queries=d.queries, kinds=d.events, digest=d.name, recipient=to, since=since
                    )
                    if waiting:
                        waiting -= len(self.digests.heard(tx, d, to, since))  # already told: bound at the next run
                    pending, skipped = max(pending, waiting), max(skipped, early)
                last_run = st.last_run if st else None
                refused = self.digests.outbox.refused(tx, d.name)
                digests.append(
                    {
                        "name": d.name,
                        "last_sent": _iso(st.last_sent) if st else None,
                        "pending_events": pending,
                        "skipped_events": skipped,
                        "next_run": _iso(self._next_digest(d, last_run, leases, now)),
                        "failed_messages": len(refused),
                    }
                )
            box = self.store.outbox_summary(tx)
            refused = self.digests.outbox.refused(tx)
            doubts = [doubt_line(d) for d in self.store.work_doubts(tx)]
            unsubscribed = [
                {"digest": u.digest, "recipient": u.recipient, "since": _iso(u.at), "via": u.via}
                for u in self.store.unsubscribed(tx)
            ]
        return {
            "work_doubts": doubts,
            "queries": queries,
            "feeds": feeds,
            "sources": sources,
            "digests": digests,
            "unsubscribed": unsubscribed,  # issue 26: stopped by their link or `litwatch unsubscribe`
            "outbox": {
                "queued": box.queued,
                "oldest_queued": _iso(box.oldest_queued),
                "sending": box.sending,
                "failed": box.failed,
                "refused": refused,
            },
        }

    def _next_poll(
        self, q: QuerySettings, times: dict[tuple[str, str], SourceTimes], leases: dict[str, Lease], now: _Now
    ) -> datetime:
        """When `litwatch run` polls `q` next: due after the last start by any instance
        (database clock), else after its oldest source's last success (host clock), not
        before the daemon's plan (tasks.py, the function the daemon uses)."""
        plan = plan_of(q)
        keys = task_sources("poll", q)
        planned = self._next_run(plan, leases.get(poll_task(q.name)), last_success(keys, times), now)
        # a failing source is tried again sooner: when the daemon will (tasks.next_retry)
        retry = next_retry(keys, times, retry_base(), plan.period(self.settings.timezone, now.host))
        return planned if retry is None else min(planned, retry)

    def _next_digest(
        self, d: DigestSettings, last_run: datetime | None, leases: dict[str, Lease], now: _Now
    ) -> datetime:
        return self._next_run(plan_of(d), leases.get(digest_task(d.name)), last_run, now, wait_first=True)

    def _next_run(
        self, plan: Any, lease: Lease | None, host_anchor: datetime | None, now: _Now, *, wait_first: bool = False
    ) -> datetime:
        """Like with like: the lease's last run with the database's clock (shown as is),
        else the host-written anchor with this host's clock."""
        tz = self.settings.timezone
        planned = lease.next_run if lease is not None else None
        if lease is not None and lease.last_run is not None:
            return next_planned(plan, tz, lease.last_run, planned, now.db, wait_first=wait_first)
        return next_planned(plan, tz, host_anchor, planned, now.host, wait_first=wait_first)

    def _retry(self, row: PollState | None, period: timedelta) -> str | None:
        """When a failing source is tried again (tasks.retry_at, as the daemon does)."""
        times = _times({("", ""): row}).get(("", "")) if row is not None else None
        return _iso(retry_at(times, retry_base(), period)) if times is not None else None

    def _feed_period(self, feed: str, now: datetime) -> timedelta:
        """A feed is polled with the queries scanning it: as often as the most frequent."""
        tz = self.settings.timezone
        return min(
            (plan_of(q).period(tz, now) for q in self.settings.queries if feed in q.feeds), default=timedelta(days=1)
        )


@dataclass(frozen=True)
class _Now:
    host: datetime
    db: datetime


def _gaps(rows: list[MissingPmid], overflowed: list[Overflow], now: datetime) -> dict[str, Any]:
    """What a query's PubMed polls could not store: PMIDs left out of efetch answers
    (still asked for, or given up) and days of modifications over the cap."""
    waiting = [r for r in rows if r.gave_up_at is None]
    rows = [r for r in rows if r.gave_up_at is None or r.gave_up_at >= now - REPORT_GAPS_FOR]
    return {
        "missing": [r.pmid for r in waiting],
        "missing_since": _iso(min((r.first_missing for r in waiting), default=None)),
        "gave_up": [
            {"pmid": r.pmid, "missing_since": _iso(r.first_missing), "gave_up_at": _iso(r.gave_up_at)}
            for r in rows
            if r.gave_up_at is not None
        ],
        "skipped_modifications": [
            {"day": o.day, "records": o.count, "noted_at": _iso(o.noted_at), "note": overflow_text(o)}
            for o in overflowed
        ],
    }


def _times(states: Mapping[tuple[str, str], PollState | None]) -> dict[tuple[str, str], SourceTimes]:
    return {
        k: SourceTimes(r.last_ok, r.failing_since, r.last_error_at, bool(r.disabled))
        for k, r in states.items()
        if r is not None
    }


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value else None


__all__ = ["StatusView"]


def _work_reports(
    rid: int, members: list[int], found: list[int], reports: Mapping[int, list[NoticeReport]]
) -> list[NoticeReport]:
    """The reports of `rid`, then those of the records of its work that were not looked
    up themselves (those have their own entry)."""
    others = [r for other in members if other != rid and other not in found for r in reports.get(other, [])]
    return [*reports.get(rid, []), *others]


def doubt_line(d: WorkDoubt, about: int | None = None) -> str:
    """A DOI not joined (issue 25), as `status` and `history` say it."""
    doi = d.ident.removeprefix("doi:")
    if about == d.other_id:
        return f"DOI {doi} is also {d.source} {d.key}'s, whose title differs: not joined"
    return (
        f"{d.source} {d.key} carries DOI {doi}, as {d.other_source} {d.other_key} does, but its title differs: "
        "kept apart (check the DOI)"
    )
