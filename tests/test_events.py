"""Pure diff and classification over pairs of records, and on the real records in
../shared/data that carry errata, retractions and expressions of concern."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from litwatch import events as ev
from litwatch.parse.pubmed import parse_pubmed
from litwatch.records import PUBMED, Link, Record

BASE = Record(
    source=PUBMED,
    key="100",
    title="Aponermin in relapsed myeloma",
    abstract="BACKGROUND: x.\nRESULTS: y.",
    authors=("Smith J", "Doe A"),
    journal="Blood",
    doi="10.1/abc",
    pubtypes=("Journal Article", "Clinical Trial"),
    mesh=("Humans", "Multiple Myeloma/drug therapy"),
    keywords=("TRAIL", "DR5"),
    links=(Link("CommentIn", "200"),),
    status="MEDLINE",
)


def kinds(old: Record, new: Record) -> list[str]:
    return [e.kind for e in ev.classify_change(old, new, ev.diff(old, new), 2)]


@pytest.mark.parametrize(
    "changed",
    [
        replace(BASE, mesh=tuple(reversed(BASE.mesh))),
        replace(BASE, keywords=("DR5", "TRAIL")),
        replace(BASE, pubtypes=("Clinical Trial", "Journal Article")),
        replace(BASE, title="  Aponermin  in relapsed\nmyeloma "),
        replace(BASE, abstract="BACKGROUND:   x.\n\nRESULTS: y.  "),
        replace(BASE, links=(Link("CommentIn", "200", "Blood. 2024;1:2"),)),
    ],
    ids=["mesh-order", "keyword-order", "pubtype-order", "title-whitespace", "abstract-whitespace", "refsource-text"],
)
def test_reorderings_and_whitespace_are_no_change(changed: Record) -> None:
    assert ev.diff(BASE, changed) == []
    assert ev.fingerprint(BASE) == ev.fingerprint(changed)


def test_author_order_matters() -> None:
    new = replace(BASE, authors=("Doe A", "Smith J"))
    assert [c.field for c in ev.diff(BASE, new)] == ["authors"]
    assert kinds(BASE, new) == ["update"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"links": (*BASE.links, Link("ErratumIn", "300"))}, ["erratum"]),
        ({"links": (Link("CorrectedandRepublishedIn", "301"),)}, ["erratum"]),
        ({"links": (Link("UpdateIn", "302"),)}, ["update"]),  # a newer version, not an erratum
        ({"links": (Link("RetractionIn", "303"),)}, ["retraction"]),
        ({"links": (Link("RetractedandRepublishedIn", "304"),)}, ["retraction"]),
        ({"pubtypes": (*BASE.pubtypes, "Retracted Publication")}, ["retraction"]),
        ({"title": "WITHDRAWN: Aponermin in relapsed myeloma"}, ["retraction"]),
        ({"links": (Link("ExpressionOfConcernIn", "305"),)}, ["concern"]),
        ({"title": "Aponermin in relapsed/refractory myeloma"}, ["update"]),
        ({"abstract": "BACKGROUND: x.\nRESULTS: z."}, ["update"]),
        ({"doi": "10.1/abd"}, ["update"]),
        ({"mesh": ("Humans",)}, []),
        ({"status": "PubMed-not-MEDLINE"}, []),
        ({"keywords": ("TRAIL",)}, []),
        ({"pub_status": "epublish"}, []),
        ({"links": (Link("CommentIn", "200"), Link("CommentOn", "201"))}, []),
        ({"links": (Link("ErratumFor", "306"),)}, []),  # direction: this record would be the notice
    ],
    ids=lambda v: str(v)[:60] if not isinstance(v, list) else ",".join(v) or "none",
)
def test_classify_change(change: dict, expected: list[str]) -> None:
    assert kinds(BASE, replace(BASE, **change)) == expected


def test_retraction_with_title_change_is_one_event_with_the_change_attached() -> None:
    new = replace(
        BASE,
        title="RETRACTED: Aponermin in relapsed myeloma",
        pubtypes=(*BASE.pubtypes, "Retracted Publication"),
        links=(*BASE.links, Link("RetractionIn", "400")),
    )
    (e,) = ev.classify_change(BASE, new, ev.diff(BASE, new), 3)
    assert e.kind == "retraction" and e.dedup == "retraction:pubmed:100"
    assert e.detail["changes"] == [["title", BASE.title, new.title]]


def test_erratum_and_concern_together_give_both() -> None:
    new = replace(BASE, links=(Link("ErratumIn", "1"), Link("ExpressionOfConcernIn", "2")))
    assert sorted(kinds(BASE, new)) == ["concern", "erratum"]


def test_already_retracted_gives_no_second_retraction() -> None:
    old = replace(BASE, links=(Link("RetractionIn", "1"),))
    new = replace(old, pubtypes=(*BASE.pubtypes, "Retracted Publication"))
    assert kinds(old, new) == []


@pytest.mark.parametrize(
    ("pubtypes", "links", "targets"),
    [
        (("Published Erratum",), (Link("ErratumFor", "100"),), [("erratum", "100")]),
        (("Retraction of Publication",), (Link("RetractionOf", "100"),), [("retraction", "100")]),
        (("Retraction Notice",), (Link("RetractionOf", "100"),), [("retraction", "100")]),
        (("Expression of Concern",), (Link("ExpressionOfConcernFor", "100"),), [("concern", "100")]),
        (("Journal Article",), (Link("CorrectedandRepublishedFrom", "100"),), [("erratum", "100")]),
        (("Journal Article",), (Link("RetractedandRepublishedFrom", "100"),), [("retraction", "100")]),
        (("Journal Article",), (Link("UpdateOf", "100"),), [("update", "100")]),
        (("Journal Article",), (Link("CommentOn", "100"),), []),
    ],
)
def test_notice_targets(pubtypes: tuple[str, ...], links: tuple[Link, ...], targets: list[tuple[str, str]]) -> None:
    notice = Record(source=PUBMED, key="900", title="Erratum", pubtypes=pubtypes, links=links)
    assert ev.notice_targets(notice) == targets


def test_notice_and_gained_link_share_dedup() -> None:
    notice = Record(
        source=PUBMED, key="300", title="Erratum", pubtypes=("Published Erratum",), links=(Link("ErratumFor", "100"),)
    )
    via_notice = ev.notice_event("erratum", BASE, notice)
    gained = replace(BASE, links=(*BASE.links, Link("ErratumIn", "300")))
    (via_link,) = ev.classify_change(BASE, gained, ev.diff(BASE, gained), 2)
    assert via_notice.dedup == via_link.dedup


@pytest.mark.parametrize(
    ("title", "pubtypes", "approvals_source", "expected"),
    [
        ("Aponermin: First Approval", (), False, "approval"),
        ("Teclistamab: First Global Approval", (), False, "approval"),
        ("FDA Approval Summary: Idecabtagene Vicleucel", (), False, "approval"),
        ("FDA approves aponermin for myeloma", (), True, "approval"),
        ("Approval rates in oncology trials", (), False, "new"),
        ("A trial of aponermin", (), False, "new"),
        ("Erratum: A trial", ("Published Erratum",), False, None),
        ("Retraction notice", ("Retraction of Publication",), False, None),
    ],
)
def test_classify_new(title: str, pubtypes: tuple[str, ...], approvals_source: bool, expected: str | None) -> None:
    r = Record(source=PUBMED, key="1", title=title, pubtypes=pubtypes)
    assert ev.classify_new(r, approvals_source=approvals_source) == expected


# ---------------------------------------------------------------------------- real records


def _real(shared_data: Path) -> dict[str, Record]:
    out = {}
    for path in (shared_data / "pubmed").rglob("*.xml"):
        for r in parse_pubmed(path.read_bytes()):
            out[r.key] = r
    return out


def confusion(shared_data: Path) -> dict[tuple[str, str], int]:
    """(expected, got) counts: for every real record, the events it yields when it
    appears as a change of its own copy stripped of every notice signal, and as a
    notice (kinds it names). Expected kinds come from the raw CommentsCorrections and
    publication types, independent of the classifier's code paths."""
    table: dict[tuple[str, str], int] = {}
    for r in _real(shared_data).values():
        expected = set()
        types = {lk.ref_type for lk in r.links}
        if types & {"ErratumIn", "CorrectedandRepublishedIn"}:
            expected.add("erratum")
        if types & {"RetractionIn", "RetractedandRepublishedIn"} or "Retracted Publication" in r.pubtypes:
            expected.add("retraction")
        if "ExpressionOfConcernIn" in types:
            expected.add("concern")
        stripped = replace(
            r,
            links=tuple(lk for lk in r.links if not lk.ref_type.endswith("In")),
            pubtypes=tuple(p for p in r.pubtypes if p != "Retracted Publication"),
            title=r.title.removeprefix("WITHDRAWN: ").removeprefix("RETRACTED: "),
        )
        got = {e.kind for e in ev.classify_change(stripped, r, ev.diff(stripped, r), 2)} - {"update"}
        for kind in ("erratum", "retraction", "concern"):
            key = ("yes" if kind in expected else "no", "yes" if kind in got else "no")
            table[(kind, *key)] = table.get((kind, *key), 0) + 1  # type: ignore[arg-type]
    return table


def test_real_records_classified_right(shared_data: Path) -> None:
    table = confusion(shared_data)
    wrong = {k: v for k, v in table.items() if k[1] != k[2]}
    assert not wrong, wrong
    assert table[("erratum", "yes", "yes")] >= 10
    assert table[("retraction", "yes", "yes")] >= 3
    assert table[("concern", "yes", "yes")] >= 1


def test_real_notices_point_at_their_targets(shared_data: Path) -> None:
    real = _real(shared_data)
    notices = {k: r for k, r in real.items() if ev.is_notice(r)}
    assert notices, "the shared data holds erratum and retraction notices"
    for r in notices.values():
        kinds_named = {k for k, _ in ev.notice_targets(r)}
        if r.has_pubtype(frozenset({"published erratum"})):
            assert "erratum" in kinds_named, r.key
        if r.has_pubtype(frozenset({"retraction of publication", "retraction notice"})):
            assert "retraction" in kinds_named, r.key
        assert ev.classify_new(r) is None


@pytest.mark.parametrize(
    ("first", "kind", "notice", "expected"),
    [
        (replace(BASE, links=(Link("ErratumIn", "9"),)), "erratum", "9", True),
        (BASE, "erratum", "9", False),
        (replace(BASE, links=(Link("ErratumIn", "8"),)), "erratum", "9", False),
        (replace(BASE, pubtypes=("Retracted Publication",)), "retraction", "9", True),
        (BASE, "retraction", "9", False),
        (replace(BASE, links=(Link("ExpressionOfConcernIn", "9"),)), "concern", "9", True),
    ],
)
def test_known_at_first_sight(first: Record, kind: str, notice: str, expected: bool) -> None:
    assert ev.known_at_first_sight(first, kind, notice) is expected
