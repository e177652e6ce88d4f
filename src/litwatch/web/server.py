"""One real HTTP server: uvicorn (asyncio, h11) in a thread of its own, serving the
Starlette app of app.py — the web view, `/healthz` and `/metrics` (issue 26).

Slow clients cannot block it: each connection costs a coroutine, not a thread, and
has REQUEST_DEADLINE seconds from its first byte (or from the end of its previous
response) to send a whole request, headers and body, or it is closed — a client
dripping one byte a second cannot hold a connection. At most MAX_CONNECTIONS are
served at once (uvicorn answers 503 beyond)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

REQUEST_DEADLINE = 10.0  # seconds to send a whole request (headers and body)
MAX_CONNECTIONS = 100  # connections at once; uvicorn answers 503 beyond
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each whole request."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # the request is in: the app takes its time

    def on_response_complete(self) -> None:
        self._arm()  # the next request on this connection has its own deadline
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("web: closed a connection that did not send a request within %gs", REQUEST_DEADLINE)
            self.transport.close()


class WebServer:
    """`WebServer(app, bind, port).start()` → serving in a thread; `stop()`. The socket
    is bound in `start`, so a port in use fails there (OSError)."""

    def __init__(self, app: Any, *, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.bind = bind
        self.requested_port = port
        self.sock: socket.socket | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def start(self) -> WebServer:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind, self.requested_port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.set_inheritable(True)
        self.sock = sock
        config = uvicorn.Config(
            self.app,
            http=DeadlineProtocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=2,
            server_header=False,
            proxy_headers=False,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="litwatch-web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def _serve(self) -> None:
        assert self.server is not None and self.sock is not None
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.sock is not None:
            self.sock.close()
