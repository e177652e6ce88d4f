"""The one SMTP server of the tests: an aiosmtpd handler (`MailBox`) on loopback.

A `MailBox` accepts every message and keeps it with its connection; it can refuse
recipients (`refuse`), answer DATA with an error (`fail_data`), take `delay` seconds
per DATA (a slow server: a number or a function), and check AUTH (`authenticator`).
Subclass it and override `handle_DATA` for anything else (tests/test_outbox.py holds
a message at DATA). `serve_smtp` runs one; the `smtp` and `smtp_server` fixtures of
conftest.py are the way tests get one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from .net import free_port


@dataclass
class Got:
    """One message as the server accepted it."""

    peer: Any  # the client's (host, port): one per connection
    tls: bool
    authenticated: bool
    rcpt_tos: list[str]
    msg: EmailMessage


class MailBox:
    """An aiosmtpd handler that keeps every accepted message (`got`, `messages`)."""

    def __init__(
        self,
        *,
        refuse: dict[str, str] | None = None,
        fail_data: str | None = None,
        delay: float | Callable[[], float] = 0.0,
    ) -> None:
        self.refuse: dict[str, str] = dict(refuse or {})  # recipient -> RCPT reply
        self.fail_data = fail_data  # a reply to every DATA instead of accepting
        self.delay = delay  # seconds each DATA takes
        self.lock = threading.RLock()  # re-entrant: `with box.lock: box.got` as tests did
        self.accepted: list[Got] = []
        self.rcpts: list[str] = []  # every RCPT TO, refused or not
        self.tried: list[str] = []  # the Message-ID of every DATA, refused or not
        self.logins: list[tuple[bytes, bytes]] = []

    # -- what arrived

    @property
    def got(self) -> list[Got]:
        with self.lock:
            return list(self.accepted)

    @property
    def messages(self) -> list[EmailMessage]:
        return [g.msg for g in self.got]

    @property
    def by_recipient(self) -> list[tuple[str, EmailMessage]]:
        """(recipient, message) for every recipient of every accepted message."""
        return [(rcpt, g.msg) for g in self.got for rcpt in g.rcpt_tos]

    # -- aiosmtpd hooks

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        self.rcpts.append(address)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        delay = self.delay() if callable(self.delay) else self.delay
        if delay:
            await asyncio.sleep(delay)  # a slow server: part of the fake's behaviour
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.tried.append(str(msg["Message-ID"]).strip())
        if self.fail_data:
            return self.fail_data
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        got = Got(session.peer, tls, bool(session.authenticated), list(envelope.rcpt_tos), msg)
        with self.lock:
            self.accepted.append(got)
        return "250 Message accepted for delivery"

    def authenticator(self, accept: bool, login: bytes, password: bytes) -> Any:
        """An aiosmtpd authenticator that accepts `login`/`password` when `accept`."""
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            assert isinstance(auth_data, LoginPassword)
            self.logins.append((auth_data.login, auth_data.password))
            ok = accept and auth_data.login == login and auth_data.password == password
            return AuthResult(success=ok, handled=False)

        return check


@dataclass
class SmtpServer:
    """A running `MailBox`: `.port`, `.box` (also as `.handler` and `.received`)."""

    box: MailBox
    port: int

    @property
    def handler(self) -> MailBox:
        return self.box

    @property
    def received(self) -> MailBox:
        return self.box


@contextmanager
def serve_smtp(box: MailBox | None = None, **controller_kwargs: Any) -> Iterator[SmtpServer]:
    """`box` (a new MailBox by default) as an SMTP server on loopback; keyword
    arguments go to aiosmtpd's Controller (tls_context, require_starttls,
    authenticator, data_size_limit, ...)."""
    from aiosmtpd.controller import Controller

    box = box if box is not None else MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), **controller_kwargs)
    controller.start()
    try:
        yield SmtpServer(box, int(controller.port))
    finally:
        controller.stop()


def smtp_port(server: Any) -> int:
    return int(server.port)


# -- the names tests used before there was one MailBox (kept for tests written then)


class SlowBox(MailBox):
    """A MailBox that takes `delay()` seconds per DATA; `.got` is (recipient, message)."""

    def __init__(self, delay: Callable[[], float]) -> None:
        super().__init__(delay=delay)

    @property
    def got(self) -> list[tuple[str, EmailMessage]]:  # type: ignore[override]
        return self.by_recipient


@contextmanager
def serve_slow(box: SlowBox) -> Iterator[tuple[SlowBox, int]]:
    """`box` as an SMTP server on loopback: yields it with its port."""
    with serve_smtp(box) as server:
        yield box, server.port
