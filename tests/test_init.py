"""`litwatch init`: a starter config that `litwatch check` accepts, never written over an
existing file, and kept in step with the example README runs (config/litwatch.yaml)."""

from __future__ import annotations

from pathlib import Path

from helpers import invoke
from litwatch.config import load, loads
from litwatch.starter import STARTER, email_line

ROOT = Path(__file__).resolve().parents[1]
NO_ENV_CONFIG = {"LITWATCH_CONFIG": ""}


def test_init_then_check_is_ok(tmp_path: Path) -> None:
    r = invoke("init", cwd=tmp_path, env=NO_ENV_CONFIG)  # default: ./litwatch.yaml, where check looks
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    written = tmp_path / "litwatch.yaml"
    assert written.read_text(encoding="utf-8") == STARTER
    line = written.read_text(encoding="utf-8").splitlines()[email_line() - 1]
    assert line.startswith("  email: you@example.org") and "FILL IN" in line
    assert f"fill in your contact address at line {email_line()} (pubmed.email) and line" in r.stdout
    assert "(crossref.email)" in r.stdout
    assert "then try its queries with: .venv/bin/litwatch --config" in r.stdout  # as README installs it
    # the placeholder is refused until filled in, both lines named at once (#24)
    r = invoke("check", cwd=tmp_path, env=NO_ENV_CONFIG)
    print(r.stdout, r.stderr)
    lines = [n for n, x in enumerate(STARTER.splitlines(), 1) if x.startswith("  email: you@example.org")]
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"litwatch.yaml:{lines[0]}: pubmed.email: you@example.org is the starter's placeholder; "
        "fill in your own address (NCBI asks for a contact)",
        f"litwatch.yaml:{lines[1]}: crossref.email: you@example.org is the starter's placeholder; "
        "fill in your own address (Crossref asks for a contact)",
    ], r.stderr
    written.write_text(STARTER.replace("you@example.org", "me@lab.example.net"), encoding="utf-8")
    r = invoke("check", cwd=tmp_path, env=NO_ENV_CONFIG)
    assert r.returncode == 0 and r.stdout.startswith("litwatch.yaml: ok: 2 queries, 6 feeds, 2 digests\n"), r.stderr
    assert not (tmp_path / "my-litwatch.db").exists()  # init and check store nothing


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("# my own config\n", encoding="utf-8")
    r = invoke("init", str(target))
    print(r.stdout, r.stderr)
    assert r.returncode == 2
    assert r.stderr == f"litwatch: {target} already exists; not overwriting it (remove it or give another PATH)\n"
    assert r.stdout == "" and target.read_text(encoding="utf-8") == "# my own config\n"
    r = invoke("init", str(tmp_path / "no-such-dir" / "x.yaml"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "No such file or directory" in r.stderr


def test_init_honours_config_option(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "lw.yaml"
    target.parent.mkdir()
    assert invoke("--config", str(target), "init").returncode == 0
    target.write_text(target.read_text().replace("you@example.org", "me@lab.example.net"))
    assert invoke("--config", str(target), "check").returncode == 0


def test_starter_is_the_example_with_an_address_to_fill_in() -> None:
    example = load(ROOT / "config" / "litwatch.yaml", env={})
    starter = loads(STARTER, "starter", env={})
    assert starter.pubmed.email == "you@example.org"
    assert starter.crossref is not None and starter.crossref.email == "you@example.org"
    # its own database and query names: a user's first run never inherits the example's progress (#24)
    assert starter.database == "sqlite:///my-litwatch.db" != example.database
    assert not {q.name for q in starter.queries} & {q.name for q in example.queries}
    drop = {"source": True, "database": True, "pubmed": {"email"}, "crossref": {"email"}}
    mine = starter.model_dump(exclude=drop)
    for q in mine["queries"]:
        q["name"] = q["name"].removeprefix("my-")
    for d in mine["digests"]:
        d["queries"] = tuple(n.removeprefix("my-") for n in d["queries"])
    assert mine == example.model_dump(exclude=drop)
