"""Running the `litwatch` command line: in this process through click's CliRunner
(`invoke`, for tests that only read the output and exit code), or as a real
subprocess (`run_cli`, for signals, crashes, imports at start-up, `python -m`)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path


def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`litwatch *args` in this process (click's CliRunner), with what a subprocess
    would give: exit code, stdout, stderr (an uncaught exception's traceback included)."""
    from click.testing import CliRunner

    from litwatch.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    servers = logging.getLogger("mail.log")  # aiosmtpd's, in this process: not the command's stderr
    runner = CliRunner()
    servers.propagate = False
    servers.addHandler(quiet := logging.NullHandler())
    try:
        with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
            result = runner.invoke(main, list(args), env=env, prog_name="litwatch")
    finally:  # the command pointed logging at the runner's stderr, now closed
        root.handlers[:] = handlers
        root.setLevel(level)
        servers.removeHandler(quiet)
        servers.propagate = True
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["litwatch", *args], result.exit_code, result.stdout, stderr)


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
