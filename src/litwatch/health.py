"""`health_port`: `/healthz` and `/metrics` for `litwatch run`, on a stdlib HTTP server
listening on `health_bind` (127.0.0.1 unless the config says otherwise). `/healthz`
answers 200 when the scheduler is alive and the database answers, else 503 with a
generic reason (the detail, which may name hosts and users, goes to the log);
`/metrics` is the Prometheus text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/). No secrets are shown.

A slow or idle client cannot pile up threads: each connection has REQUEST_TIMEOUT
seconds to send its request, and at most MAX_CONNECTIONS are served at once; the rest
are closed at once (a probe retries)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

_COUNTERS = {
    "polls": "Source polls done by this instance (PubMed, notices, feeds).",
    "poll_errors": "Source polls that failed.",
    "events": "Events (new, approval, erratum, retraction, concern, update) created.",
    "mails_sent": "Digest messages handed to the mail server or written to the outbox directory.",
    "mail_failures": "Digest messages whose delivery failed (they stay queued or are marked failed).",
    "job_errors": "Scheduler jobs that ended with an unexpected error.",
}


class Metrics:
    """Counters since this process started; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_COUNTERS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        out = []
        with self._lock:
            values = dict(self._values)
        for name, help_ in _COUNTERS.items():
            out += [
                f"# HELP litwatch_{name}_total {help_}",
                f"# TYPE litwatch_{name}_total counter",
                f"litwatch_{name}_total {values[name]}",
            ]
        for name, (help_, value) in gauges.items():
            out += [f"# HELP litwatch_{name} {help_}", f"# TYPE litwatch_{name} gauge", f"litwatch_{name} {value:g}"]
        return "\n".join(out) + "\n"


REQUEST_TIMEOUT = 5.0  # seconds a connection may take to send its request
MAX_CONNECTIONS = 8  # connections served at once


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: close it rather than queue a thread
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class HealthServer:
    """`check()` → (healthy, reason); `metrics()` → the /metrics body."""

    def __init__(
        self,
        port: int,
        check: Callable[[], tuple[bool, str]],
        metrics: Callable[[], str],
        *,
        bind: str = "127.0.0.1",
    ) -> None:
        self.server = _BoundedServer((bind, port), _handler(check, metrics))
        self.thread = threading.Thread(target=self.server.serve_forever, name="litwatch-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(check: Callable[[], tuple[bool, str]], metrics: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT  # socket timeout: an idle connection is dropped

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # a health check every few seconds would flood the log

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, reason = check()
                self._send(200 if ok else 503, f"{'ok' if ok else 'unhealthy'}: {reason}\n", "text/plain")
            elif path == "/metrics":
                self._send(200, metrics(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, "not found: try /healthz or /metrics\n", "text/plain")

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
