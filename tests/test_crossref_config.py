"""The `crossref:` section (SPEC.md): SPEC's own example loads with its defaults, and
each mistake names file, line and key like the rest of the config."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from helpers import invoke, write_config
from litwatch.config import loads
from litwatch.errors import ConfigError

BASE = """
database: sqlite:///x.db
mail:
  transport: file
queries:
  - name: trail
    feeds: [fda]
    match: TRAIL
feeds:
  - name: fda
    url: https://example.org/rss.xml
"""

# SPEC.md, "Config (YAML)", word for word
SPEC = """
crossref:                                # optional: corrections, retractions, concerns by DOI
  email: you@example.org                 # Crossref's polite pool
  base_url: https://api.crossref.org/    # default
  every: 1d                              # how often stored DOIs are checked again; default 1d
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, "cfg.yaml", {})
    return info.value.problems


def test_spec_example_loads() -> None:
    s = loads(BASE + SPEC, "cfg.yaml", {})
    assert s.crossref is not None
    assert s.crossref.email == "you@example.org"
    assert s.crossref.base_url == "https://api.crossref.org/"
    assert s.crossref.interval == timedelta(days=1)


def test_defaults_and_absence() -> None:
    assert loads(BASE, "cfg.yaml", {}).crossref is None
    c = loads(BASE + "crossref:\n  email: ${MAIL}\n", "cfg.yaml", {"MAIL": "me@example.org"}).crossref
    assert c is not None and c.email == "me@example.org"
    assert (c.base_url, c.every, c.batch_size, c.max_response_mb) == ("https://api.crossref.org/", "1d", 50, 64)
    c = loads(BASE + "crossref:\n  email: a@example.org\n  base_url: http://127.0.0.1:8080\n", "cfg.yaml", {}).crossref
    assert c is not None and c.base_url == "http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("crossref:\n  base_url: https://api.crossref.org/\n", "cfg.yaml:12: crossref.email: required key is missing"),
        (
            "crossref:\n  email: not-an-address\n",
            "cfg.yaml:13: crossref.email: 'not-an-address' is not an e-mail address",
        ),
        (
            "crossref:\n  email: a@example.org\n  every: daily\n",
            "cfg.yaml:14: crossref.every: 'daily' is not an interval",
        ),
        (
            "crossref:\n  email: a@example.org\n  base_url: ftp://x\n",
            "cfg.yaml:14: crossref.base_url: 'ftp://x' is not an http(s) URL",
        ),
        (
            "crossref:\n  email: a@example.org\n  batch_size: 500\n",
            "cfg.yaml:14: crossref.batch_size: Input should be less than or equal to 100",
        ),
        (
            "crossref:\n  emial: a@example.org\n",
            "cfg.yaml:13: crossref.emial: unknown key 'emial'; did you mean 'email'?",
        ),
        ("crossref: yes\n", "cfg.yaml:12: crossref: Input should be a valid dictionary"),
    ],
    ids=["no-email", "bad-email", "bad-every", "bad-url", "batch-too-big", "typo", "not-a-mapping"],
)
def test_each_mistake_names_file_line_key(section: str, expected: str) -> None:
    found = problems(BASE + section)
    assert any(p.startswith(expected) for p in found), found


def test_check_accepts_and_refuses(tmp_path: Path) -> None:
    good = write_config(tmp_path, BASE + SPEC, "good.yaml")
    assert invoke("--config", str(good), "check").returncode == 0
    bad = write_config(tmp_path, BASE + "crossref:\n  every: 1d\n", "bad.yaml")
    result = invoke("--config", str(bad), "check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "bad.yaml:11: crossref.email: required key is missing" in result.stderr, (
        result.stderr
    )  # the file starts at `database:`
