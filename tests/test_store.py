"""The store on SQLite and PostgreSQL: versions, hits, events (idempotent), outbox,
deliveries, poll state, leases, and migrations that match the tables."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from litwatch import events as ev
from litwatch.errors import StoreConflict
from litwatch.records import PUBMED, Record
from litwatch.store import Store
from litwatch.store.rows import OutboxSummary
from litwatch.store.schema import metadata

NOW = datetime(2026, 11, 25, 12, 0, 0)


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    s = Store(store_url)
    yield s
    s.close()


def rec(key: str, title: str = "T", **kw: object) -> Record:
    return Record(source=PUBMED, key=key, title=title, **kw)  # type: ignore[arg-type]


def test_migrate_is_idempotent_and_matches_schema(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store.migrate()
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_versions_and_current(store: Store) -> None:
    with store.transaction() as tx:
        ids = store.insert_records(tx, [(rec("1", doi="10.1/X"), ev.fingerprint(rec("1", doi="10.1/X")))], NOW)
    with store.transaction() as tx:
        cur = store.current(tx, PUBMED, ["1", "2"])
        assert list(cur) == ["1"] and cur["1"].n == 1 and cur["1"].record.doi == "10.1/X"
        new = rec("1", title="T2", doi="10.1/X")
        changes = [[c.field, c.old, c.new] for c in ev.diff(cur["1"].record, new)]
        store.add_versions(tx, [(cur["1"], new, ev.fingerprint(new), changes)], NOW + timedelta(hours=1))
    with store.transaction() as tx:
        versions = store.versions_of(tx, ids["1"])
        assert [v.n for v in versions] == [1, 2] and versions[1].changes == [["title", "T", "T2"]]
        assert store.find_records(tx, "10.1/x") == [(ids["1"], PUBMED, "1")]
        assert store.find_records(tx, "https://doi.org/10.1/X") == [(ids["1"], PUBMED, "1")]
        assert store.current(tx, PUBMED, ["1"])["1"].record.title == "T2"


def test_events_are_idempotent_per_query_and_dedup(store: Store) -> None:
    with store.transaction() as tx:
        ids = store.insert_records(tx, [(rec("1"), "h")], NOW)
        store.add_hits(tx, [(ids["1"], "q", ("TRAIL",))], NOW)
        row = {"record_id": ids["1"], "query": "q", "kind": "new", "version_n": 1, "dedup": "first:pubmed:1"}
        assert store.add_events(tx, [row], NOW) == 1
        assert store.add_events(tx, [row, {**row, "query": "q2"}], NOW) == 1
    with store.transaction() as tx:
        pending = store.pending_events(tx, queries=["q", "q2"], kinds=["new"], digest="d", recipient="a@x.org")
        assert [(p.query, p.terms) for p in pending] == [("q", ("TRAIL",)), ("q2", ())]


def test_outbox_binds_events_once(store: Store) -> None:
    with store.transaction() as tx:
        ids = store.insert_records(tx, [(rec("1"), "h")], NOW)
        store.add_events(tx, [{"record_id": ids["1"], "query": "q", "kind": "new", "version_n": 1, "dedup": "x"}], NOW)
        (p,) = store.pending_events(tx, queries=["q"], kinds=["new"], digest="d", recipient="a@x.org")
        oid = store.queue_message(
            tx,
            digest="d",
            recipient="a@x.org",
            message_id="<m1@x>",
            subject="s",
            mime=b"m",
            items=1,
            event_ids=[p.id],
            now=NOW,
        )
    with store.transaction() as tx:
        assert store.pending_events(tx, queries=["q"], kinds=["new"], digest="d", recipient="a@x.org") == []
        assert len(store.pending_events(tx, queries=["q"], kinds=["new"], digest="d", recipient="b@x.org")) == 1
        with pytest.raises(StoreConflict):
            with tx.begin_nested():
                store.queue_message(
                    tx,
                    digest="d",
                    recipient="a@x.org",
                    message_id="<m2@x>",
                    subject="s",
                    mime=b"m",
                    items=1,
                    event_ids=[p.id],
                    now=NOW,
                )
        (q,) = store.queued_messages(tx, digests=["d"], now=None)
        assert q.id == oid and bytes(q.mime) == b"m"
        ttl = timedelta(minutes=5)
        assert store.claim_message(tx, oid, "A", ttl) and not store.claim_message(tx, oid, "B", ttl)
        assert store.mark_failed(tx, oid, "A", "451", retry_at=NOW + timedelta(minutes=5))
        assert store.queued_messages(tx, digests=None, now=NOW) == []
        assert len(store.queued_messages(tx, digests=None, now=None)) == 1
        assert not store.mark_sent(tx, oid, "A", NOW)  # A's claim ended with the failure
        assert store.claim_message(tx, oid, "B", ttl) and not store.mark_sent(tx, oid, "A", NOW)
        assert store.mark_sent(tx, oid, "B", NOW) and not store.claim_message(tx, oid, "A", ttl)
        assert store.outbox_summary(tx) == OutboxSummary(queued=0, oldest_queued=None, sending=0, failed=0)


def test_poll_state_failures_and_recovery(store: Store) -> None:
    with store.transaction() as tx:
        store.poll_failed(tx, "q", "pubmed", "HTTP 500", NOW)
        store.poll_failed(tx, "q", "pubmed", "HTTP 502", NOW + timedelta(hours=1))
        row = store.poll_state(tx, "q", "pubmed")
        assert row.failing_since == NOW and row.errors == 2 and row.last_error == "HTTP 502"
        store.poll_ok(tx, "q", "pubmed", NOW + timedelta(hours=2), watermark="2026-11-25")
        row = store.poll_state(tx, "q", "pubmed")
        assert row.failing_since is None and row.watermark == "2026-11-25" and row.polls == 1


def test_add_events_counts_only_what_it_inserted(store: Store) -> None:
    """The count comes from INSERT … RETURNING: rows that conflict with stored events, or
    with an earlier row of the same batch, are not counted, and rows other writers
    stored before are not either."""
    with store.transaction() as tx:
        ids = store.insert_records(tx, [(rec("1"), ev.fingerprint(rec("1")))], NOW)
    row = {"record_id": ids["1"], "kind": "new", "version_n": 1}
    with store.transaction() as tx:
        assert store.add_events(tx, [{**row, "query": "q", "dedup": "a"}], NOW) == 1
        assert store.add_events(tx, [{**row, "query": "other", "dedup": "x"}], NOW) == 1
    with store.transaction() as tx:
        batch = [{**row, "query": "q", "dedup": d} for d in ("a", "b", "b", "c")]
        assert store.add_events(tx, batch, NOW) == 2  # "a" stored before, "b" twice in the batch
        assert store.add_events(tx, batch, NOW) == 0
        assert tx.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 4


# ------------------------------------------------------------------ the store's edge (issue 15)


def test_database_errors_leave_the_store_as_store_errors(store: Store) -> None:
    """No SQLAlchemy exception crosses the store's edge: a unique violation is a
    `StoreConflict` (what `write` reruns), with the driver's error kept as its cause
    and shown by `first_line`; `write` reruns it and then succeeds."""
    from litwatch.errors import StoreError, first_line

    with store.transaction() as tx:
        store.insert_records(tx, [(rec("1"), "h")], NOW)
    with pytest.raises(StoreConflict) as caught, store.transaction() as tx:
        store.insert_records(tx, [(rec("1"), "h")], NOW)
    e = caught.value
    assert isinstance(e, StoreError) and isinstance(e.__cause__, sa.exc.IntegrityError)
    assert str(e).startswith("database error: ") and first_line(e) == str(e).removeprefix("database error: ")
    print(f"\nunique violation at the edge: {type(e).__name__}: {e}")

    calls = []

    def insert_once_more(tx: sa.Connection) -> int:
        calls.append(1)
        key = "1" if len(calls) == 1 else "2"  # the first run collides, the rerun does not
        return store.insert_records(tx, [(rec(key), "h")], NOW)[key]

    assert store.write(insert_once_more, what="test") > 0 and len(calls) == 2


def test_an_unreachable_database_is_a_store_error(store: Store) -> None:
    """A database that does not answer fails `transaction()` (connect) and a public
    method alike with `StoreError`, never a SQLAlchemy exception."""
    from litwatch.errors import StoreError

    store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/nodb", connect_args={"connect_timeout": 2})
    with pytest.raises(StoreError) as caught, store.transaction() as tx:
        store.poll_state(tx, "q", "pubmed")
    assert not isinstance(caught.value, StoreConflict) and str(caught.value).startswith("database error: ")
    with pytest.raises(StoreError):
        store.ping()
    print(f"\nunreachable database: {caught.value}")


def test_every_public_method_is_guarded_and_defined_once() -> None:
    """Each part of the facade adds its own methods (none shadows another's, so the
    order of the bases decides nothing), and every public one is wrapped at the edge."""
    from litwatch.store.engine import StoreCore
    from litwatch.store.store import PARTS

    names: dict[str, str] = {}
    for part in (StoreCore, *PARTS):
        for name, value in vars(part).items():
            if callable(value) and not name.startswith("__"):
                assert name not in names, f"{name} is defined by {names[name]} and {part.__name__}"
                names[name] = part.__name__
    public = [n for n in names if not n.startswith("_")]
    assert len(public) > 60
    unguarded = [n for n in public if not getattr(getattr(Store, n), "__store_guarded__", False)]
    assert unguarded == []


def test_rows_are_typed_and_frozen(store: Store) -> None:
    import dataclasses

    from litwatch.store.rows import Lease, PollState

    with store.transaction() as tx:
        store.poll_ok(tx, "q", "pubmed", NOW, watermark="2026-11-25")
        store.plan(tx, "poll:q", NOW)
        state = store.poll_state(tx, "q", "pubmed")
        lease = store.leases(tx)["poll:q"]
    assert isinstance(state, PollState) and state.watermark == "2026-11-25" and state.disabled is False
    assert isinstance(lease, Lease) and lease.next_run == NOW and lease.owner == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.watermark = "x"  # type: ignore[misc]
