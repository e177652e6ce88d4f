"""Shared fixtures: the fake E-utilities server, a real SMTP server (aiosmtpd) on
loopback, and the `store_url` fixture that runs store tests on SQLite and on the
PostgreSQL at 127.0.0.1:5432 (database `test`, one fresh schema per test)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from fake_eutils import FakeEutils

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PG_URL = os.environ.get("LITWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The fake's dates are NCBI's, days in New York: between 00:00 and 04:00/05:00 UTC the
# UTC date is a day NCBI has not begun yet.
TODAY = datetime.now(ZoneInfo("America/New_York")).date()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present: checks on real PubMed and feed files skipped")
    return SHARED_DATA


@pytest.fixture
def eutils() -> Iterator[FakeEutils]:
    fake = FakeEutils().start()
    yield fake
    fake.stop()


def _pg_available() -> bool:
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


_PG = None


def pg_schema_url() -> Iterator[str]:
    global _PG
    if _PG is None:
        _PG = _pg_available()
    if not _PG:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (CI must start it)")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable")
    schema = "t_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'litwatch.db'}"
    else:
        yield from pg_schema_url()


# ----------------------------------------------------------------------------- SMTP


class Received:
    """Messages an aiosmtpd server accepted, parsed with the stdlib email package."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    @property
    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]  # type: ignore[misc]


class _Handler:
    def __init__(self, received: Received, refuse: dict[str, str]) -> None:
        self.received = received
        self.refuse = refuse
        self.fail_data: str | None = None
        self.delay = 0.0  # seconds each DATA takes (a slow server)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        if self.fail_data:
            return self.fail_data
        self.received.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[Any]:
    """A plain SMTP server on loopback; `.received`, `.handler.refuse`, `.port`."""
    from aiosmtpd.controller import Controller

    received = Received()
    handler = _Handler(received, {})
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    controller.received = received  # type: ignore[attr-defined]
    controller.handler = handler
    try:
        yield controller
    finally:
        controller.stop()


class SlowBox:
    """An aiosmtpd handler that accepts every message after `delay()` seconds and keeps
    (recipient, message): what each recipient got, for tests of crashes and races."""

    def __init__(self, delay: Callable[[], float]) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.got: list[tuple[str, EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.sleep(self.delay())
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.got += [(rcpt, msg) for rcpt in envelope.rcpt_tos]
        return "250 Message accepted for delivery"


@contextmanager
def serve_slow(box: SlowBox) -> Iterator[tuple[SlowBox, int]]:
    """`box` as an SMTP server on loopback: yields it with its port."""
    from aiosmtpd.controller import Controller

    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield box, int(controller.port)
    finally:
        controller.stop()


def smtp_port(controller: Any) -> int:
    return int(controller.port)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- config & CLI


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


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `litwatch` as a user would: a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "litwatch.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
