"""The code stays clean: ruff (lint) and mypy --strict on src/litwatch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    if shutil.which("ruff") is None and _run("ruff", "--version").returncode != 0:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    r = _run("ruff", "check", "src", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = _run("mypy", "src/litwatch")
    if "No module named mypy" in r.stderr:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    assert r.returncode == 0, r.stdout + r.stderr
