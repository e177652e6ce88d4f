"""The layers of ARCHITECTURE.md, checked (issue 22): import-linter's contracts in
pyproject.toml (`[tool.importlinter]`) hold for src/litwatch, and break — naming the
import — when a lower layer imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts over the package in `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "pyproject.toml")],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_hold() -> None:
    r = lint_imports(ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" in r.stdout and " 0 broken" in r.stdout


def test_a_reversed_import_breaks_them(tmp_path: Path) -> None:
    """The vocabulary importing the facade (a lower layer reaching up) fails, naming it."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "litwatch", src / "litwatch", ignore=shutil.ignore_patterns("__pycache__"))
    records = src / "litwatch" / "records.py"
    records.write_text(records.read_text(encoding="utf-8") + "\nfrom . import service  # noqa: E402, F401\n")
    r = lint_imports(src)
    print("\n" + r.stdout[-3000:])
    assert r.returncode == 1
    assert "Layers: each room imports only the rooms below it BROKEN" in r.stdout
    assert "litwatch.records -> litwatch.service" in r.stdout
