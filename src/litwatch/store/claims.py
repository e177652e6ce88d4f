"""Claims and the request budget: task leases (owner, until on the database's clock,
fencing token, last and next run) and the request starts reserved per external service.
coordination.py decides; this builds the statements."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import EPOCH, StoreCore
from .keys import chunks
from .rows import Lease, row_of
from .schema import leases, request_budget


class ClaimsStore(StoreCore):
    # ------------------------------------------------------------------ leases

    def lock_lease(self, tx: Connection, task: str) -> Lease | None:
        """The task's lease row, created free if missing and locked for this transaction;
        None when another instance holds the row lock right now (`SKIP LOCKED`)."""
        tx.execute(self._insert_ignore(leases, ["task"]).values(task=task, owner="", until=EPOCH))
        q = sa.select(leases).where(leases.c.task == task)
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        row = tx.execute(q).first()
        return row_of(Lease, row) if row is not None else None

    def take_lease(
        self, tx: Connection, task: str, *, owner: str, until: datetime, token: int, last_run: datetime | None = None
    ) -> None:
        """`owner` holds `task` until `until` with `token`; `last_run`: it starts now."""
        values: dict[str, object] = {"owner": owner, "until": until, "token": token}
        if last_run is not None:
            values["last_run"] = last_run
        tx.execute(leases.update().where(leases.c.task == task).values(**values))

    def renew_leases(self, tx: Connection, owner: str, held: dict[str, int], until: datetime) -> set[str]:
        """Extend the leases `owner` still holds with the given tokens; returns those."""
        if not held:
            return set()
        if self.dialect == "postgresql":
            # rows locked in task order, as `leases_held` share-locks them: a commit's
            # fence and the heartbeat never wait on each other in a cycle (deadlock)
            for part in chunks(sorted(held)):
                tx.execute(
                    sa.select(leases.c.task).where(leases.c.task.in_(part)).order_by(leases.c.task).with_for_update()
                ).all()
        tx.execute(
            leases.update()
            .where(leases.c.task.in_(list(held)), leases.c.owner == owner, leases.c.until > self.db_now(tx))
            .values(until=until)
        )
        rows = tx.execute(sa.select(leases.c.task, leases.c.token).where(leases.c.owner == owner))
        return {r.task for r in rows if held.get(r.task) == r.token}

    def leases_held(self, tx: Connection, owner: str, tokens: Mapping[str, int]) -> set[str]:
        """Which of `tokens`' tasks `owner` still holds with that token, unexpired: one
        query for every claim a transaction works under (however many queries a cycle
        holds). The rows are share-locked on PostgreSQL, so no takeover commits between
        this check and the caller's commit."""
        out: set[str] = set()
        now = self.db_now(tx)
        for part in chunks(sorted(tokens)):
            q = (
                sa.select(leases.c.task, leases.c.token, leases.c.until)
                .where(leases.c.task.in_(part), leases.c.owner == owner)
                .order_by(leases.c.task)
            )
            if self.dialect == "postgresql":
                q = q.with_for_update(read=True)
            out.update(r.task for r in tx.execute(q) if r.token == tokens[r.task] and r.until > now)
        return out

    def release_lease(
        self, tx: Connection, task: str, owner: str, token: int, *, next_run: datetime | None = None
    ) -> None:
        """Give `task` up (it stays in the table: its `last_run` is the schedule's anchor);
        `next_run`: when the daemon plans to run it again."""
        values: dict[str, object] = {"until": EPOCH}
        if next_run is not None:
            values["next_run"] = next_run
        tx.execute(
            leases.update()
            .where(leases.c.task == task, leases.c.owner == owner, leases.c.token == token)
            .values(**values)
        )

    def plan(self, tx: Connection, task: str, when: datetime) -> None:
        """Note when the daemon will next run `task`, unless a live plan says earlier."""
        now = self.db_now(tx)
        tx.execute(self._insert_ignore(leases, ["task"]).values(task=task, owner="", until=EPOCH))
        tx.execute(
            leases.update()
            .where(
                leases.c.task == task,
                sa.or_(leases.c.next_run.is_(None), leases.c.next_run < now, leases.c.next_run > when),
            )
            .values(next_run=when)
        )

    def leases(self, tx: Connection) -> dict[str, Lease]:
        return {r.task: row_of(Lease, r) for r in tx.execute(sa.select(leases))}

    # ------------------------------------------------------------------ request budget

    def budget_starts(self, tx: Connection, name: str) -> tuple[float, list[float]]:
        """(the database's clock in epoch seconds, the budget's reserved starts), with the
        budget's row locked until the transaction ends (PostgreSQL: `FOR UPDATE`; SQLite:
        the caller opened it with `BEGIN IMMEDIATE`). The clock is read after the lock, so
        reservations are ordered as the clock is."""
        q = sa.select(request_budget.c.starts).where(request_budget.c.name == name)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        found = tx.execute(q).scalar_one_or_none()
        if found is None:  # the first request ever: create the row, then lock it
            tx.execute(self._insert_ignore(request_budget, ["name"]).values(name=name, starts="[]"))
            found = tx.execute(q).scalar_one()
        starts = json.loads(found)
        return self.clock_epoch(tx), [float(x) for x in starts]

    def clock_epoch(self, tx: Connection) -> float:
        """The database's clock now, in epoch seconds (SQLite: this host's)."""
        if self.dialect == "postgresql":
            return float(tx.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def set_budget_starts(self, tx: Connection, name: str, starts: Sequence[float]) -> None:
        tx.execute(request_budget.update().where(request_budget.c.name == name).values(starts=json.dumps(list(starts))))
