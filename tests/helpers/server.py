"""What every fake server of the test suite shares: a real `ThreadingHTTPServer` on
127.0.0.1, port 0 (the system picks a free one), served from a daemon thread; `start`
and `stop`, or use it as a context manager; `base` is its http://127.0.0.1:PORT."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalServer:
    def _serve(self, handler: type[BaseHTTPRequestHandler], *, name: str = "fake-server") -> None:
        """Bind the server (call from the subclass's __init__, once its state exists)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a test that gave up on a slow reply must not wait for it
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Free the port of a server that was never started (answers built offline)."""
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"
