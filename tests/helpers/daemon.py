"""`litwatch run` as a real subprocess, importing litwatch from this work tree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .wait import wait_for

SRC = Path(__file__).resolve().parents[2] / "src"


def daemon_env(**extra: str) -> dict[str, str]:
    """The subprocess imports litwatch from this work tree, whatever is installed."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


class Run:
    """One `litwatch run` subprocess; its stderr (the log) goes to a file."""

    def __init__(self, cfg: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "litwatch.cli", "--config", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=daemon_env(**(env or {})),
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_log(self, pattern: str, timeout: float = 15, count: int = 1) -> None:
        wait_for(lambda: len(re.findall(pattern, self.log)) >= count, timeout, f"{pattern!r} x{count} in the log")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        return rc, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()
