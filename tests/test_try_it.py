"""README's "Try it" commands: what scripts/readme-smoke reads from README.md, that they
install into .venv only, that CI runs the same test command, and the licence."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    """The commands scripts/readme-smoke would run, as it reads them from README.md."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    done = subprocess.run(
        [bash, str(ROOT / "scripts" / "readme-smoke"), "--commands"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_readme_commands_install_into_a_venv_only() -> None:
    commands = readme_commands()
    assert set(commands) == {"run", "test"}
    for cmd in commands.values():
        assert cmd.startswith("python3 -m venv .venv && "), cmd
        words = cmd.replace("&&", " ").split()
        # every pip, python and litwatch is the venv's: nothing goes into the system's Python
        assert [w for w in words if w.endswith(("pip", "python", "litwatch"))] == [
            w for w in words if w.startswith(".venv/bin/")
        ], cmd
    assert commands["run"].endswith(".venv/bin/litwatch --config config/litwatch.yaml run")
    assert commands["test"].endswith(".venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pytest_lines = [line for line in ci.splitlines() if "pytest" in line and not line.startswith("#")]
    assert pytest_lines == [readme_commands()["test"]]
    assert pytest_lines[0] in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert ci.rstrip().endswith(pytest_lines[0])  # its exit status is the script's


def test_smoke_scripts_are_bash() -> None:
    bash = shutil.which("bash")
    for name in ("readme-smoke", "debian-rootfs", "container-smoke"):
        script = ROOT / "scripts" / name
        assert os.access(script, os.X_OK), name
        if bash:
            done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr


def test_licence_is_where_people_look() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026 the litwatch authors" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
