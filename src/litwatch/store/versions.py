"""Records and their versions: what is stored of each real-world record, every
version with its diff to the one before, and the lookups by key, PMID, DOI and id."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..records import Record
from .engine import StoreCore
from .keys import DOI_LIMIT, chunks, dumps, key_hash, lookup_form
from .rows import Current, StoredCurrent, StoredVersion
from .schema import records, versions

# a new version to store: (the current one, the new record, its fingerprint, its
# changes [[field, old, new], ...])
Change = tuple[Current, Record, str, list[list[Any]]]


def _current_version() -> sa.ColumnElement[bool]:
    return sa.and_(versions.c.record_id == records.c.id, versions.c.n == records.c.current_version)


class RecordsStore(StoreCore):
    def current(self, tx: Connection, source: str, keys: Iterable[str]) -> dict[str, Current]:
        """The current version of each of `source`'s `keys` that is stored, by key."""
        out: dict[str, Current] = {}
        for part in chunks(list(dict.fromkeys(keys))):
            q = (
                sa.select(
                    records.c.id, records.c.key, records.c.current_version, records.c.current_hash, versions.c.fields
                )
                .join(versions, _current_version())
                .where(records.c.source == source, records.c.key_hash.in_([key_hash(k) for k in part]))
            )
            for row in tx.execute(q):
                out[row.key] = StoredCurrent(row.id, row.current_version, row.current_hash, source, row.key, row.fields)
        return out

    def current_by_id(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Current]:
        out: dict[int, Current] = {}
        for part in chunks(list(set(record_ids))):
            q = sa.select(records, versions.c.fields).join(versions, _current_version()).where(records.c.id.in_(part))
            for row in tx.execute(q):
                out[row.id] = StoredCurrent(
                    row.id, row.current_version, row.current_hash, row.source, row.key, row.fields
                )
        return out

    def first_versions(self, tx: Connection, record_ids: Iterable[int]) -> dict[int, Record]:
        """Each record as it was first stored."""
        out: dict[int, Record] = {}
        for part in chunks(list(set(record_ids))):
            q = (
                sa.select(records.c.id, records.c.source, records.c.key, versions.c.fields)
                .join(versions, sa.and_(versions.c.record_id == records.c.id, versions.c.n == 1))
                .where(records.c.id.in_(part))
            )
            for row in tx.execute(q):
                out[row.id] = Record.from_fields(row.source, row.key, json.loads(row.fields))
        return out

    def insert_records(self, tx: Connection, new: Sequence[tuple[Record, str]], now: datetime) -> dict[str, int]:
        """Insert first versions of (record, fingerprint); returns key → record id."""
        if not new:
            return {}
        rows = [
            {
                "source": r.source,
                "key": r.key,
                "key_hash": key_hash(r.key),
                "doi": lookup_form(r.doi.lower(), DOI_LIMIT) or None,
                "current_version": 1,
                "current_hash": h,
                "first_seen": now,
                "updated_at": now,
            }
            for r, h in new
        ]
        result = tx.execute(
            sa.insert(records).returning(records.c.id, records.c.key, sort_by_parameter_order=True), rows
        )
        ids = {row.key: row.id for row in result}
        tx.execute(
            sa.insert(versions),
            [
                {
                    "record_id": ids[r.key],
                    "n": 1,
                    "fetched_at": now,
                    "hash": h,
                    "fields": dumps(r.fields()),
                    "changes": "[]",
                }
                for r, h in new
            ],
        )
        return ids

    def add_versions(self, tx: Connection, changed: Sequence[Change], now: datetime) -> None:
        """Store a new version per (current, new record, new hash, changes)."""
        if not changed:
            return
        tx.execute(
            sa.insert(versions),
            [
                {
                    "record_id": cur.record_id,
                    "n": cur.n + 1,
                    "fetched_at": now,
                    "hash": h,
                    "fields": dumps(rec.fields()),
                    "changes": dumps(changes),
                }
                for cur, rec, h, changes in changed
            ],
        )
        tx.execute(
            records.update()
            .where(records.c.id == sa.bindparam("rid"), records.c.current_version == sa.bindparam("old_n"))
            .values(
                current_version=sa.bindparam("new_n"),
                current_hash=sa.bindparam("h"),
                doi=sa.bindparam("d"),
                updated_at=now,
            ),
            [
                {
                    "rid": cur.record_id,
                    "old_n": cur.n,
                    "new_n": cur.n + 1,
                    "h": h,
                    "d": lookup_form(rec.doi.lower(), DOI_LIMIT) or None,
                }
                for cur, rec, h, _ in changed
            ],
        )

    def records_by_pmid(self, tx: Connection, pmids: Iterable[str]) -> dict[str, int]:
        """The stored PubMed records among `pmids`: PMID → record id (no fields read)."""
        out: dict[str, int] = {}
        for part in chunks(list(set(pmids))):
            q = sa.select(records.c.id, records.c.key).where(
                records.c.source == "pubmed", records.c.key_hash.in_([key_hash(p) for p in part])
            )
            out.update({row.key: row.id for row in tx.execute(q)})
        return out

    def pubmed_checked(self, tx: Connection, pmids: Iterable[str]) -> dict[str, datetime]:
        """The stored PubMed records among `pmids`: PMID → when a poll last fetched it
        (`checked_at`, else `updated_at` for rows from before it was kept)."""
        out: dict[str, datetime] = {}
        at = sa.func.coalesce(records.c.checked_at, records.c.updated_at).label("at")
        for part in chunks(list(set(pmids))):
            q = sa.select(records.c.key, at).where(
                records.c.source == "pubmed", records.c.key_hash.in_([key_hash(p) for p in part])
            )
            out.update({row.key: row.at for row in tx.execute(q)})
        return out

    def mark_checked(self, tx: Connection, record_ids: Iterable[int], now: datetime) -> None:
        """Note that a poll fetched `record_ids` at `now`, whether they changed or not."""
        for part in chunks(sorted(set(record_ids))):
            tx.execute(records.update().where(records.c.id.in_(part)).values(checked_at=now))

    def stored_dois(self, tx: Connection) -> set[str]:
        """Every DOI stored (lower case), of PubMed records and feed items alike: what
        the Crossref source watches, read once a cycle (a set, not a request a notice).
        A DOI over `DOI_LIMIT` characters is kept only as its hash and is left out."""
        q = sa.select(records.c.doi).where(records.c.doi.is_not(None)).distinct()
        return {row.doi for row in tx.execute(q) if row.doi and not row.doi.startswith("sha256:")}

    def doi_first_seen(self, tx: Connection) -> dict[str, datetime]:
        """Every stored DOI (lower case, as `stored_dois`) → when litwatch first stored a
        record with it: how the Crossref re-check tiers them by age."""
        q = (
            sa.select(records.c.doi, sa.func.min(records.c.first_seen).label("first"))
            .where(records.c.doi.is_not(None))
            .group_by(records.c.doi)
        )
        return {row.doi: row.first for row in tx.execute(q) if row.doi and not row.doi.startswith("sha256:")}

    def records_by_doi(self, tx: Connection, dois: Iterable[str]) -> dict[str, list[int]]:
        """The stored records of each of `dois` (lower case): a PubMed record and a
        feed item may share one. DOI → record ids, oldest first."""
        out: dict[str, list[int]] = {}
        for part in chunks(sorted({d.lower() for d in dois if d})):
            stored = {lookup_form(d, DOI_LIMIT): d for d in part}
            q = sa.select(records.c.id, records.c.doi).where(records.c.doi.in_(list(stored))).order_by(records.c.id)
            for row in tx.execute(q):
                out.setdefault(stored[row.doi], []).append(row.id)
        return out

    def find_records(self, tx: Connection, ident: str) -> list[tuple[int, str, str]]:
        """Records whose PMID, DOI or feed key is `ident`: [(id, source, key)]."""
        ident = ident.strip()
        doi = ident.lower().removeprefix("https://doi.org/").removeprefix("doi:")
        cond = sa.or_(records.c.key_hash == key_hash(ident), records.c.doi == lookup_form(doi, DOI_LIMIT))
        q = sa.select(records.c.id, records.c.source, records.c.key).where(cond).order_by(records.c.id)
        return [(r.id, r.source, r.key) for r in tx.execute(q)]

    def versions_of(self, tx: Connection, record_id: int) -> list[StoredVersion]:
        q = sa.select(versions).where(versions.c.record_id == record_id).order_by(versions.c.n)
        return [StoredVersion(r.n, r.fetched_at, json.loads(r.fields), json.loads(r.changes)) for r in tx.execute(q)]
