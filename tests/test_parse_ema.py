"""parse/ema.py on a real excerpt of EMA's medicines JSON (tests/data/ema/medicines-excerpt.json)
and on snapshots derived from it in the tests below (see tests/data/ema/MANIFEST)."""

from __future__ import annotations

import copy
import json
import tracemalloc
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from litwatch.errors import ParseError
from litwatch.match import compile_match
from litwatch.parse.ema import KNOWN_FIELDS, medicine_records, parse_ema, staleness
from litwatch.records import APPROVAL_REG_KINDS, UPDATE_REG_KINDS, Record

EXCERPT = Path(__file__).parent / "data" / "ema" / "medicines-excerpt.json"


def _doc() -> dict[str, Any]:
    return json.loads(EXCERPT.read_text(encoding="utf-8"))


def _by_name(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in doc["data"] if m["name_of_medicine"] == name)


def _bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def test_real_excerpt_human_medicines_only() -> None:
    parsed = parse_ema(EXCERPT.read_bytes(), feed_name="ema")
    assert parsed.warnings == ()
    assert (parsed.medicines, parsed.human) == (6, 5)  # Cirbloc is veterinary
    assert parsed.timestamp == "2026-10-04T18:02:25Z"
    assert parsed.newest_update == date(2026, 10, 2)
    keys = [r.key for r in parsed.records]
    assert not any(k.startswith("EMEA/V/") for k in keys)
    assert "EMEA/H/C/006711#eu-authorisation" in keys and "EMEA/H/C/006711#chmp-opinion" in keys
    tafamidis = next(r for r in parsed.records if r.key == "EMEA/H/C/006711#eu-authorisation")
    assert tafamidis.source == "feed:ema" and tafamidis.regulator == "EMA"
    assert tafamidis.reg_kind == "EU authorisation" and tafamidis.pub_date == "2026-09-18"  # DD/MM/YYYY
    assert tafamidis.title == "EU authorisation: Tafamidis Accord (tafamidis)"
    assert tafamidis.sponsor == "Accord Healthcare S.L.U." and tafamidis.reg_flags == ("generic",)
    assert tafamidis.url == "https://www.ema.europa.eu/en/medicines/human/EPAR/tafamidis-accord"
    assert Record.from_fields(tafamidis.source, tafamidis.key, tafamidis.fields()) == tafamidis


def test_since_keeps_what_happened_recently() -> None:
    parsed = parse_ema(EXCERPT.read_bytes(), feed_name="ema", since=date(2026, 7, 1))
    assert [r.key for r in parsed.records] == [
        "EMEA/H/C/006498#chmp-opinion",  # Itvisma 23/04/2026, first published 28/07/2026 (#24)
        "EMEA/H/C/006498#eu-authorisation",  # 30/06/2026, first published 28/07/2026
        "EMEA/H/C/006711#chmp-opinion",  # 23/07/2026
        "EMEA/H/C/006711#eu-authorisation",  # 18/09/2026
    ]


def test_myeloma_medicine_matches_on_area_indication_and_substance() -> None:
    pom = medicine_records(_by_name(_doc(), "Pomalidomide Teva"), feed_name="ema")
    auth = next(r for r in pom if r.reg_kind == "EU authorisation")
    assert "&nbsp;" not in auth.abstract and "relapsed and refractory multiple myeloma" in auth.abstract
    for expr in ("myeloma", "pomalidomide", '"Teva GmbH"', '"Multiple Myeloma"'):
        assert compile_match(expr).hits(auth.title, auth.abstract), expr


def _opinion_then_authorisation() -> tuple[dict[str, Any], dict[str, Any]]:
    """Two snapshots of one (myeloma) medicine, derived from the real Pomalidomide Teva
    entry: first the CHMP opinion is published, later the Commission's authorisation."""
    real = _by_name(_doc(), "Pomalidomide Teva")
    opinion = copy.deepcopy(real) | {
        "medicine_status": "Opinion",
        "opinion_status": "Positive",
        "latest_procedure_affecting_product_information": "",
        "opinion_adopted_date": "22/01/2026",
        "marketing_authorisation_date": "",
        "european_commission_decision_date": "",
        "revision_number": "",
        "first_published_date": "23/01/2026",
        "last_updated_date": "",
    }
    authorised = copy.deepcopy(opinion) | {
        "medicine_status": "Authorised",
        "opinion_status": "",
        "marketing_authorisation_date": "20/03/2026",
        "european_commission_decision_date": "20/03/2026",
        "last_updated_date": "24/03/2026",
    }
    return opinion, authorised


def test_positive_opinion_followed_by_authorisation_each_once() -> None:
    opinion, authorised = _opinion_then_authorisation()
    since = date(2026, 1, 1)
    day1 = parse_ema(_bytes({"meta": {}, "data": [opinion]}), feed_name="ema", since=since).records
    day2 = parse_ema(_bytes({"meta": {}, "data": [authorised]}), feed_name="ema", since=since).records
    assert [(r.key, r.reg_kind, r.pub_date) for r in day1] == [
        ("EMEA/H/C/006302#chmp-opinion", "CHMP opinion", "2026-01-22")
    ]
    assert [(r.key, r.reg_kind, r.pub_date) for r in day2] == [
        ("EMEA/H/C/006302#chmp-opinion", "CHMP opinion", "2026-01-22"),
        ("EMEA/H/C/006302#eu-authorisation", "EU authorisation", "2026-03-20"),
    ]
    # the opinion read again is the same record (same hash): no second event, no update
    assert day2[0] == day1[0] and day2[0].fields() == day1[0].fields()
    assert {r.reg_kind for r in day2} <= APPROVAL_REG_KINDS
    assert day1[0].title == "Positive CHMP opinion: Pomalidomide Teva (pomalidomide)"


def test_withdrawal_refusal_suspension_are_update_kinds() -> None:
    doc = _doc()
    pem = medicine_records(_by_name(doc, "Pemetrexed Baxter"), feed_name="ema", since=date(2025, 1, 1))
    assert [(r.key, r.reg_kind, r.pub_date) for r in pem] == [
        ("EMEA/H/C/005848#withdrawal", "withdrawal", "2025-05-02")
    ]
    assert pem[0].reg_kind in UPDATE_REG_KINDS and pem[0].title.startswith("EU authorisation withdrawn:")
    refused = _by_name(doc, "Xalkori") | {
        "medicine_status": "Refused",
        "opinion_status": "Negative",
        "marketing_authorisation_date": "",
        "refusal_of_marketing_authorisation_date": "15/02/2026",
        "opinion_adopted_date": "29/01/2026",
    }
    suspended = _by_name(doc, "Xalkori") | {
        "medicine_status": "Suspended",
        "suspension_of_marketing_authorisation_date": "03/03/2026",
    }
    kinds = {r.reg_kind for r in medicine_records(refused, feed_name="ema", since=date(2026, 1, 1))}
    assert kinds == {"refusal", "negative CHMP opinion"} and kinds <= UPDATE_REG_KINDS
    (susp,) = medicine_records(suspended, feed_name="ema", since=date(2026, 1, 1))
    assert (susp.key, susp.reg_kind, susp.pub_date) == ("EMEA/H/C/002489#suspension", "suspension", "2026-03-03")


def test_renamed_field_is_a_warning_naming_both_names_not_a_crash() -> None:
    doc = _doc()
    for m in doc["data"]:
        m["marketing_authorization_date"] = m.pop("marketing_authorisation_date")
    parsed = parse_ema(_bytes(doc), feed_name="ema")
    assert len(parsed.warnings) == 2
    assert "fields litwatch does not know in the EMA medicines file: marketing_authorization_date" in parsed.warnings[0]
    assert "fields missing from the EMA medicines file: marketing_authorisation_date (in 6 of 6)" in parsed.warnings[1]
    assert all(r.reg_kind != "EU authorisation" for r in parsed.records)
    assert any(r.reg_kind == "CHMP opinion" for r in parsed.records)  # what can be read still is


def test_missing_category_falls_back_to_the_product_number_and_odd_values_warn() -> None:
    doc = _doc()
    for m in doc["data"]:
        del m["category"]
    _by_name(doc, "Xalkori")["medicine_status"] = "Transferred"
    _by_name(doc, "Xalkori")["opinion_adopted_date"] = "2012-07-19"
    del _by_name(doc, "Itvisma")["name_of_medicine"]
    parsed = parse_ema(_bytes(doc), feed_name="ema")
    assert parsed.human == 5  # EMEA/H/... numbers; Cirbloc (EMEA/V/...) still left out
    text = "\n".join(parsed.warnings)
    assert "category (in 6 of 6)" in text and "name_of_medicine (in 1 of 6)" in text
    assert "medicine_status 'Transferred' is not one litwatch knows" in text
    assert "date '2012-07-19' is not DD/MM/YYYY" in text
    assert "without name_of_medicine or ema_product_number was skipped" in text
    assert not any(r.key.startswith("EMEA/H/C/006498") for r in parsed.records)


def test_stale_file() -> None:
    newest = parse_ema(EXCERPT.read_bytes(), feed_name="ema").newest_update
    assert staleness(newest, datetime(2026, 10, 16, 9, 0), 14) is None  # 14 days: not yet
    message = staleness(newest, datetime(2026, 10, 17, 9, 0), 14)
    assert message == (
        "the EMA medicines file looks stale: its newest last_updated_date is 2026-10-02, "
        "15 days before 2026-10-17 (more than 14)"
    )
    assert staleness(None, date(2026, 10, 17), 14) is not None


def test_malformed_json_is_a_parse_error() -> None:
    body = EXCERPT.read_bytes()
    with pytest.raises(ParseError, match="feed ema: the EMA medicines file is not valid JSON"):
        parse_ema(body[: len(body) - 200], feed_name="ema")
    with pytest.raises(ParseError, match='not EMA medicines data \\(no "data" array\\)'):
        parse_ema(b'{"meta": {}, "results": []}', feed_name="ema")


def test_large_file_is_parsed_as_a_stream() -> None:
    """~20 MB of medicines: the parser's own allocations stay far below the file's size
    (json.loads would build every medicine as Python objects at once)."""
    doc = _doc()
    vet = _by_name(doc, "Cirbloc")
    filler = [vet | {"ema_product_number": f"EMEA/V/C/{i:06d}"} for i in range(10000)]
    big = _bytes({"meta": doc["meta"], "data": [*filler, *doc["data"]]})
    assert len(big) > 15_000_000
    tracemalloc.start()
    try:
        parsed = parse_ema(big, feed_name="ema", since=date(2026, 7, 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.medicines == 10006 and len(parsed.records) == 4
    print(f"file {len(big) / 1e6:.1f} MB, parser peak {peak / 1e6:.2f} MB")
    assert peak < len(big) / 10


def test_known_fields_are_the_files_fields() -> None:
    assert list(_doc()["data"][0]) == list(KNOWN_FIELDS)
