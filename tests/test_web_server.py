"""The one HTTP server (uvicorn + Starlette, web/server.py; issue 26): slow clients do
not block /healthz, a request has a whole-request deadline, the probes answer as the old
health server did."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.net import free_port
from helpers.wait import wait_for
from litwatch.config import Settings
from litwatch.service import Service
from litwatch.web import server as web_server
from litwatch.web.app import make_app
from litwatch.web.server import WebServer


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[WebServer]:
    settings = Settings(database=f"sqlite:///{tmp_path / 'x.db'}")
    service = Service(settings)
    app = make_app(service, settings, health=lambda: (True, "fine"), metrics=lambda: "litwatch_x 1\n", pages=False)
    server = WebServer(app, port=0).start()
    yield server
    server.stop()
    service.close()


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _drip(port: int, stop: threading.Event, pause: float) -> None:
    """A slow client: one byte of a request at a time, never finishing it."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for byte in request:
                if stop.is_set():
                    return
                s.sendall(bytes([byte]))
                time.sleep(pause)
    except OSError:
        return  # closed by the server: what a deadline does


def test_healthz_answers_within_1s_while_20_clients_drip_bytes(probes: WebServer) -> None:
    stop = threading.Event()
    drips = [threading.Thread(target=_drip, args=(probes.port, stop, 0.5), daemon=True) for _ in range(20)]
    for t in drips:
        t.start()
    try:
        time.sleep(1.0)  # let every slow client connect and start dripping
        for _ in range(3):
            started = time.monotonic()
            status, body = _get(f"http://127.0.0.1:{probes.port}/healthz", timeout=1.0)
            took = time.monotonic() - started
            print(f"/healthz with 20 dripping clients: {status} in {took * 1000:.0f} ms")
            assert status == 200 and body == "ok: fine\n"
    finally:
        stop.set()


def test_a_request_not_sent_whole_within_the_deadline_is_closed(
    probes: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_server, "REQUEST_DEADLINE", 0.5)
    with socket.create_connection(("127.0.0.1", probes.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line

        def closed() -> bool:
            try:
                return s.recv(1024) == b""
            except ConnectionResetError:
                return True

        wait_for(closed, 20, "the server closing the unfinished request")


def test_probes_answer_as_the_health_server_did(probes: WebServer) -> None:
    assert _get(f"http://127.0.0.1:{probes.port}/healthz") == (200, "ok: fine\n")
    with urllib.request.urlopen(f"http://127.0.0.1:{probes.port}/metrics") as r:
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert r.read() == b"litwatch_x 1\n"
    assert _get(f"http://127.0.0.1:{probes.port}/nope") == (404, "not found: try /healthz or /metrics\n")
    assert _get(f"http://127.0.0.1:{probes.port}/")[0] == 404  # no pages on health_port


def test_a_port_in_use_fails_at_start(probes: WebServer) -> None:
    with pytest.raises(OSError):
        WebServer(object(), port=probes.port).start()


def test_run_serves_the_web_view_on_web_port_and_litwatch_web_alone(tmp_path: Path) -> None:
    from helpers import Run, basic_config, daemon_env

    web_port, health_port = free_port(), free_port()
    cfg = basic_config(
        tmp_path,
        "http://127.0.0.1:9/",  # never polled in time: the queries run once a day
        extra=f"health_port: {health_port}\nweb:\n  port: {web_port}\n",
    )
    run = Run(cfg, tmp_path / "run.log")
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), 30, "the web view under `run`")
        status, body = _get(f"http://127.0.0.1:{web_port}/")
        assert status == 200 and "<h1>Overview</h1>" in body
        assert _get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
        assert _get(f"http://127.0.0.1:{health_port}/")[0] == 404  # health_port: the probes only
    finally:
        rc, _ = run.stop()
    assert rc == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "web", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=daemon_env(),
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "`litwatch web`")
        assert "<h1>Overview</h1>" in _get(f"http://127.0.0.1:{port}/")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _answers(url: str) -> bool:
    try:
        return _get(url, timeout=2)[0] == 200
    except OSError:
        return False
