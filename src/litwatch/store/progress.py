"""Progress: each source's poll state (watermarks, validators, last success and
failure), the PMIDs PubMed left out and the days over its cap, the entries of each
feed's last answer, and each digest's runs and recipients' starts. Moved only in the
transaction that stored what it covers (ARCHITECTURE.md rule 1)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import StoreCore
from .keys import chunks
from .rows import DigestState, MissingPmid, Overflow, PollState, row_of
from .schema import digest_recipients, digest_state, feed_entries, poll_state, pubmed_missing, pubmed_overflow


class ProgressStore(StoreCore):
    # ------------------------------------------------------------------ poll state

    def poll_state(self, tx: Connection, query: str, source: str) -> PollState | None:
        q = sa.select(poll_state).where(poll_state.c.query == query, poll_state.c.source == source)
        row = tx.execute(q).first()
        return row_of(PollState, row) if row is not None else None

    def all_poll_states(self, tx: Connection) -> list[PollState]:
        q = sa.select(poll_state).order_by(poll_state.c.query, poll_state.c.source)
        return [row_of(PollState, r) for r in tx.execute(q)]

    def poll_ok(self, tx: Connection, query: str, source: str, now: datetime, **values: object) -> None:
        """A successful poll, with the progress it made (`values`: poll_state columns)."""
        values = {"last_ok": now, "failing_since": None, "polls": poll_state.c.polls + 1, **values}
        self._upsert(tx, poll_state, {"query": query, "source": source}, values)

    def poll_failed(self, tx: Connection, query: str, source: str, error: str, now: datetime, **values: object) -> None:
        """A failed poll: the error, since when the source fails, and any progress made."""
        row = self.poll_state(tx, query, source)
        since = row.failing_since if row is not None and row.failing_since is not None else now
        values = {
            "last_error": error,
            "last_error_at": now,
            "failing_since": since,
            "errors": poll_state.c.errors + 1,
            **values,
        }
        self._upsert(tx, poll_state, {"query": query, "source": source}, values)

    def note_matched(self, tx: Connection, query: str, source: str, marker: str) -> None:
        """`query` has matched the answer of the shared `source` that `marker` names
        (polls/feeds.py): kept in the query's own row, which records no success or failure."""
        self._upsert(tx, poll_state, {"query": query, "source": source}, {"watermark": marker})

    # ------------------------------------------------------------------ PubMed gaps

    def missing_pmids(self, tx: Connection, query: str, *, given_up: bool = False) -> dict[str, datetime]:
        """PMIDs of `query` still to fetch again (with `given_up`, also those given up):
        {pmid: first missing}."""
        q = sa.select(pubmed_missing.c.pmid, pubmed_missing.c.first_missing).where(pubmed_missing.c.query == query)
        if not given_up:
            q = q.where(pubmed_missing.c.gave_up_at.is_(None))
        return {row.pmid: row.first_missing for row in tx.execute(q)}

    def note_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None:
        """PMIDs efetch left out this time: added, or one more try counted."""
        pmids = sorted(set(pmids))
        if not pmids:
            return
        known = {
            row.pmid
            for part in chunks(pmids)
            for row in tx.execute(
                sa.select(pubmed_missing.c.pmid).where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(part))
            )
        }
        for part in chunks(pmids):
            again = [p for p in part if p in known]
            if again:
                tx.execute(
                    pubmed_missing.update()
                    .where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(again))
                    .values(last_try=now, tries=pubmed_missing.c.tries + 1)
                )
        new = [{"query": query, "pmid": p, "first_missing": now, "last_try": now} for p in pmids if p not in known]
        if new:
            tx.execute(sa.insert(pubmed_missing), new)

    def give_up_missing(self, tx: Connection, query: str, pmids: Iterable[str], now: datetime) -> None:
        for part in chunks(sorted(set(pmids))):
            tx.execute(
                pubmed_missing.update()
                .where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(part))
                .values(gave_up_at=now)
            )

    def found_missing(self, tx: Connection, query: str, pmids: Iterable[str]) -> None:
        """PMIDs that arrived (or that a later answer gave after all): off the list."""
        for part in chunks(sorted(set(pmids))):
            tx.execute(pubmed_missing.delete().where(pubmed_missing.c.query == query, pubmed_missing.c.pmid.in_(part)))

    def missing_reports(self, tx: Connection, queries: Sequence[str]) -> dict[str, list[MissingPmid]]:
        """Each of `queries`' missing PMIDs, waiting ones first, then those given up, by
        PMID: one query a chunk."""
        out: dict[str, list[MissingPmid]] = {q: [] for q in queries}
        for part in chunks(list(dict.fromkeys(queries))):
            q = (
                sa.select(pubmed_missing)
                .where(pubmed_missing.c.query.in_(part))
                .order_by(pubmed_missing.c.gave_up_at.is_not(None), pubmed_missing.c.pmid)
            )
            for r in tx.execute(q):
                out[r.query].append(row_of(MissingPmid, r))
        return out

    def note_overflow(self, tx: Connection, query: str, day: str, count: int, now: datetime) -> bool:
        """A day whose modifications went over the cap; False if it was noted already."""
        q = sa.select(pubmed_overflow.c.day).where(pubmed_overflow.c.query == query, pubmed_overflow.c.day == day)
        if tx.execute(q).first() is not None:
            tx.execute(
                pubmed_overflow.update()
                .where(pubmed_overflow.c.query == query, pubmed_overflow.c.day == day)
                .values(count=count)
            )
            return False
        tx.execute(sa.insert(pubmed_overflow).values(query=query, day=day, count=count, noted_at=now))
        return True

    def overflows(self, tx: Connection, queries: Iterable[str], *, since: datetime | None = None) -> list[Overflow]:
        """Overflowed days of `queries` noted after `since`, oldest first."""
        q = sa.select(pubmed_overflow).where(pubmed_overflow.c.query.in_(list(queries)))
        if since is not None:
            q = q.where(pubmed_overflow.c.noted_at > since)
        return [row_of(Overflow, r) for r in tx.execute(q.order_by(pubmed_overflow.c.day, pubmed_overflow.c.query))]

    # ------------------------------------------------------------------ feed entries

    def set_feed_entries(self, tx: Connection, source: str, record_ids: Iterable[int], seen_at: datetime) -> None:
        """The entries of `source`'s latest 200 answer, received at `seen_at`."""
        tx.execute(feed_entries.delete().where(feed_entries.c.source == source))
        rows = [{"record_id": rid, "source": source, "seen_at": seen_at} for rid in dict.fromkeys(record_ids)]
        if rows:
            tx.execute(sa.insert(feed_entries), rows)

    def feed_entries(self, tx: Connection, source: str) -> tuple[datetime | None, list[int]]:
        """When `source`'s latest 200 answer came (None: never, or it was empty) and the
        ids of the records it held."""
        rows = tx.execute(
            sa.select(feed_entries.c.record_id, feed_entries.c.seen_at).where(feed_entries.c.source == source)
        ).all()
        return (rows[0].seen_at if rows else None), [r.record_id for r in rows]

    # ------------------------------------------------------------------ digests

    def digest_state(self, tx: Connection, digest: str) -> DigestState | None:
        row = tx.execute(sa.select(digest_state).where(digest_state.c.digest == digest)).first()
        return row_of(DigestState, row) if row is not None else None

    def set_digest_state(
        self, tx: Connection, digest: str, *, last_run: datetime | None = None, last_sent: datetime | None = None
    ) -> None:
        """Note the digest's last run and/or last sent mail (the ones given)."""
        values = {k: v for k, v in (("last_run", last_run), ("last_sent", last_sent)) if v is not None}
        # insert-if-missing first: two runs of one digest at once must not both insert
        tx.execute(self._insert_ignore(digest_state, ["digest"]).values(digest=digest))
        if values:
            tx.execute(digest_state.update().where(digest_state.c.digest == digest).values(**values))

    def recipient_since(self, tx: Connection, digest: str, recipient: str) -> datetime | None:
        q = sa.select(digest_recipients.c.since).where(
            digest_recipients.c.digest == digest, digest_recipients.c.recipient == recipient
        )
        found: datetime | None = tx.execute(q).scalar_one_or_none()
        return found

    def start_recipient(self, tx: Connection, digest: str, recipient: str, since: datetime) -> datetime:
        """Record that `recipient` gets the digest's events from `since` on, unless a
        start is recorded already (by a concurrent run): returns the one that holds."""
        tx.execute(
            self._insert_ignore(digest_recipients, ["digest", "recipient"]).values(
                digest=digest, recipient=recipient, since=since
            )
        )
        found = self.recipient_since(tx, digest, recipient)
        assert found is not None
        return found
