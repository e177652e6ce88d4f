"""The Crossref parser on the real answers in tests/data/crossref (see its MANIFEST):
which notice each holds, that both sides of one notice give one value, the type →
kind mapping, and answers that are not JSON, end early, or are huge."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from helpers.fake_crossref import FakeCrossref
from litwatch.errors import ParseError, SourceError
from litwatch.parse.crossref import KINDS, OTHER, error_message, kind_of, normalize_doi, parse_works
from litwatch.records import Notice

DATA = Path(__file__).parent / "data" / "crossref"


def real(name: str) -> bytes:
    return (DATA / f"work-{name}.json").read_bytes()


@pytest.mark.parametrize(
    ("name", "kind", "crossref_type", "target", "notice", "source", "when"),
    [
        # Retraction Watch's entry on the retracted paper (updated-by) ...
        (
            "10.1021_am300292v",
            "retraction",
            "retraction",
            "10.1021/am300292v",
            "10.1021/acsami.9b11759",
            "retraction-watch",
            "2019-07-26",
        ),
        # ... and on the notice itself (update-to)
        (
            "10.1021_acsami.9b11759",
            "retraction",
            "retraction",
            "10.1021/am300292v",
            "10.1021/acsami.9b11759",
            "retraction-watch",
            "2019-07-26",
        ),
        (
            "10.1088_1361-6595_ab245f",
            "erratum",
            "correction",
            "10.1088/1361-6595/aaebdb",
            "10.1088/1361-6595/ab245f",
            "publisher",
            "2019-07-11",
        ),
        (
            "10.1016_j.lungcan.2026.109332",
            "concern",
            "expression_of_concern",
            "10.1016/j.lungcan.2003.10.006",
            "10.1016/j.lungcan.2026.109332",
            "publisher",
            "2026-05-01",
        ),
    ],
)
def test_real_answers(
    name: str, kind: str, crossref_type: str, target: str, notice: str, source: str, when: str
) -> None:
    page = parse_works(real(name))
    (n,) = page.notices
    assert (n.kind, n.type, n.target_doi, n.notice_doi, n.source, n.date) == (
        kind,
        crossref_type,
        target,
        notice,
        source,
        when,
    )
    assert page.items == 1 and page.next_cursor is None


def test_both_sides_of_one_retraction_are_one_notice() -> None:
    (on_paper,) = parse_works(real("10.1021_am300292v")).notices
    (on_notice,) = parse_works(real("10.1021_acsami.9b11759")).notices
    assert on_paper == on_notice and len({on_paper, on_notice}) == 1
    assert on_paper.source_label == "Retraction Watch" and on_paper.record_id == "20946"
    assert on_notice.notice_title.startswith("Retraction of “Flexible and Microporous")


def test_work_without_updates_has_none() -> None:
    page = parse_works(real("10.1093_nar_gks1195"))  # "update-to": null, "updated-by": null
    assert page.notices == () and page.dois == {"10.1093/nar/gks1195"}


@pytest.mark.parametrize(("crossref_type", "kind"), sorted(KINDS.items()))
def test_every_crossref_type_maps(crossref_type: str, kind: str) -> None:
    assert kind_of(crossref_type) == kind


@pytest.mark.parametrize("crossref_type", ["retraction_and_replacement", "comment", "", "Withdrawn!"])
def test_unknown_type_is_recorded_as_itself_never_a_retraction(crossref_type: str) -> None:
    work = json.loads(real("10.1021_am300292v"))
    work["message"]["updated-by"][0]["type"] = crossref_type
    (n,) = parse_works(json.dumps(work).encode()).notices
    assert n.kind == OTHER and n.type == crossref_type


def test_spellings_of_known_types() -> None:
    assert kind_of("Expression-of-Concern") == "concern" and kind_of("partial retraction") == "retraction"


def test_work_list_paging_fields_and_keep() -> None:
    fake = FakeCrossref()  # not started: its answers are built offline
    try:
        fake.add_real()
        status, body = fake.list_works({"filter": ["is-update:true"], "rows": ["2"], "cursor": ["*"]})
    finally:
        fake.close()
    assert status == 200
    page = parse_works(body, keep=lambda n: n.kind != "erratum")
    assert page.items == 2 and page.total == 3 and page.next_cursor and page.next_cursor.startswith("DnF1ZXJ5")
    assert all(n.kind != "erratum" for n in page.notices)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "is not valid JSON"),
        (real("10.1021_am300292v")[:200], "ends early (truncated)"),
        (b"", "ends early (truncated)"),
        (b'{"status":"failed","message-type":"validation-failure","message":[]}', "not a Crossref works answer"),
        (b'{"status":"ok","message-type":"work-list","message":{"items":[{"DOI":"10.1/x"},]}}', "is not valid JSON"),
    ],
    ids=["html", "truncated", "empty", "validation-failure", "trailing-comma"],
)
def test_bad_answers_are_a_clear_source_error(body: bytes, said: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_works(body, what="Crossref check of 50 DOIs", url="https://api.crossref.org/works")
    assert isinstance(e.value, SourceError)
    assert str(e.value).startswith("Crossref check of 50 DOIs: ")
    assert said in str(e.value) and "https://api.crossref.org/works" in str(e.value)
    print(e.value)


def test_fifty_megabytes_parse_in_bounded_memory() -> None:
    fake = FakeCrossref()
    try:
        body = fake.huge_body(50_000_000)
    finally:
        fake.close()
    tracemalloc.start()
    page = parse_works(body, keep=lambda n: False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    json.loads(body)
    _, tree = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{len(body) / 1e6:.1f} MB, {page.items} works ({len(page.dois)} distinct): peak {peak / 1e6:.2f} MB streaming vs {tree / 1e6:.0f} MB json.loads"
    )
    assert len(body) >= 49_000_000 and page.items > 18_000 and len(page.dois) == 5
    assert peak < 5_000_000  # one work at a time, not the tree


def test_doi_normalisation() -> None:
    assert normalize_doi(" https://doi.org/10.1021/AM300292V ") == "10.1021/am300292v"
    assert normalize_doi("doi:10.1/X") == "10.1/x"
    assert normalize_doi("not a doi") == "" and normalize_doi(None) == ""


def test_crossref_error_messages() -> None:
    rows = b'{"status":"failed","message-type":"validation-failure","message":[{"type":"integer-not-valid","value":"1001","message":"Integer specified as 1001 but must be a positive integer less than or equal to 1000. "}]}'
    assert error_message(rows) == "Integer specified as 1001 but must be a positive integer less than or equal to 1000."
    assert error_message(b"Resource not found.") == "Resource not found."


def test_partial_dates() -> None:
    base = json.loads(real("10.1021_am300292v"))
    entry = base["message"]["updated-by"][0]
    for parts, expected in (([[2019, 7]], "2019-07"), ([[2019]], "2019"), ([[None]], "2019-07-26")):
        entry["updated"] = {"date-parts": parts, "date-time": "2019-07-26T00:00:00Z"}
        (n,) = parse_works(json.dumps(base).encode()).notices
        assert n.date == expected
    assert isinstance(n, Notice)


def test_one_notice_reported_by_publisher_and_retraction_watch_is_two_sources() -> None:
    work = json.loads(real("10.1021_am300292v"))
    rw = work["message"]["updated-by"][0]
    work["message"]["updated-by"].append({**rw, "source": "publisher", "record-id": None})
    notices = parse_works(json.dumps(work).encode()).notices
    assert [(n.notice_doi, n.source_label) for n in notices] == [
        ("10.1021/acsami.9b11759", "Retraction Watch"),
        ("10.1021/acsami.9b11759", "publisher notice"),
    ]
