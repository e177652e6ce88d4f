"""One approval, one line (issue 17): `digest.group` joins a regulator's press release to
its Drugs@FDA record, places a "First Approval" paper after the approval it names, shows
regulator, product, substance, sponsor, date, kind, flags and documents, and lists stale
sources in the footer. Records come from the real parsers on tests/data (openFDA, EMA,
the FDA-style press feed); event kinds from `events.classify_new`, as a poll decides them.

The text of the whole approvals digest is compared with tests/golden/digest-approvals.txt
(LITWATCH_UPDATE_GOLDEN=1 rewrites it; review the diff)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from litwatch.digest import DigestData, Item, Renderer
from litwatch.events import classify_new
from litwatch.parse.ema import parse_ema
from litwatch.parse.feeds import parse_feed
from litwatch.parse.openfda import parse_drugsfda
from litwatch.records import Record
from test_render import GOLDEN, UPDATE_GOLDEN, Events, by_class, pubmed

DATA = Path(__file__).parent / "data"
PRESS_URL = (
    "https://www.fda.gov/news-events/press-announcements/fda-approves-aponermin-relapsed-or-refractory-multiple-myeloma"
)
STALE = {
    "name": "ema-medicines",
    "note": "the EMA medicines file looks stale: its newest last_updated_date is 2026-01-02, 25 days before "
    "2026-01-27 (more than 14)",
}


# ------------------------------------------------------------------------------- records


def fda_records() -> dict[str, Record]:
    raw = (DATA / "openfda" / "applications.json").read_bytes()
    parsed = parse_drugsfda(raw, feed_name="fda-approvals", since=date(2026, 1, 1), until=date(2026, 1, 31))
    return {r.key: r for r in parsed.records}


def press_records() -> dict[str, Record]:
    parsed = parse_feed((DATA / "feeds" / "fda-approvals.xml").read_bytes(), feed_name="fda-press")
    return {r.key: r for r in parsed.records}


def ema_records() -> dict[str, Record]:
    """Pomalidomide Teva (real entry) given a January 2026 opinion and a March authorisation."""
    doc = json.loads((DATA / "ema" / "medicines-excerpt.json").read_text(encoding="utf-8"))
    pom = copy.deepcopy(next(m for m in doc["data"] if m["name_of_medicine"] == "Pomalidomide Teva"))
    pom |= {"opinion_adopted_date": "22/01/2026", "marketing_authorisation_date": "20/03/2026"}
    parsed = parse_ema(json.dumps({"meta": doc["meta"], "data": [pom]}).encode(), feed_name="ema-medicines")
    return {r.key: r for r in parsed.records}


FIRST_APPROVAL = pubmed(
    "41234567",
    "Aponermin: First Approval",
    authors=("Lamb YN",),
    journal="Drugs",
    pub_date="2026 Feb",
    doi="10.1007/s40265-026-02222-1",
    pubtypes=("Journal Article", "Review"),
)
RECALL = Record(
    source="feed:fda-press",
    key="fda-press-2026-0116-recall",
    title="Example Pharma Issues Voluntary Nationwide Recall of Pomalidomide Capsules, Used to Treat Multiple Myeloma",
    abstract="Example Pharma is voluntarily recalling one lot of pomalidomide capsules, an FDA-approved treatment for "
    "multiple myeloma.",
    pub_date="2026-01-16T18:00:00Z",
    url="https://www.fda.gov/safety/recalls-market-withdrawals-safety-alerts/example-pharma-recall-pomalidomide",
)


def add(ev: Events, record: Record, *, approvals_source: bool = False, **kw: Any) -> Events:
    """Add the event a poll would make of `record` (its kind by `classify_new`)."""
    kind = classify_new(record, approvals_source=approvals_source)
    assert kind is not None
    return ev.add(kind, record, **kw)


def approvals_events() -> Events:
    """A week of the example config's queries: the FDA's record and press release of one
    approval (the press release first: Drugs@FDA learns of it days later), an efficacy
    supplement, a round-up and a recall from the press feed, an EU opinion and
    authorisation, and the "First Approval" paper."""
    fda, press, ema = fda_records(), press_records(), ema_records()
    ev = Events()
    add(ev, press["fda-press-2026-0115-aponermin"], approvals_source=True, queries=("trail-agonists",),
        terms=("aponermin", "TRAIL"), hours_ago=140)  # fmt: skip
    add(ev, press["fda-press-2026-0113-roundup"], approvals_source=True, queries=("multiple-myeloma",),
        terms=("myeloma",), hours_ago=139)  # fmt: skip
    add(ev, RECALL, approvals_source=True, queries=("multiple-myeloma",), terms=("myeloma",), hours_ago=120)
    add(ev, fda["BLA761036:SUPPL:85"], queries=("multiple-myeloma",), terms=("daratumumab",), hours_ago=100)
    add(ev, fda["BLA761901:ORIG:1"], queries=("trail-agonists",), terms=("aponermin",), hours_ago=60)
    add(ev, ema["EMEA/H/C/006302#chmp-opinion"], queries=("multiple-myeloma",), terms=("myeloma",), hours_ago=50)
    add(ev, ema["EMEA/H/C/006302#eu-authorisation"], queries=("multiple-myeloma",), terms=("myeloma",), hours_ago=40)
    add(ev, FIRST_APPROVAL, queries=("trail-agonists",), terms=("aponermin",), hours_ago=10)
    return ev


def approvals_digest(**kw: Any) -> DigestData:
    kw.setdefault("queries", ["trail-agonists", "multiple-myeloma"])
    return approvals_events().group(stale=[STALE], **kw)


def approvals(data: DigestData) -> list[Item]:
    return next(s.items for s in data.sections if s.key == "approvals")


@pytest.fixture
def renderer() -> Renderer:
    r = Renderer()
    r.env.globals["version"] = "0.0.test"
    return r


# ------------------------------------------------------------------------------- grouping


def test_press_release_and_drugs_at_fda_record_are_one_line_with_both_links() -> None:
    data = approvals_digest()
    items = approvals(data)
    assert [i.record.key for i in items] == [
        "BLA761901:ORIG:1",  # the press release's time: it came first
        "41234567",  # the paper, right after the approval it names
        "BLA761036:SUPPL:85",
        "EMEA/H/C/006302#chmp-opinion",
        "EMEA/H/C/006302#eu-authorisation",
    ]
    line = items[0]
    assert line.regulator == "FDA" and line.reg_kind == "new application"
    assert line.announced == [("FDA approves aponermin for relapsed or refractory multiple myeloma", PRESS_URL)]
    assert [label for label, _ in line.links] == ["Approval letter", "Label", "Drugs@FDA", "FDA press release"]
    assert line.url.endswith("ApplNo=761901")  # the title links the Drugs@FDA page
    assert line.terms == ["aponermin", "TRAIL"] and line.queries == ["trail-agonists"]
    assert line.event_ids == [1, 5]  # both events go out with this mail
    assert line.created_at == data.period_start
    assert data.counts == {"approval": 5, "new": 2}  # the round-up and the recall are news, not approvals
    assert [i.record.title for s in data.sections if s.key == "new" for i in s.items] == [
        "FDA Roundup: January 13, 2026",
        RECALL.title,
    ]


def test_what_an_approval_line_says() -> None:
    items = {i.record.key: i for i in approvals(approvals_digest())}
    trail = items["BLA761901:ORIG:1"]
    assert trail.reg_summary == "FDA, 2026-01-15: new application (priority review, orphan)"
    assert trail.product_line == "TRAILNOVA (aponermin); sponsor: EXAMPLE BIOSCIENCES INC"
    assert items["BLA761036:SUPPL:85"].reg_summary == "FDA, 2026-01-20: new indication (priority review)"
    opinion = items["EMEA/H/C/006302#chmp-opinion"]
    assert opinion.reg_summary == "EMA, 2026-01-22: CHMP opinion (generic)"
    assert opinion.product_line == "Pomalidomide Teva (pomalidomide); sponsor: Teva GmbH"
    assert opinion.links == [
        ("EMA medicine page", "https://www.ema.europa.eu/en/medicines/human/EPAR/pomalidomide-teva")
    ]
    assert items["EMEA/H/C/006302#eu-authorisation"].reg_summary == "EMA, 2026-03-20: EU authorisation (generic)"
    assert items["41234567"].about == "aponermin" and not items["41234567"].regulator
    nme = Events().add(
        "approval", replace(fda_records()["BLA761901:ORIG:1"], reg_flags=("new molecular entity", "orphan"))
    )
    (item,) = approvals(nme.group())
    assert (item.reg_kind, item.reg_flags) == ("new molecular entity", ["orphan"])


def test_a_press_release_alone_says_whose_it_is() -> None:
    press = press_records()["fda-press-2026-0115-aponermin"]
    (item,) = approvals(Events().add("approval", press).group())
    assert (item.regulator, item.reg_summary, item.announced) == ("FDA", "FDA, 2026-01-15: press release", [])
    assert item.links == [("fda-press", PRESS_URL)]
    elsewhere = replace(press, url="https://www.example-pharma.com/news/aponermin")
    (item,) = approvals(Events().add("approval", elsewhere).group())
    assert item.regulator == "" and item.reg_summary == ""


def _joined(press: Record, record: Record) -> list[str]:
    ev = Events().add("approval", press, hours_ago=5).add("approval", record, hours_ago=4)
    return [i.record.key for i in approvals(ev.group())]


def test_when_a_press_release_is_not_the_same_approval() -> None:
    press = press_records()["fda-press-2026-0115-aponermin"]
    record = fda_records()["BLA761901:ORIG:1"]
    assert _joined(press, record) == [record.key]
    assert _joined(replace(press, pub_date="2026-01-29T15:00:00Z"), record) == [record.key]  # 14 days: same
    assert _joined(replace(press, pub_date="2026-01-30T15:00:00Z"), record) == [press.key, record.key]  # 15
    ema_site = replace(press, url="https://www.ema.europa.eu/en/news/aponermin")
    assert _joined(ema_site, record) == [press.key, record.key]  # another regulator's
    other = replace(press, title="FDA approves elranatamab", abstract="Today, the FDA approved elranatamab.")
    assert _joined(other, record) == [press.key, record.key]  # another substance
    brand = replace(press, title="FDA approves Trailnova for myeloma", abstract="")
    assert _joined(brand, record) == [record.key]  # the brand is enough
    # an undated press item: the day it was seen stands in for its date (Events: 2025-03-10)
    undated = replace(press, pub_date="")
    assert _joined(undated, replace(record, pub_date="2025-03-07")) == [record.key]
    assert _joined(undated, record) == [press.key, record.key]


def test_biologic_suffix_and_substance_lists() -> None:
    decnupaz = Record(
        source="feed:fda-approvals",
        key="BLA761460:ORIG:1",
        title="FDA approval: DECNUPAZ (pivekimab sunirine-pvzy) — new application (BLA761460)",
        pub_date="2026-05-27",
        url="https://www.accessdata.fda.gov/scripts/cder/daf/index.cfm?event=overview.process&ApplNo=761460",
        regulator="FDA",
        reg_kind="new application",
        product="DECNUPAZ",
        substance="PIVEKIMAB SUNIRINE-PVZY",
    )
    paper = pubmed("42000001", "Pivekimab Sunirine: First Approval")
    early = pubmed("42000002", "Aponermin: First Approval")
    ev = Events().add("approval", early, hours_ago=9).add("approval", decnupaz, hours_ago=8)
    items = approvals(ev.add("approval", paper, hours_ago=1).group())
    assert [(i.record.key, i.about) for i in items] == [
        ("42000002", ""),  # names nothing approved here: stays where its time puts it
        ("BLA761460:ORIG:1", ""),
        ("42000001", "pivekimab sunirine"),
    ]


def test_a_joined_line_is_one_item_under_max_items() -> None:
    data = approvals_digest(max_items=2)
    assert [i.record.key for i in approvals(data)] == ["BLA761901:ORIG:1", "41234567"]
    assert data.more_waiting == 5 and data.event_ids == [1, 5, 8]


def test_digests_without_regulatory_records_are_grouped_as_before() -> None:
    press = press_records()["fda-press-2026-0115-aponermin"]
    ev = Events().add("approval", FIRST_APPROVAL, hours_ago=1).add("approval", press, hours_ago=2)
    assert [i.record.key for i in approvals(ev.group())] == [press.key, FIRST_APPROVAL.key]


def test_a_regulatory_update_shows_its_line_in_updates() -> None:
    doc = json.loads((DATA / "ema" / "medicines-excerpt.json").read_text(encoding="utf-8"))
    parsed = parse_ema(json.dumps(doc).encode(), feed_name="ema-medicines", since=date(2025, 1, 1))
    withdrawn = next(r for r in parsed.records if r.reg_kind == "withdrawal")
    data = add(Events(), withdrawn).group()
    (section,) = data.sections
    (item,) = section.items
    assert section.key == "updates" and item.reg_summary == "EMA, 2025-05-02: withdrawal (generic)"


# ------------------------------------------------------------------------------- rendering


def test_approvals_digest_text_matches_golden(renderer: Renderer) -> None:
    data = approvals_digest()
    got = f"Subject: {renderer.subject(data)}\n\n{renderer.text(data)}"
    path = GOLDEN / "digest-approvals.txt"
    if UPDATE_GOLDEN:
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), f"rerun with LITWATCH_UPDATE_GOLDEN=1 if {path.name} should change"
    section = got[got.index("== Approvals") : got.index("== New papers")]
    assert section.count("FDA approves aponermin") == 1  # one line
    assert section.index("FDA approval: TRAILNOVA") < section.index("Aponermin: First Approval")
    assert "Recall" not in section and "Roundup" not in section
    for line in got.splitlines():
        assert len(line) <= 76 or "https://" in line, line


def test_approvals_digest_html(renderer: Renderer) -> None:
    doc = lxml.html.document_fromstring(renderer.html(approvals_digest()))
    first = by_class(doc, "div", "item")[0]
    assert first.xpath(".//p[contains(@class, 'title')]/a")[0].get("href").endswith("ApplNo=761901")
    reg = by_class(first, "p", "reg")[0].text_content()
    assert reg == "FDA, 2026-01-15: new application (priority review, orphan)"
    hrefs = [a.get("href") for a in first.xpath(".//p[contains(@class, 'links')]/a")]
    assert PRESS_URL in hrefs and any(h.endswith("761901Orig1s000ltr.pdf") for h in hrefs)
    assert by_class(first, "p", "notice")[0].xpath("./a")[0].get("href") == PRESS_URL
    why = by_class(first, "p", "why")[0].text_content()
    assert "aponermin" in why and "TRAIL" in why
    about = by_class(by_class(doc, "div", "item")[1], "p", "about")[0].text_content()
    assert about == "The paper on the aponermin approval above"
    for el in doc.xpath("//body//*[@class]"):
        assert el.get("style"), f"<{el.tag} class={el.get('class')!r}> has no inlined style"


def test_stale_sources_in_both_footers(renderer: Renderer) -> None:
    data = approvals_digest()
    text = renderer.text(data)
    foot = text[text.index("\n--\n") :]
    assert "Sources stale (they answer, but their data has stopped moving):" in foot
    assert "  - ema-medicines: the EMA medicines file looks stale" in foot
    doc = lxml.html.document_fromstring(renderer.html(data))
    stale = [li.text_content() for li in by_class(doc, "li", "stale")]
    assert stale == [f"ema-medicines: {STALE['note']}"]
    plain = Events().add("new", pubmed("1", "A paper")).group()
    assert plain.stale == [] and "stale" not in renderer.text(plain)
    assert not by_class(lxml.html.document_fromstring(renderer.html(plain)), "li", "stale")
