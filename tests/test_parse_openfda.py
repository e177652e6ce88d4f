"""parse/openfda.py on a real Drugs@FDA record (tests/data/openfda/gleevec-NDA021588.json)
and on constructed ones shaped like it (applications.json; see tests/data/openfda/MANIFEST)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from litwatch.errors import ParseError
from litwatch.match import compile_match
from litwatch.parse.openfda import application_records, parse_drugsfda, submission_kind
from litwatch.records import APPROVAL_REG_KINDS, Record

DATA = Path(__file__).parent / "data" / "openfda"
JAN = (date(2026, 1, 1), date(2026, 1, 31))


def _apps() -> dict[str, dict[str, object]]:
    doc = json.loads((DATA / "applications.json").read_text())
    return {a["application_number"]: a for a in doc["results"]}


def _page(*apps: dict[str, object]) -> bytes:
    return json.dumps({"meta": {"results": {"skip": 0, "limit": 1000, "total": len(apps)}}, "results": apps}).encode()


def _one(app: dict[str, object], since: date | None = None, until: date | None = None) -> list[Record]:
    return application_records(app, feed_name="fda", since=since, until=until)


def test_real_record_gleevec_is_a_new_application_with_its_documents() -> None:
    parsed = parse_drugsfda((DATA / "gleevec-NDA021588.json").read_bytes(), feed_name="fda")
    assert parsed.warnings == ()
    (rec,) = parsed.records
    assert rec.source == "feed:fda"
    assert rec.key == "NDA021588:ORIG:1"
    assert rec.regulator == "FDA" and rec.reg_kind == "new application"
    assert rec.product == "GLEEVEC" and rec.substance == "IMATINIB MESYLATE" and rec.sponsor == "NOVARTIS"
    assert rec.pub_date == "2003-04-18"
    assert rec.reg_flags == ("priority review", "orphan")
    assert dict(rec.documents) == {
        "label": "http://www.accessdata.fda.gov/drugsatfda_docs/label/2003/021588lbl.pdf",
        "approval letter": "http://www.accessdata.fda.gov/drugsatfda_docs/appletter/2003/21588ltr.pdf",
        "Drugs@FDA": "https://www.accessdata.fda.gov/scripts/cder/daf/index.cfm?event=overview.process&ApplNo=021588",
    }
    assert rec.url == dict(rec.documents)["Drugs@FDA"]
    assert rec.title == "FDA approval: GLEEVEC (imatinib mesylate) — new application (NDA021588)"
    assert "Type 3 - New Dosage Form" in rec.abstract
    # a stored record reads back the same
    assert Record.from_fields(rec.source, rec.key, rec.fields()) == rec


def test_new_bla_for_a_myeloma_drug() -> None:
    (rec,) = _one(_apps()["BLA761901"], *JAN)
    assert rec.key == "BLA761901:ORIG:1"
    assert rec.reg_kind == "new application" and rec.reg_kind in APPROVAL_REG_KINDS
    assert rec.product == "TRAILNOVA" and rec.substance == "APONERMIN"
    assert rec.sponsor == "EXAMPLE BIOSCIENCES INC"
    assert rec.reg_flags == ("priority review", "orphan")
    assert [label for label, _ in rec.documents] == ["approval letter", "label", "Drugs@FDA"]
    # the query's `match` sees brand, ingredient, class and sponsor
    for expr in ("aponermin", "TRAILNOVA", '"apoptosis-inducing ligand"', '"Example Biosciences"'):
        assert compile_match(expr).hits(rec.title, rec.abstract), expr


def test_efficacy_supplement_is_a_new_indication_and_old_or_labeling_submissions_are_not_news() -> None:
    recs = _one(_apps()["BLA761036"], *JAN)
    assert [r.key for r in recs] == ["BLA761036:SUPPL:85"]  # not ORIG 2015 (outside), not SUPPL 84 (labeling)
    (rec,) = recs
    assert rec.reg_kind == "new indication"
    assert rec.title == "FDA approval: DARZALEX (daratumumab) — new indication (BLA761036 supplement 85)"
    assert "priority review" in rec.reg_flags
    assert dict(rec.documents)["approval letter"].endswith("761036Orig1s085ltr.pdf")
    # without a window the 2015 original approval is reported too, still not the labeling supplement
    assert [r.key for r in _one(_apps()["BLA761036"])] == ["BLA761036:ORIG:1", "BLA761036:SUPPL:85"]


def test_tentative_approval_is_ignored() -> None:
    app = _apps()["ANDA219999"]
    assert _one(app) == []
    assert submission_kind({"submission_type": "ORIG", "submission_status": "TA"}) is None
    parsed = parse_drugsfda(_page(app), feed_name="fda", since=JAN[0], until=JAN[1])
    assert parsed.records == () and parsed.ignored == 1


def test_record_without_openfda_block_works() -> None:
    app = _apps()["BLA761460"]
    assert "openfda" not in app
    (rec,) = _one(app, date(2026, 5, 1), date(2026, 5, 31))
    assert rec.key == "BLA761460:ORIG:1"
    assert rec.product == "DECNUPAZ" and rec.substance == "PIVEKIMAB SUNIRINE-PVZY" and rec.sponsor == "ABBVIE INC"
    assert rec.reg_flags == ("priority review", "orphan")
    assert dict(rec.documents)["Drugs@FDA"].endswith("ApplNo=761460")


def test_window_bounds_are_inclusive_and_keys_repeat_across_overlapping_windows() -> None:
    apps = _apps()
    page = _page(*apps.values())
    first = parse_drugsfda(page, feed_name="fda", since=date(2026, 1, 1), until=date(2026, 1, 15))
    second = parse_drugsfda(page, feed_name="fda", since=date(2026, 1, 15), until=date(2026, 1, 31))
    assert [r.key for r in first.records] == ["BLA761901:ORIG:1"]
    assert [r.key for r in second.records] == ["BLA761901:ORIG:1", "BLA761036:SUPPL:85"]
    assert first.records[0] == second.records[0]  # same identity, same content: the overlap costs nothing


def test_a_result_that_cannot_be_read_is_skipped_with_a_warning() -> None:
    apps = _apps()
    parsed = parse_drugsfda(
        _page({"sponsor_name": "NO NUMBER", "submissions": []}, "not an object", apps["BLA761901"]),  # type: ignore[arg-type]
        feed_name="fda",
        since=JAN[0],
        until=JAN[1],
    )
    assert [r.key for r in parsed.records] == ["BLA761901:ORIG:1"]
    assert len(parsed.warnings) == 2
    assert "result 1 (?) skipped: no application_number" in parsed.warnings[0]
    assert "result 2 is not an object" in parsed.warnings[1]


def test_malformed_json_is_a_parse_error_naming_the_feed() -> None:
    body = (DATA / "gleevec-NDA021588.json").read_bytes()
    with pytest.raises(ParseError, match="feed fda: the openFDA response is not valid JSON"):
        parse_drugsfda(body[: len(body) // 2], feed_name="fda")
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_drugsfda(b"<html>502 Bad Gateway</html>", feed_name="fda")


def test_empty_results_is_no_records_and_no_error() -> None:
    parsed = parse_drugsfda(b'{"meta": {}, "results": []}', feed_name="fda")
    assert parsed.records == () and parsed.warnings == () and parsed.applications == 0
