"""Config loading: every mistake names file, line and key path; `check` exits 2 with
one line per problem and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from helpers import invoke, write_config
from litwatch.config import load, loads, parse_every
from litwatch.errors import ConfigError
from litwatch.parse.ema import parse_ema
from litwatch.parse.feeds import parse_feed
from litwatch.parse.openfda import parse_drugsfda

GOOD = """
database: sqlite:///x.db
pubmed:
  email: me@example.org
mail:
  transport: smtp
  host: localhost
  port: 2525
  security: none
  from: "litwatch <lw@example.org>"
feeds:
  - name: fda
    url: https://example.org/rss.xml
    approvals: true
queries:
  - name: trail
    pubmed: TRAIL[tiab]
    feeds: [fda]
    match: 'TRAIL OR "death receptor 5"'
    every: 6h
  - name: mm
    pubmed: myeloma
    cron: "0 */6 * * *"
digests:
  - name: weekly
    to: [team@example.org]
    queries: [trail, mm]
    cron: "0 7 * * MON"
timezone: Europe/Berlin
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, "cfg.yaml", env or {})
    return info.value.problems


def test_good_config_loads_frozen() -> None:
    s = loads(GOOD, "cfg.yaml", {})
    assert s.query("trail").interval is not None and s.query("trail").interval.total_seconds() == 6 * 3600
    assert s.query("trail").matcher is not None
    assert s.mail.smtp_port == 2525
    assert s.feed("fda").approvals
    with pytest.raises(pydantic.ValidationError):
        s.database = "other"  # type: ignore[misc]


EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "litwatch.yaml"


def test_example_config_is_valid() -> None:
    s = load(EXAMPLE, env={})
    assert {q.name for q in s.queries} == {"trail-agonists", "multiple-myeloma"}
    assert s.mail.transport == "file"
    assert s.crossref is not None and s.crossref.every == "1d" and s.crossref.base_url == "https://api.crossref.org/"
    assert s.crossref.email == "litwatch-demo@example.org"
    assert invoke("--config", str(EXAMPLE), "check").returncode == 0


def test_example_config_watches_the_regulators_data() -> None:
    """fda-approvals (openfda) and ema-medicines (ema) serve both queries, whose `match`
    catches the regulators' own records of the test data (Drugs@FDA has names, not
    indications; EMA has the therapeutic area) and not the FDA's round-up."""
    s = load(EXAMPLE, env={})
    fda, ema = s.feed("fda-approvals"), s.feed("ema-medicines")
    assert (fda.kind, fda.url, ema.kind) == ("openfda", "https://api.fda.gov/drug/drugsfda.json", "ema")
    assert ema.url.startswith("https://www.ema.europa.eu/") and ema.stale_days == 14
    assert fda.api_key is not None and fda.api_key.get_secret_value() == ""  # OPENFDA_API_KEY unset: none
    for q in s.queries:
        assert {"fda-press", "fda-approvals", "ema-medicines"} <= set(q.feeds), q.name
    data = Path(__file__).parent / "data"
    records = {
        r.key: r
        for r in parse_drugsfda(
            (data / "openfda" / "applications.json").read_bytes(), feed_name="fda-approvals"
        ).records
    }
    doc = json.loads((data / "ema" / "medicines-excerpt.json").read_text(encoding="utf-8"))
    records |= {r.key: r for r in parse_ema(json.dumps(doc).encode(), feed_name="ema-medicines").records}
    records |= {
        r.key: r for r in parse_feed((data / "feeds" / "fda-approvals.xml").read_bytes(), feed_name="p").records
    }

    def matched(query: str) -> set[str]:
        m = s.query(query).matcher
        assert m is not None
        return {k for k, r in records.items() if m.hits(r.title, r.abstract)}

    assert matched("trail-agonists") == {"BLA761901:ORIG:1", "fda-press-2026-0115-aponermin"}  # TRAILNOVA (aponermin)
    assert matched("multiple-myeloma") == {
        "BLA761901:ORIG:1",
        "BLA761036:ORIG:1",  # DARZALEX (daratumumab), and its efficacy supplement
        "BLA761036:SUPPL:85",
        "EMEA/H/C/006302#chmp-opinion",  # Pomalidomide Teva: therapeutic area multiple myeloma
        "EMEA/H/C/006302#eu-authorisation",
        "fda-press-2026-0115-aponermin",
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  every: 6h\n", "  every: 6x\n", "cfg.yaml:20: queries[0].every: '6x' is not an interval"),
        (
            '    cron: "0 */6 * * *"',
            '    cron: "0 */6 * *"',
            "cfg.yaml:23: queries[1].cron: '0 */6 * *' is not a cron expression",
        ),
        ("  port: 2525", "  port: 99999", "cfg.yaml:8: mail.port: Input should be less than or equal to 65535"),
        (
            "    to: [team@example.org]",
            "    to: [team-at-example.org]",
            "cfg.yaml:26: digests[0].to: 'team-at-example.org' is not an e-mail address",
        ),
        (
            "    queries: [trail, mm]",
            "    queries: [tral, mm]",
            "cfg.yaml:27: digests[0].queries[0]: unknown query 'tral'; did you mean 'trail'?",
        ),
        (
            "    feeds: [fda]",
            "    feeds: [fdx]",
            "cfg.yaml:18: queries[0].feeds[0]: unknown feed 'fdx'; did you mean 'fda'?",
        ),
        (
            "  email: me@example.org",
            "  emial: me@example.org",
            "cfg.yaml:4: pubmed.emial: unknown key 'emial'; did you mean 'email'?",
        ),
        (
            "timezone: Europe/Berlin",
            "timezone: Mars/Olympus",
            "cfg.yaml:29: timezone: 'Mars/Olympus' is not a time zone name",
        ),
        ("  security: none", "  security: tls", "cfg.yaml:9: mail.security: 'tls' is not one of"),
        (
            "    match: 'TRAIL OR \"death receptor 5\"'",
            "    match: 'TRAIL OR (DR5'",
            "cfg.yaml:19: queries[0].match: syntax error at column",
        ),
    ],
)
def test_each_mistake_names_file_line_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(p.startswith(expected) for p in found), found


def test_query_needs_a_source() -> None:
    text = GOOD.replace("    pubmed: myeloma\n", "")
    found = problems(text)
    assert any(
        p.startswith("cfg.yaml:21: queries[1]: a query needs `pubmed`, or `feeds` with `match`") for p in found
    ), found


def test_alias_bomb_and_recursive_alias_are_refused() -> None:
    """A "billion laughs" of nested YAML aliases (9**9 values from 10 lines) and an
    alias inside itself end in one config error, not a hang or a RecursionError."""
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    for text in (bomb, "a: &a\n  - *a\n"):
        (found,) = problems(text)
        assert found.startswith("cfg.yaml:") and "are YAML aliases (*name) nested or recursive?" in found


def test_aliases_in_a_real_config_still_work() -> None:
    text = GOOD.replace("    to: [team@example.org]\n", "    to: &team [team@example.org]\n").replace(
        "timezone:", "  - name: daily\n    to: *team\n    queries: [mm]\ntimezone:"
    )
    s = loads(text, "cfg.yaml", {})
    assert [list(d.to) for d in s.digests] == [["team@example.org"], ["team@example.org"]]


def test_unknown_top_level_key_suggests() -> None:
    found = problems(GOOD + "digest:\n  - name: x\n")
    assert any("unknown key 'digest'; did you mean 'digests'?" in p and p.startswith("cfg.yaml:30:") for p in found), (
        found
    )


def test_unset_variable_is_named() -> None:
    found = problems(GOOD.replace("host: localhost", "host: ${SMTP_HOST}"))
    assert found == ["cfg.yaml:7: mail.host: environment variable SMTP_HOST is not set"]


def test_variables_interpolate_and_default() -> None:
    s = loads(
        GOOD.replace("host: localhost", "host: ${SMTP_HOST}").replace("2525", "${PORT:-2526}"), "c", {"SMTP_HOST": "mx"}
    )
    assert s.mail.host == "mx" and s.mail.smtp_port == 2526


def test_yaml_syntax_error_has_line() -> None:
    found = problems("queries:\n  - name: x\n   pubmed: [unclosed\n")
    assert len(found) == 1 and found[0].startswith("cfg.yaml:3: YAML syntax error"), found


def test_all_problems_reported_at_once() -> None:
    text = GOOD.replace("every: 6h", "every: soon").replace("port: 2525", "port: 0")
    assert len(problems(text)) == 2


def test_field_errors_and_unknown_references_are_reported_together() -> None:
    """An unknown query in a digest used to appear only once the field errors were
    mended (#24): every mistake in one `check`."""
    text = GOOD.replace("every: 6h", "every: soon").replace("queries: [trail, mm]", "queries: [tral, mm]")
    text = text.replace("    feeds: [fda]", "    feeds: [fdx]")
    found = problems(text)
    print("\n".join(found))
    assert found == [
        "cfg.yaml:20: queries[0].every: 'soon' is not an interval; use a number and a unit: 30s, 15m, 6h, 1d",
        "cfg.yaml:18: queries[0].feeds[0]: unknown feed 'fdx'; did you mean 'fda'?",
        "cfg.yaml:27: digests[0].queries[0]: unknown query 'tral'; did you mean 'trail'?",
    ]


def test_secrets_are_hidden_in_repr() -> None:
    s = loads(
        GOOD.replace("host: localhost", "host: localhost\n  username: u\n  password: ${PW}"), "c", {"PW": "hunter2"}
    )
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("2w", 1209600)]
)
def test_every(text: str, seconds: int) -> None:
    assert parse_every(text).total_seconds() == seconds


def test_check_command_exit_codes(tmp_path: Path) -> None:
    good = write_config(tmp_path, GOOD, "good.yaml")
    r = invoke("--config", str(good), "check")
    assert r.returncode == 0, r.stderr
    bad = write_config(tmp_path, GOOD.replace("every: 6h", "every: 6x").replace("port: 2525", "port: 0"), "bad.yaml")
    r = invoke("--config", str(bad), "check")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{bad}:") for line in lines), r.stderr
    assert "Traceback" not in r.stderr


def test_config_discovery(tmp_path: Path) -> None:
    write_config(tmp_path, GOOD, "litwatch.yaml")
    other = write_config(tmp_path, GOOD.replace("every: 6h", "every: 6x"), "env.yaml")
    assert invoke("check", cwd=tmp_path).returncode == 0  # ./litwatch.yaml
    assert invoke("check", cwd=tmp_path, env={"LITWATCH_CONFIG": str(other)}).returncode == 2
    r = invoke("--config", "litwatch.yaml", "check", cwd=tmp_path, env={"LITWATCH_CONFIG": str(other)})
    assert r.returncode == 0  # --config wins
    r = invoke("--config", "missing.yaml", "check", cwd=tmp_path)
    assert r.returncode == 2 and "missing.yaml: config file not found" in r.stderr and "Traceback" not in r.stderr
