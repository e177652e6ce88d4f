"""`litwatch web`: the web view on its own (no scheduler) until SIGTERM/SIGINT.
`/healthz` says whether the database answers; `/metrics` has this process's counters
(all 0: it polls and sends nothing) and the outbox gauge."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from ..config import Settings
from ..errors import StoreError, first_line
from .app import make_app
from .metrics import Metrics
from .server import WebServer

log = logging.getLogger(__name__)

DEFAULT_PORT = 8090


def serve_forever(settings: Settings, port: int | None = None) -> int:
    from ..service import Service

    web = settings.web
    bind = web.bind if web is not None else "127.0.0.1"
    port = port if port is not None else (web.port if web is not None and web.port is not None else DEFAULT_PORT)
    service = Service(settings)
    metrics = Metrics()

    def health() -> tuple[bool, str]:
        try:
            service.ping()
        except StoreError as e:
            log.warning("health: database does not answer: %s", first_line(e))
            return False, "database does not answer"
        return True, "web view running, database answers"

    def render_metrics() -> str:
        gauges: dict[str, tuple[str, float]] = {}
        try:
            gauges["outbox_queued"] = ("Digest messages queued for delivery.", service.outbox_queued())
        except StoreError:
            pass
        return metrics.render(gauges)

    app = make_app(service, settings, health=health, metrics=render_metrics)
    try:
        server = WebServer(app, bind=bind, port=port).start()
    except OSError as e:
        service.close()
        raise StoreError(f"cannot serve the web view on {bind}:{port}: {e.strerror}") from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "web view at http://%s:%d/ database=%s", bind if ":" not in bind else f"[{bind}]", server.port, service.safe_url
    )
    while not stop.wait(1.0):
        pass
    server.stop()
    service.close()
    log.info("web view stopped")
    return 0
