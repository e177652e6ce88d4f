"""Shared fixtures: the fake E-utilities server, a real SMTP server (aiosmtpd) on
loopback, and the `store_url` fixture that runs store tests on SQLite and on the
PostgreSQL at 127.0.0.1:5432 (database `test`, one fresh schema per test).

Everything else tests share (fakes, config, running the CLI, waiting) is in
tests/helpers/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from helpers import SHARED_DATA, MailBox, SmtpServer, pg_schema_url, serve_smtp
from helpers.fake_eutils import FakeEutils


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests first (each takes a minute or more, mostly waiting on real
    processes): with xdist the other workers meanwhile share out the rest, so the
    suite ends with short tests instead of one worker finishing a long one alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise


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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'litwatch.db'}"
    else:
        yield from pg_schema_url()


# ----------------------------------------------------------------------------- SMTP


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Starts SMTP servers on loopback, stopped after the test:
    `smtp_server(box=None, **controller_kwargs)` -> SmtpServer (`.port`, `.box`).
    `box` is a MailBox (refusals, a failing DATA, a delay) or a subclass of it."""
    with ExitStack() as stack:

        def start(box: MailBox | None = None, **controller_kwargs: Any) -> SmtpServer:
            return stack.enter_context(serve_smtp(box, **controller_kwargs))

        yield start


@pytest.fixture
def smtp(request: pytest.FixtureRequest, smtp_server: Callable[..., SmtpServer]) -> SmtpServer:
    """One plain SMTP server on loopback: `.port`, `.box` (also `.handler`, `.received`).
    MailBox options by indirect parametrisation:
    `@pytest.mark.parametrize("smtp", [{"delay": 0.3}], indirect=True)`."""
    return smtp_server(MailBox(**getattr(request, "param", {})))
