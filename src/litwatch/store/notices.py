"""Notice reports: each source's report of a notice about a stored record (0007), and
the stored events of notice kinds that a new report is matched against
(`litwatch.notices` decides; this module only reads and writes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..records import NoticeEvent, NoticeReport
from .engine import StoreCore
from .keys import DEDUP_LIMIT, chunks, dumps, lookup_form
from .schema import events, notice_reports

IDENT_LIMIT = 400  # notice_reports.notice_ident


def _ident(r: NoticeReport) -> str:
    return lookup_form(r.notice_doi.lower() or r.notice_key, IDENT_LIMIT)


class NoticesStore(StoreCore):
    def add_notice_reports(self, tx: Connection, reports: Sequence[NoticeReport], now: datetime) -> list[NoticeReport]:
        """Record reports (`reported_at` defaults to `now`); a report already stored for
        (record, source, kind, notice DOI or else PMID) is skipped. Returns the new ones,
        in the order given (a report given twice, once)."""
        first: dict[tuple[int, str, str, str], NoticeReport] = {}
        for r in reports:
            first.setdefault((r.record_id, r.source, r.kind, _ident(r)), r)
        reports = list(first.values())
        if not reports:
            return []
        rows = [
            {
                "record_id": r.record_id,
                "kind": r.kind,
                "type": r.type,
                "source": r.source,
                "notice_doi": r.notice_doi.lower() or None,
                "notice_key": r.notice_key or None,
                "notice_ident": _ident(r),
                "notice_date": r.notice_date,
                "reported_at": r.reported_at or now,
                "dedup": lookup_form(r.dedup, DEDUP_LIMIT) if r.dedup else None,
            }
            for r in reports
        ]
        t = notice_reports.c
        stmt = self._insert_ignore(notice_reports, ["record_id", "source", "kind", "notice_ident"]).returning(
            t.record_id, t.source, t.kind, t.notice_ident
        )
        # RETURNING names only the rows inserted: a conflict returns nothing
        inserted = {tuple(row) for row in tx.execute(stmt, rows)}
        return [r for r in reports if (r.record_id, r.source, r.kind, _ident(r)) in inserted]

    def notice_reports_for(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, list[NoticeReport]]:
        """Every report stored about each of `record_ids`, oldest first."""
        out: dict[int, list[NoticeReport]] = {}
        t = notice_reports.c
        for part in chunks(list(set(record_ids))):
            q = sa.select(notice_reports).where(t.record_id.in_(part)).order_by(t.reported_at, t.id)
            for row in tx.execute(q):
                out.setdefault(row.record_id, []).append(
                    NoticeReport(
                        record_id=row.record_id,
                        kind=row.kind,
                        type=row.type,
                        source=row.source,
                        notice_doi=row.notice_doi or "",
                        notice_key=row.notice_key or "",
                        notice_date=row.notice_date,
                        reported_at=row.reported_at,
                        dedup=row.dedup or "",
                    )
                )
        return out

    def reported_versions(self, tx: Connection, dois: Iterable[str], sources: Sequence[str]) -> dict[str, list[int]]:
        """The records that `sources` (a preprint server) reported a newer version of,
        by that version's DOI: journal DOI (lower case) → the preprints' record ids. How
        the journal article of a preprint is known to be the same work (issue 27)."""
        out: dict[str, list[int]] = {}
        t = notice_reports.c
        for part in chunks(sorted({d.lower() for d in dois if d})):
            wanted = {lookup_form(d, IDENT_LIMIT): d for d in part}
            q = (
                sa.select(t.record_id, t.notice_ident)
                .where(t.kind == "update", t.source.in_(list(sources)), t.notice_ident.in_(list(wanted)))
                .order_by(t.record_id)
            )
            for row in tx.execute(q):
                ids = out.setdefault(wanted[row.notice_ident], [])
                if row.record_id not in ids:
                    ids.append(row.record_id)
        return out

    def notice_events_for(
        self, tx: Connection, record_ids: Iterable[int], kinds: Sequence[str]
    ) -> dict[int, list[NoticeEvent]]:
        """The events of `kinds` of each of `record_ids`, one per dedup key whatever the
        queries (the earliest), with its detail, oldest first: what a new report of a
        notice is matched against."""
        out: dict[int, dict[str, NoticeEvent]] = {}
        e = events.c
        for part in chunks(list(set(record_ids))):
            q = (
                sa.select(e.record_id, e.kind, e.dedup, e.created_at, e.detail)
                .where(e.record_id.in_(part), e.kind.in_(list(kinds)))
                .order_by(e.created_at, e.id)
            )
            for row in tx.execute(q):
                seen = out.setdefault(row.record_id, {})
                if row.dedup not in seen:
                    seen[row.dedup] = NoticeEvent(
                        row.record_id, row.kind, row.dedup, row.created_at, json.loads(row.detail or "{}")
                    )
        return {rid: list(by.values()) for rid, by in out.items()}

    def patch_event_detail(self, tx: Connection, record_id: int, dedup: str, patch: dict[str, object]) -> int:
        """Set top-level keys of the detail of every event (each query's) of `record_id`
        with `dedup`: a later source's name on a notice event (`notices.sources_patch`).
        Returns how many events changed."""
        e = events.c
        where = sa.and_(e.record_id == record_id, e.dedup == lookup_form(dedup, DEDUP_LIMIT))
        changed = 0
        for row in tx.execute(sa.select(e.id, e.detail).where(where)):
            detail = json.loads(row.detail or "{}")
            merged = {**detail, **patch}
            if merged != detail:
                tx.execute(events.update().where(e.id == row.id).values(detail=dumps(merged)))
                changed += 1
        return changed
