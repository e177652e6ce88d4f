"""`feeds[].kind` (rss | openfda | ema) and its keys: defaults, and a `file:line: key`
error for each mistake (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import invoke, write_config
from litwatch.config import DEFAULT_FEED_URLS, loads
from litwatch.errors import ConfigError
from litwatch.sources import biorxiv as biorxiv_source
from litwatch.sources import ema as ema_source
from litwatch.sources import openfda as openfda_source

CONFIG = """\
feeds:
  - name: fda-press
    url: https://www.fda.gov/about-fda/contact-fda/stay-informed/rss-feeds/press-releases/rss.xml
    approvals: true
  - name: fda-approvals
    kind: openfda
    api_key: ${OPENFDA_API_KEY}
  - name: ema-medicines
    kind: ema
    stale_days: 7
queries:
  - name: myeloma
    feeds: [fda-press, fda-approvals, ema-medicines]
    match: 'myeloma OR daratumumab OR aponermin'
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, "cfg.yaml", env or {})
    return info.value.problems


def test_kinds_load_with_their_defaults() -> None:
    s = loads(CONFIG, "cfg.yaml", {"OPENFDA_API_KEY": "abc123"})
    press, fda, ema = s.feed("fda-press"), s.feed("fda-approvals"), s.feed("ema-medicines")
    assert (press.kind, fda.kind, ema.kind) == ("rss", "openfda", "ema")
    assert fda.url == "https://api.fda.gov/drug/drugsfda.json"
    assert ema.url == "https://www.ema.europa.eu/en/documents/report/medicines-output-medicines_json-report_en.json"
    assert fda.api_key is not None and fda.api_key.get_secret_value() == "abc123"
    assert "abc123" not in repr(s) and "abc123" not in str(fda)
    assert ema.stale_after_days == 7 and fda.first_lookback_days == 30
    assert (
        loads(CONFIG.replace("    stale_days: 7\n", ""), "cfg.yaml", {"OPENFDA_API_KEY": ""})
        .feed("ema-medicines")
        .stale_after_days
        == 14
    )


def test_a_url_overrides_the_default() -> None:
    text = CONFIG.replace("    kind: ema\n", "    kind: ema\n    url: https://mirror.example.org/medicines.json\n")
    assert loads(text, "cfg.yaml", {"OPENFDA_API_KEY": ""}).feed("ema-medicines").url.startswith("https://mirror.")


def test_default_urls_are_the_clients() -> None:
    assert DEFAULT_FEED_URLS == {
        "openfda": openfda_source.DEFAULT_URL,
        "ema": ema_source.DEFAULT_URL,
        "biorxiv": biorxiv_source.DEFAULT_URL,
        "medrxiv": biorxiv_source.DEFAULT_URL,
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    kind: openfda\n",
            "    kind: openFDA\n",
            "cfg.yaml:6: feeds[1].kind: 'openFDA' is not one of: 'rss', 'openfda', 'ema', 'biorxiv' or 'medrxiv'",
        ),
        (
            "    url: https://www.fda.gov/about-fda/contact-fda/stay-informed/rss-feeds/press-releases/rss.xml\n",
            "",
            "cfg.yaml:2: feeds[0].url: required key is missing",
        ),
        (
            "    approvals: true\n",
            "    approvals: true\n    api_key: xyz\n",
            "cfg.yaml:5: feeds[0].api_key: `api_key` is for feeds of kind openfda, not rss",
        ),
        (
            "    api_key: ${OPENFDA_API_KEY}\n",
            "    stale_days: 3\n",
            "cfg.yaml:7: feeds[1].stale_days: `stale_days` is for feeds of kind ema, not openfda",
        ),
        (
            "    stale_days: 7\n",
            "    stale_days: 7\n    approvals: true\n",
            "cfg.yaml:11: feeds[2].approvals: `approvals` is for feeds of kind rss; every item of a ema feed",
        ),
        (
            "    stale_days: 7\n",
            "    stale_days: 0\n",
            "cfg.yaml:10: feeds[2].stale_days: Input should be greater than or equal to 1",
        ),
        (
            "    stale_days: 7\n",
            "    stale_day: 7\n",
            "cfg.yaml:10: feeds[2].stale_day: unknown key 'stale_day'; did you mean 'stale_days'?",
        ),
        (
            "    approvals: true\n",
            "    approvals: true\n    lookback_days: 7\n",
            "cfg.yaml:5: feeds[0].lookback_days: `lookback_days` is for feeds of kind openfda, ema, biorxiv or medrxiv, not rss",
        ),
        (
            "    kind: ema\n",
            "    kind: ema\n    url: ftp://example.org/x.json\n",
            "cfg.yaml:10: feeds[2].url: 'ftp://example.org/x.json' is not an http(s) URL",
        ),
    ],
)
def test_each_mistake_names_file_line_key(old: str, new: str, expected: str) -> None:
    assert old in CONFIG
    found = problems(CONFIG.replace(old, new), {"OPENFDA_API_KEY": "k"})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_unset_api_key_variable_is_named() -> None:
    assert problems(CONFIG) == ["cfg.yaml:7: feeds[1].api_key: environment variable OPENFDA_API_KEY is not set"]


def test_check_accepts_the_kinds_and_reports_mistakes_with_exit_2(tmp_path: Path) -> None:
    good = write_config(tmp_path, CONFIG)
    ok = invoke("--config", str(good), "check", env={"OPENFDA_API_KEY": "secret-key-9"})
    assert ok.returncode == 0, ok.stderr
    assert "secret-key-9" not in ok.stdout + ok.stderr
    bad = write_config(tmp_path, CONFIG.replace("kind: ema", "kind: emea"), name="bad.yaml")
    res = invoke("--config", str(bad), "check", env={"OPENFDA_API_KEY": "secret-key-9"})
    assert res.returncode == 2
    assert (
        f"{bad}:9: feeds[2].kind: 'emea' is not one of: 'rss', 'openfda', 'ema', 'biorxiv' or 'medrxiv'" in res.stderr
    )
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
