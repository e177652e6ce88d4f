"""Moving a poll's fetches back a day (issue 28): a record fetched today is fetched
again only once its modification day has ended, not on every poll of that day. A test
that changes a stored record and polls again, on the real clock, says the records
stored so far were fetched yesterday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa


def fetched_yesterday(db: Path | str) -> None:
    """The records in `db` (a SQLite file, or a database URL) were last fetched a day ago."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.text("UPDATE records SET checked_at = :t"),
            {"t": datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)},
        )
    engine.dispose()
