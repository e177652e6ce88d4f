"""`litwatch poll`'s progress bars (issue 15): drawn on stderr when it is a terminal —
per query what it searched, records fetched of the total, what it stored — and nothing
at all when stderr is a pipe or a file. Real `litwatch poll` subprocesses against the
fake E-utilities server; the terminal is a pseudo-terminal (pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import TODAY, basic_config, run_cli
from helpers.fake_eutils import FakeEutils

COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # SGR: bold, colours
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")  # cursor moves, erases, titles


def poll_on_a_terminal(cfg: Path) -> tuple[int, str, str]:
    """Run `litwatch poll` with stderr on a pty of 160 columns; (exit code, stdout, what
    the terminal received, escape sequences removed)."""
    try:
        master, slave = pty.openpty()
    except OSError as e:  # a chroot or container without /dev/pts (scripts/readme-smoke's)
        pytest.skip(f"no pseudo-terminal to be had here ({e}): the terminal's progress bars are not checked")
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "poll"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal (it exited)
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    # each redraw of the bars starts on a line of its own here
    return proc.returncode, stdout.decode(), MOVES.sub("\n", COLOUR.sub("", screen.decode(errors="replace")))


def test_poll_on_a_terminal_shows_progress_bars(tmp_path: Path, eutils: FakeEutils) -> None:
    for i in range(1, 8):
        eutils.add(str(100 + i), terms="TRAIL", edat=TODAY - timedelta(days=1), title=f"TRAIL paper {i}")
    cfg = basic_config(tmp_path, eutils.url)
    code, stdout, screen = poll_on_a_terminal(cfg)
    print(screen)
    assert code == 0, screen
    assert "trail [pubmed]: found 7, new 7" in stdout
    start = (TODAY - timedelta(days=30)).isoformat()
    lines = [ln.strip() for ln in screen.splitlines() if ln.strip().startswith("trail ")]
    assert lines, screen
    final = lines[-1]
    assert "7/7 records" in final, final
    assert f"searched entered {start}..{TODAY.isoformat()}" in final, final
    assert "stored: new 7, changed 0, events 7" in final, final
    assert any(ln.lstrip().startswith("myeloma ") and "0/0 records" in ln for ln in screen.splitlines()), screen


def test_poll_without_a_terminal_draws_nothing(tmp_path: Path, eutils: FakeEutils) -> None:
    for i in range(1, 8):
        eutils.add(str(100 + i), terms="TRAIL", edat=TODAY - timedelta(days=1), title=f"TRAIL paper {i}")
    cfg = basic_config(tmp_path, eutils.url)
    r = run_cli("--config", str(cfg), "poll", env={"TERM": "xterm-256color", "COLUMNS": "160"})
    assert r.returncode == 0 and "trail [pubmed]: found 7, new 7" in r.stdout
    assert r.stderr == ""  # no bar, no escape sequence: stderr is a pipe
    assert "━" not in r.stdout and "7/7" not in r.stdout
