"""The outbox and its deliveries: messages queued with the events they bind, claimed
for sending (owner, until on the database's clock), marked sent, failed, refused or
split. outbox.py (the package's) decides; this builds the statements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import StoreCore
from .rows import MessagePart, OutboxMessage, OutboxSummary, RefusedMessage, SendingMessage, row_of
from .schema import deliveries, outbox

_REFUSED_COLUMNS = (
    outbox.c.id,
    outbox.c.digest,
    outbox.c.recipient,
    outbox.c.message_id,
    outbox.c.subject,
    outbox.c["items"],
    outbox.c.reply,
    outbox.c.last_error,
    outbox.c.refused_at,
    outbox.c.created_at,
)


def _mine(outbox_id: int, owner: str | None) -> sa.ColumnElement[bool]:
    return sa.and_(outbox.c.id == outbox_id, outbox.c.state == "sending", outbox.c.owner == owner)


class OutboxStore(StoreCore):
    def queue_message(
        self,
        tx: Connection,
        *,
        digest: str,
        recipient: str,
        message_id: str,
        subject: str,
        mime: bytes,
        items: int,
        event_ids: Sequence[int],
        now: datetime,
    ) -> int:
        """The outbox row and the deliveries binding its events, in the caller's transaction."""
        oid = tx.execute(
            sa.insert(outbox).returning(outbox.c.id),
            {
                "digest": digest,
                "recipient": recipient,
                "message_id": message_id,
                "subject": subject,
                "mime": mime,
                "items": items,
                "state": "queued",
                "attempts": 0,
                "created_at": now,
            },
        ).scalar_one()
        if event_ids:
            tx.execute(
                sa.insert(deliveries),
                [{"event_id": e, "digest": digest, "recipient": recipient, "outbox_id": oid} for e in event_ids],
            )
        return int(oid)

    def queued_messages(
        self, tx: Connection, *, digests: Sequence[str] | None, now: datetime | None
    ) -> list[OutboxMessage]:
        """Queued messages, oldest first; with `now`, only those whose retry time has come."""
        q = sa.select(outbox).where(outbox.c.state == "queued").order_by(outbox.c.id)
        if digests is not None:
            q = q.where(outbox.c.digest.in_(list(digests)))
        if now is not None:
            q = q.where(sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now))
        return [row_of(OutboxMessage, r) for r in tx.execute(q)]

    def messages(self, tx: Connection, ids: Sequence[int]) -> list[OutboxMessage]:
        q = sa.select(outbox).where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)
        return [row_of(OutboxMessage, r) for r in tx.execute(q)]

    def sending(self, tx: Connection, *, digests: Sequence[str] | None) -> list[SendingMessage]:
        """Messages claimed for sending, with `stale`: the claim ran out (database clock)."""
        now = self.db_now(tx)
        q = sa.select(
            outbox.c.id,
            outbox.c.digest,
            outbox.c.recipient,
            outbox.c.subject,
            outbox.c.message_id,
            outbox.c.owner,
            outbox.c.until,
            (outbox.c.until < now).label("stale"),
        ).where(outbox.c.state == "sending")
        if digests is not None:
            q = q.where(outbox.c.digest.in_(list(digests)))
        return [
            SendingMessage(r.id, r.digest, r.recipient, r.subject, r.message_id, r.owner, r.until, bool(r.stale))
            for r in tx.execute(q.order_by(outbox.c.id))
        ]

    def queued_digests(self, tx: Connection, now: datetime) -> list[str]:
        """Digests with a queued message whose retry time has come, or one whose sending
        claim ran out (its holder died mid-send)."""
        due = sa.and_(
            outbox.c.state == "queued", sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now)
        )
        stale = sa.and_(outbox.c.state == "sending", outbox.c.until < self.db_now(tx))
        q = sa.select(outbox.c.digest).where(sa.or_(due, stale)).distinct()
        return sorted(r.digest for r in tx.execute(q))

    # ------------------------------------------------------------------ the claim and its outcome

    def claim_message(self, tx: Connection, outbox_id: int, owner: str, ttl: timedelta) -> bool:
        """`queued → sending (owner, until)` in one checked update; False when another
        process claimed or sent it first. A stale claim (its holder died) is taken over."""
        now = self.db_now(tx)
        claimable = sa.or_(outbox.c.state == "queued", sa.and_(outbox.c.state == "sending", outbox.c.until < now))
        result = tx.execute(
            outbox.update()
            .where(outbox.c.id == outbox_id, claimable)
            .values(state="sending", owner=owner, until=now + ttl)
        )
        return bool(result.rowcount == 1)

    def renew_claim(self, tx: Connection, outbox_id: int, owner: str, ttl: timedelta, margin: timedelta) -> bool:
        """Extend `owner`'s claim to `ttl` from now, if it still holds it with at least
        `margin` left (database clock); False otherwise: not to be handed over."""
        now = self.db_now(tx)
        result = tx.execute(
            outbox.update().where(_mine(outbox_id, owner), outbox.c.until > now + margin).values(until=now + ttl)
        )
        return bool(result.rowcount == 1)

    def release_claim(self, tx: Connection, outbox_id: int, owner: str | None) -> bool:
        """A dead process's claim goes back to `queued` (checked: still that owner's)."""
        result = tx.execute(
            outbox.update().where(_mine(outbox_id, owner)).values(state="queued", owner=None, until=None)
        )
        return bool(result.rowcount == 1)

    def mark_sent(self, tx: Connection, outbox_id: int, owner: str, now: datetime) -> bool:
        """Sent, if `owner` still holds the message's claim; False otherwise (its claim ran
        out and another process took the message over: not counted as sent by us)."""
        result = tx.execute(
            outbox.update()
            .where(_mine(outbox_id, owner))
            .values(state="sent", sent_at=now, attempts=outbox.c.attempts + 1, last_error=None, owner=None, until=None)
        )
        return bool(result.rowcount == 1)

    def mark_failed(self, tx: Connection, outbox_id: int, owner: str, error: str, *, retry_at: datetime) -> bool:
        """A temporary failure: back to `queued`, tried again at `retry_at`."""
        result = tx.execute(
            outbox.update()
            .where(_mine(outbox_id, owner))
            .values(
                state="queued",
                attempts=outbox.c.attempts + 1,
                last_error=error,
                next_attempt_at=retry_at,
                owner=None,
                until=None,
            )
        )
        return bool(result.rowcount == 1)

    def mark_refused(self, tx: Connection, outbox_id: int, owner: str, error: str, reply: str, now: datetime) -> bool:
        """Refused for good (5xx): kept, with its events bound to it, until `requeue_refused`."""
        result = tx.execute(
            outbox.update()
            .where(_mine(outbox_id, owner))
            .values(
                state="refused",
                attempts=outbox.c.attempts + 1,
                last_error=error,
                reply=reply,
                refused_at=now,
                next_attempt_at=None,
                owner=None,
                until=None,
            )
        )
        return bool(result.rowcount == 1)

    def split_message(
        self, tx: Connection, outbox_id: int, owner: str, parts: Sequence[MessagePart], now: datetime
    ) -> list[int]:
        """Replace a message the server found too large by `parts`, queued, its events
        bound to them; the message itself stays as `split`. [] when `owner` no longer
        holds it."""
        row = tx.execute(sa.select(outbox.c.digest, outbox.c.recipient).where(_mine(outbox_id, owner))).first()
        if row is None:
            return []
        tx.execute(
            outbox.update().where(outbox.c.id == outbox_id).values(state="split", owner=None, until=None, sent_at=None)
        )
        ids = []
        for part in parts:
            pid = tx.execute(
                sa.insert(outbox).returning(outbox.c.id),
                {
                    "digest": row.digest,
                    "recipient": row.recipient,
                    "message_id": part.message_id,
                    "subject": part.subject,
                    "mime": part.mime,
                    "items": part.items,
                    "state": "queued",
                    "attempts": 0,
                    "created_at": now,
                },
            ).scalar_one()
            tx.execute(
                deliveries.update()
                .where(deliveries.c.outbox_id == outbox_id, deliveries.c.event_id.in_(list(part.event_ids)))
                .values(outbox_id=pid)
            )
            ids.append(int(pid))
        return ids

    # ------------------------------------------------------------------ refusals and the summary

    def refused_messages(self, tx: Connection, digest: str | None = None) -> list[RefusedMessage]:
        q = sa.select(*_REFUSED_COLUMNS).where(outbox.c.state == "refused").order_by(outbox.c.id)
        if digest is not None:
            q = q.where(outbox.c.digest == digest)
        return [row_of(RefusedMessage, r) for r in tx.execute(q)]

    def requeue_refused(self, tx: Connection, ids: Sequence[int]) -> int:
        """`--retry-failed`: these refused messages go back to `queued`, as they were
        (same Message-ID), to be sent before anything newer. Returns how many."""
        if not ids:
            return 0
        result = tx.execute(
            outbox.update()
            .where(outbox.c.id.in_(list(ids)), outbox.c.state == "refused")
            .values(state="queued", next_attempt_at=None)
        )
        return int(result.rowcount)

    def readdress_refused(self, tx: Connection, outbox_id: int, to: tuple[str, bytes] | None) -> bool:
        """A refused message whose recipient the config no longer lists: with `to`
        (the corrected address, the message addressed to it), queued for them, same
        Message-ID (it never reached anyone), binding its events to them too (one they
        have bound already stays as it was; the old address keeps its bindings, so it
        never gets them again). Without, `withdrawn` (the recipient was removed): kept,
        never sent. True when it was queued."""
        row = tx.execute(sa.select(outbox).where(outbox.c.id == outbox_id, outbox.c.state == "refused")).first()
        if row is None:
            return False
        if to is None:
            tx.execute(outbox.update().where(outbox.c.id == outbox_id).values(state="withdrawn"))
            return False
        recipient, mime = to
        bound = sa.select(deliveries.c.event_id)
        events = set(tx.execute(bound.where(deliveries.c.outbox_id == outbox_id)).scalars())
        theirs = bound.where(deliveries.c.digest == row.digest, deliveries.c.recipient == recipient)
        new = sorted(events - set(tx.execute(theirs).scalars()))
        tx.execute(
            outbox.update()
            .where(outbox.c.id == outbox_id)
            .values(recipient=recipient, mime=mime, state="queued", next_attempt_at=None)
        )
        if new:
            tx.execute(
                sa.insert(deliveries),
                [{"event_id": e, "digest": row.digest, "recipient": recipient, "outbox_id": outbox_id} for e in new],
            )
        return True

    def outbox_summary(self, tx: Connection) -> OutboxSummary:
        waiting = outbox.c.state.in_(["queued", "sending"])
        q = sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(waiting)
        count, oldest = tx.execute(q).one()
        sending = tx.execute(sa.select(sa.func.count()).where(outbox.c.state == "sending")).scalar_one()
        refused = tx.execute(sa.select(sa.func.count()).where(outbox.c.state == "refused")).scalar_one()
        return OutboxSummary(queued=int(count), oldest_queued=oldest, sending=int(sending), failed=int(refused))
