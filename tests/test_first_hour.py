"""What a new user meets in the first hour (issue 24, case 7): why a source cannot be
reached, plurals, read-only commands that create nothing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import basic_config, invoke
from helpers.fake_eutils import FakeEutils
from litwatch.errors import SourceError
from litwatch.sources.http import HttpClient, RetryPolicy


@pytest.fixture
def not_tls() -> Iterator[int]:
    """A port that answers a TLS handshake with plain text."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.0 400 not TLS\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_connection_failed_says_why(not_tls: int) -> None:
    client = HttpClient(policy=RetryPolicy(retries=0, timeout=5, backoff=0), max_bytes=1000)
    said = {}
    for name, url in (
        ("dns", "http://no-such-host.invalid/x"),
        ("refused", f"http://127.0.0.1:{closed_port()}/x"),
        ("tls", f"https://127.0.0.1:{not_tls}/x"),
    ):
        with pytest.raises(SourceError) as e:
            client.request("GET", url, what="feed x")
        said[name] = str(e.value)
        print(said[name])
    client.close()
    assert "connection failed: the host name could not be resolved (DNS)" in said["dns"]
    assert "connection failed: the host refused the connection" in said["refused"]
    assert "connection failed: TLS failed" in said["tls"]
    assert all(s.endswith("(gave up after 1 attempt)") for s in said.values())  # not "1 attempts"


def test_check_says_one_query_and_read_only_commands_create_no_database(tmp_path: Path, eutils: FakeEutils) -> None:
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n"
    digests = "\ndigests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n"
    cfg = basic_config(tmp_path, eutils.url, queries=queries, digests=digests)
    r = invoke("--config", str(cfg), "check")
    assert r.stdout.splitlines()[0].endswith(": ok: 1 query, 0 feeds, 1 digest"), r.stdout
    for args in (("status",), ("history", "123")):
        r = invoke("--config", str(cfg), *args)
        print(args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert not (tmp_path / "litwatch.db").exists(), args
    r = invoke("--config", str(cfg), "status")
    assert r.returncode == 0 and "no database yet" in r.stdout + r.stderr


ROOT = Path(__file__).resolve().parents[1]


def test_packaging_says_what_litwatch_is_and_keeps_postgresql_optional() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "Crossref" in project["description"] and "EMA" in project["description"]
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in project["classifiers"])
    assert {"Homepage", "Source", "Changelog"} <= set(project["urls"])
    assert not any(d.startswith("psycopg") for d in project["dependencies"])  # SQLite users need no driver
    assert project["optional-dependencies"]["postgresql"] == ["psycopg[binary]>=3.1"]
    assert "psycopg[binary]>=3.1" in project["optional-dependencies"]["dev"]  # CI's `.[dev]` tests PostgreSQL
    assert "pip install -e '.[dev]'" in (ROOT / ".ci" / "run").read_text()
    assert "'.[postgresql]'" in (ROOT / "README.md").read_text()
    docker = (ROOT / "Dockerfile").read_text()
    assert project["version"] not in docker and "[postgresql]" in docker and "PubMed and RSS/Atom" not in docker
    compose = (ROOT / "compose.yaml").read_text()
    assert "mailpit:latest" not in compose and "axllent/mailpit:v" in compose


def test_a_postgresql_database_without_its_driver_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from litwatch.config import loads
    from litwatch.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    text = (
        "database: postgresql://u@h/db\npubmed:\n  email: a@b.org\nmail:\n  transport: file\n"
        "queries:\n  - name: q\n    pubmed: x\ndigests:\n  - name: d\n    to: [a@example.org]\n    queries: [q]\n"
    )
    with pytest.raises(ConfigError, match=r"cfg.yaml:1: database: PostgreSQL needs the postgresql extra"):
        loads(text, "cfg.yaml", {})


def test_check_online_offline_says_why_at_once_without_retry_warnings(tmp_path: Path) -> None:
    from time import monotonic

    from litwatch.sources import http

    down = f"http://127.0.0.1:{closed_port()}"
    extra = (
        f"feeds:\n  - name: news\n    url: {down}/rss.xml\n"
        f"crossref:\n  email: me@lab.example.net\n  base_url: {down}/\n"
    )
    queries = "queries:\n  - name: trail\n    pubmed: TRAIL\n  - name: news\n    feeds: [news]\n    match: TRAIL\n"
    digests = "\ndigests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail, news]\n"
    cfg = basic_config(tmp_path, down + "/", queries=queries, digests=digests, extra=extra)
    started = monotonic()
    try:
        r = invoke("--config", str(cfg), "check", "--online")
    finally:
        if hasattr(http, "FAIL_FAST"):
            http.FAIL_FAST.clear()  # this process goes on testing: retries as usual
    took = monotonic() - started
    print(f"check --online with every source down: {took:.1f}s, exit {r.returncode}\n{r.stdout}{r.stderr}")
    assert r.returncode == 1
    assert "retry" not in r.stderr.lower() and "retry" not in r.stdout.lower()
    assert (r.stdout + r.stderr).count("the host refused the connection") >= 3  # PubMed, the feed, Crossref
