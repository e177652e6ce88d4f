"""Fences at scale (issue 28): a cycle holds a claim for each of its queries, and every
transaction it commits checks they are still its own. One query checks them all: with
one query per claim, a cycle of 1,000 queries (4 transactions each) made 4,000,000."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from litwatch.coordination import Coordinator, LeaseLost
from litwatch.store import Store


def test_a_commit_checks_every_claim_held_in_one_query(store_url: str) -> None:
    store = Store(store_url)
    coord = Coordinator(store, heartbeat=False)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM leases" in statement:
            statements.append(statement)

    with coord.hold("poll:a") as a, coord.hold("poll:b") as b:
        assert a.claim.won and b.claim.won
        holds = [coord.hold(f"poll:q{i}") for i in range(50)]
        for h in holds:
            assert h.__enter__().claim.won
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            with store.transaction() as tx:
                tx.execute(sa.text("SELECT 1"))
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
            for h in reversed(holds):
                h.__exit__(None, None, None)
    store.close()
    print(f"\n52 claims held: {len(statements)} query of the leases before the commit")
    assert len(statements) == 1


def test_a_lost_claim_among_many_is_still_caught(store_url: str) -> None:
    store = Store(store_url)
    coord = Coordinator(store, heartbeat=False)
    try:
        with coord.hold("poll:a"), coord.hold("poll:b"):
            with store.transaction(fenced=False) as tx:  # another process took poll:b over
                tx.execute(sa.text("UPDATE leases SET owner = 'other', token = token + 1 WHERE task = 'poll:b'"))
            try:
                with store.transaction() as tx:
                    tx.execute(sa.text("SELECT 1"))
            except LeaseLost as e:
                assert e.task == "poll:b"
            else:
                raise AssertionError("the lost claim was not caught")
            assert coord.held == ["poll:a"]
    finally:
        store.close()
