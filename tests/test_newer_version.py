"""A newer version is not an erratum (issue 16): PubMed's `UpdateIn` (the published
article of a preprint, the update of a review) becomes an `update` event shown as
"Newer version" with its link, never "[Erratum]". Checked on the real records with
`UpdateIn`/`UpdateOf` in ../shared/data (NLM's 2018 baseline sample: a Cochrane chain),
pure and end to end through poll and digest."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

from lxml import etree

from helpers import TODAY, basic_config
from helpers.fake_eutils import FakeEutils
from litwatch import events as ev
from litwatch.config import load
from litwatch.digest.group import group
from litwatch.digest.render import Renderer
from litwatch.parse.pubmed import parse_pubmed
from litwatch.records import PUBMED, Link, PendingEvent, Record
from litwatch.service import Service

SAMPLE = "pubmed/jcore/pubmedsample18n0001.xml"  # NLM baseline sample, public domain


def real_records(shared_data: Path) -> dict[str, Record]:
    return {r.key: r for r in parse_pubmed((shared_data / SAMPLE).read_bytes())}


def real_article_xml(shared_data: Path, pmid: str, *, drop: str = "") -> str:
    """One PubmedArticle of the sample file, as XML; `drop` removes that RefType."""
    root = etree.fromstring((shared_data / SAMPLE).read_bytes())
    (art,) = root.xpath(f"//PubmedArticle[MedlineCitation/PMID='{pmid}']")
    for cc in art.xpath(f".//CommentsCorrections[@RefType='{drop}']") if drop else ():
        cc.getparent().remove(cc)
    return str(etree.tostring(art, encoding="unicode"))


def test_real_update_in_is_a_newer_version_not_an_erratum(shared_data: Path) -> None:
    real = real_records(shared_data)
    with_update = {k: r for k, r in real.items() if any(lk.ref_type == "UpdateIn" for lk in r.links)}
    assert set(with_update) == {"11034741", "11279676", "11406024"}
    for key, r in sorted(with_update.items()):
        before = replace(r, links=tuple(lk for lk in r.links if lk.ref_type != "UpdateIn"))
        events = ev.classify_change(before, r, ev.diff(before, r), 2)
        kinds = [e.kind for e in events]
        assert kinds == ["update"], (key, kinds)
        (newer,) = events[0].detail["newer"]
        (link,) = [lk for lk in r.links if lk.ref_type == "UpdateIn"]
        assert newer["pmid"] == link.pmid and newer["url"] == f"https://pubmed.ncbi.nlm.nih.gov/{link.pmid}/"
        assert newer["title"].startswith("Cochrane Database Syst Rev.")
        assert "erratum" not in kinds and not ev.erratum_notices(r)
        print(f"{key}: UpdateIn {link.pmid} -> {kinds} newer={newer['title']!r}")


def test_real_newer_version_names_the_one_it_replaces(shared_data: Path) -> None:
    real = real_records(shared_data)
    newer = real["11406024"]  # UpdateOf 11034741, itself updated later (UpdateIn 14973981)
    assert ("update", "11034741") in ev.notice_targets(newer)
    assert not any(kind == "erratum" for kind, _ in ev.notice_targets(newer))
    assert ev.classify_new(newer) == "new", "a newer version is a paper in its own right"
    assert ev.flags(newer) == ["newer version"]  # it was itself updated later (UpdateIn 14973981)
    assert ev.flags(real["11034741"]) == ["newer version"], "not 'corrected'"
    via_record = ev.notice_event("update", real["11034741"], newer)
    before = replace(real["11034741"], links=())
    (via_link,) = ev.classify_change(before, real["11034741"], ev.diff(before, real["11034741"]), 2)
    assert via_record.dedup == via_link.dedup == "version:pubmed:11034741:11406024"
    assert via_record.kind == via_link.kind == "update"
    assert ev.known_at_first_sight(real["11034741"], "update", "11406024")
    assert not ev.known_at_first_sight(before, "update", "11406024")


def test_preprint_gaining_update_in_with_a_title_change_is_one_update() -> None:
    preprint = Record(source=PUBMED, key="100", title="A preprint", pubtypes=("Preprint",))
    published = replace(
        preprint, title="A preprint (published)", links=(Link("UpdateIn", "200", "Nat Commun. 2024;15:1"),)
    )
    (e,) = ev.classify_change(preprint, published, ev.diff(preprint, published), 2)
    assert e.kind == "update" and e.dedup == "version:pubmed:100:200"
    assert e.detail["changes"] == [["title", "A preprint", "A preprint (published)"]]


def _pending(kind: str, record: Record, detail: dict[str, object]) -> PendingEvent:
    now = datetime(2026, 12, 1, 7, tzinfo=UTC)
    return PendingEvent(
        id=1, record_id=1, query="q", kind=kind, version_n=2, detail=detail, created_at=now, record=record, terms=()
    )


def test_digest_shows_newer_version_with_its_link(shared_data: Path) -> None:
    r = real_records(shared_data)["11034741"]
    before = replace(r, links=())
    (e,) = ev.classify_change(before, r, ev.diff(before, r), 2)
    data = group("d", [_pending(e.kind, r, e.detail)], max_items=10, now=datetime(2026, 12, 1, 8, tzinfo=UTC))
    (section,) = data.sections
    assert section.key == "updates" and section.items[0].label == "Newer version"
    renderer = Renderer()
    text = renderer.text(data)
    html = renderer.html(data)
    print(text)
    assert "[Newer version] " + r.title[:30] in text.replace("\n", " ")
    assert "Newer version: Cochrane Database Syst Rev. 2001;(2):CD002020" in text
    assert "https://pubmed.ncbi.nlm.nih.gov/11406024/" in text
    assert "Erratum" not in text and "Erratum" not in html
    assert 'href="https://pubmed.ncbi.nlm.nih.gov/11406024/"' in html and ">Newer version<" in html


def test_end_to_end_update_in_is_mailed_as_newer_version(tmp_path: Path, eutils: FakeEutils, shared_data: Path) -> None:
    """A stored record later gains `UpdateIn` (real XML); the next poll and digest say
    "[Newer version]" with the link, once, and never "[Erratum]"."""
    yesterday = TODAY - timedelta(days=1)
    eutils.add(
        "11034741", terms="TRAIL", edat=yesterday, xml=real_article_xml(shared_data, "11034741", drop="UpdateIn")
    )
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: trail\n    pubmed: TRAIL\n",
        digests="digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n",
    )
    clock = [datetime.now(UTC).replace(tzinfo=None)]
    svc = Service(load(cfg), now=lambda: clock[0])
    try:
        svc.poll()
        svc.digest()
        eutils.change("11034741", mdat=TODAY, xml=real_article_xml(shared_data, "11034741"))
        # the next day: a record fetched today is fetched again once its modification
        # day has ended, not on every poll of that day (issue 28)
        clock[0] += timedelta(days=1)
        svc.poll()
        svc.digest()
        svc.poll()  # seen again unchanged: nothing new
        assert not any(r.sent for r in svc.digest())
    finally:
        svc.close()
    mails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 2
    msg = message_from_bytes(mails[1].read_bytes(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    print(msg["Subject"])
    print(text)
    assert msg["Subject"] == "d: 1 update"
    assert "[Newer version]" in text and "https://pubmed.ncbi.nlm.nih.gov/11406024/" in text
    assert "Erratum" not in text
