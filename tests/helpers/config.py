"""Config files for tests, and the dates and data they share."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# The fake's dates are NCBI's, days in New York: between 00:00 and 04:00/05:00 UTC the
# UTC date is a day NCBI has not begun yet.
TODAY = datetime.now(ZoneInfo("America/New_York")).date()


def write_config(tmp_path: Path, body: str, name: str = "litwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def smtp_mail(port: int, *, security: str = "none", auth: str = "", timeout: float | None = None) -> str:
    """The `mail:` block for the SMTP server on loopback at `port`."""
    return (
        f"mail:\n  transport: smtp\n  host: 127.0.0.1\n  port: {port}\n  security: {security}\n"
        + (f"  timeout: {timeout:g}\n" if timeout is not None else "")
        + f'{auth}  from: "litwatch <litwatch@example.org>"\n'
    )


def basic_config(
    tmp_path: Path,
    eutils_url: str,
    *,
    db: str | None = None,
    mail: str | None = None,
    queries: str | None = None,
    digests: str | None = None,
    extra: str = "",
) -> Path:
    db = db or f"sqlite:///{tmp_path / 'litwatch.db'}"
    mail = (
        mail
        or f"""
mail:
  transport: file
  directory: {tmp_path / "outbox"}
  from: "litwatch <litwatch@example.org>"
"""
    )
    queries = (
        queries
        if queries is not None
        else """
queries:
  - name: trail
    pubmed: TRAIL
  - name: myeloma
    pubmed: multiple myeloma
"""
    )
    digests = (
        digests
        if digests is not None
        else """
digests:
  - name: weekly
    to: [team@example.org, boss@example.org]
    queries: [trail, myeloma]
"""
    )
    body = f"""
database: "{db}"
pubmed:
  base_url: {eutils_url}
  email: test@example.org
  backoff: 0.05
  retries: 3
  timeout: 5
{mail}
{queries}
{digests}
{extra}
"""
    return write_config(tmp_path, body)
