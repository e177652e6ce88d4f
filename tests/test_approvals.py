"""approvals.py: press-release items that announce an approval, on the real FDA recalls
feed (../shared/data), the FDA-style test feed and hand-written titles; and the event kind
of regulatory records."""

from __future__ import annotations

from pathlib import Path

import pytest

from litwatch.approvals import announces_approval, approval_phrase, event_kind
from litwatch.events import classify_new, is_approval_title
from litwatch.parse.feeds import parse_feed
from litwatch.records import PUBMED, Record

FEEDS = Path(__file__).parent / "data" / "feeds"


def test_fda_style_feed_approval_yes_roundup_no() -> None:
    parsed = parse_feed((FEEDS / "fda-approvals.xml").read_bytes(), feed_name="fda-press")
    verdicts = {r.title: approval_phrase(r.title, r.abstract) for r in parsed.records}
    assert verdicts == {
        "FDA approves aponermin for relapsed or refractory multiple myeloma": "approves",
        "FDA Roundup: January 13, 2026": None,
    }


def test_real_fda_recalls_feed_has_no_approvals(shared_data: Path) -> None:
    path = shared_data / "feeds" / "regulators" / "rss-parser-kmp" / "feed-test-time.xml"
    parsed = parse_feed(path.read_bytes(), feed_name="fda-recalls")
    assert len(parsed.records) == 20
    approvals = [r.title for r in parsed.records if announces_approval(r.title, r.abstract)]
    print(f"{len(parsed.records)} recall items, {len(approvals)} taken for approvals")
    assert approvals == []


@pytest.mark.parametrize(
    "title",
    [
        "FDA Approves First Treatment for Blastic Plasmacytoid Dendritic Cell Neoplasm",
        "FDA grants accelerated approval to talquetamab for relapsed or refractory multiple myeloma",
        "FDA approval of daratumumab for newly diagnosed myeloma",
        "FDA authorizes marketing of first home test for ...",
        "European Commission grants marketing authorisation for Trailnova",
        "European Commission authorises aponermin for multiple myeloma",
        "EMA recommends approval of new treatment for multiple myeloma",
        "CHMP adopts positive opinion for elranatamab",
        "New drug approvals: January 2026",
    ],
)
def test_approval_titles(title: str) -> None:
    assert announces_approval(title), title


@pytest.mark.parametrize(
    "title",
    [
        "FDA Roundup: March 3, 2026 — FDA approves two generics",
        "Acme Pharma Issues Voluntary Nationwide Recall of FDA-approved Losartan Tablets",
        "FDA warns consumers not to use unapproved myeloma products sold online",
        "FDA Drug Safety Communication: FDA approves label changes for ...",
        "FDA withdraws approval of Pepaxto (melphalan flufenamide)",
        "EMA recommends suspension of authorisation of ...",
        "FDA issues complete response letter for aponermin",
        "Oncologic Drugs Advisory Committee to discuss approval of ...",
        "FDA declines to approve ...",
        "Refusal of the marketing authorisation for Xyz",
        "FDA alerts health care professionals about ...",
        "Drug shortage: FDA approves temporary importation",
        "Statement on myeloma research priorities",
    ],
)
def test_not_approval_titles(title: str) -> None:
    assert not announces_approval(title), title


def test_a_neutral_title_is_decided_by_the_first_sentence_of_the_summary() -> None:
    title = "A new option for patients with multiple myeloma"
    assert announces_approval(title, "Today, the U.S. Food and Drug Administration approved aponermin. More text.")
    assert not announces_approval(title, "The FDA is alerting patients to a recall. It was approved in 2019.")
    assert not announces_approval(title, "Background only. The drug was approved in 2019.")  # not the first sentence


def test_unapproved_is_not_approved() -> None:
    assert not announces_approval("Unapproved drugs sold online")


def test_event_kind_of_regulatory_records() -> None:
    def rec(kind: str) -> Record:
        return Record(source="feed:x", key="k", reg_kind=kind)

    assert event_kind(rec("new application")) == "approval"
    assert event_kind(rec("new indication")) == "approval"
    assert event_kind(rec("CHMP opinion")) == "approval"
    assert event_kind(rec("EU authorisation")) == "approval"
    for kind in ("withdrawal", "suspension", "refusal", "negative CHMP opinion", "application withdrawn"):
        assert event_kind(rec(kind)) == "update"
    assert event_kind(rec("")) is None


# --------------------------------------------------------------------------- events.classify_new


def _press(title: str, summary: str = "") -> Record:
    slug = "-".join(title.lower().split())[:60]
    return Record(
        source="feed:fda-press",
        key=slug,
        title=title,
        abstract=summary,
        pub_date="2026-01-15T21:05:00Z",
        url=f"https://www.fda.gov/news-events/press-announcements/{slug}",
    )


# Shaped like items of FDA's press-announcements RSS feed (titles and first sentences
# as FDA writes them); each mentions myeloma, so a myeloma query matches all three.
FDA_APPROVAL = _press(
    "FDA Approves First Cell-Based Gene Therapy for Adult Patients with Multiple Myeloma",
    "Today, the U.S. Food and Drug Administration approved Abecma (idecabtagene vicleucel) for the treatment of "
    "adult patients with multiple myeloma who have not responded to, or whose disease has returned after, at "
    "least four prior lines of therapy.",
)
FDA_RECALL = _press(
    "Example Pharma Issues Voluntary Nationwide Recall of Pomalidomide Capsules, Used to Treat Multiple Myeloma",
    "Example Pharma is voluntarily recalling one lot of pomalidomide capsules, 4 mg, an FDA-approved treatment "
    "for multiple myeloma, to the consumer level.",
)
FDA_ROUNDUP = _press(
    "FDA Roundup: January 13, 2026",
    "Today, the U.S. Food and Drug Administration is providing an at-a-glance summary of news from around the "
    "agency: On Monday, the FDA approved a new indication for daratumumab in multiple myeloma.",
)


def test_approvals_feed_items_are_approvals_only_when_they_announce_one() -> None:
    assert classify_new(FDA_APPROVAL, approvals_source=True) == "approval"
    assert classify_new(FDA_RECALL, approvals_source=True) == "new"  # "FDA-approved" in a recall
    assert classify_new(FDA_ROUNDUP, approvals_source=True) == "new"  # "FDA approved" inside a round-up
    # a round-up whose title even says "FDA approves" (which a paper's title rule would take)
    roundup = _press("FDA Roundup: March 3, 2026 — FDA approves two generics")
    assert is_approval_title(roundup.title) and classify_new(roundup, approvals_source=True) == "new"


def test_items_of_other_feeds_keep_the_title_rule() -> None:
    assert classify_new(FDA_RECALL) == "new"
    assert classify_new(_press("FDA Approval Summary: Idecabtagene Vicleucel")) == "approval"


def test_a_pubmed_first_approval_stays_an_approval() -> None:
    paper = Record(source=PUBMED, key="40011873", title="Aponermin: First Approval", pubtypes=("Review",))
    assert classify_new(paper) == "approval"
    assert classify_new(Record(source=PUBMED, key="1", title="Aponermin in myeloma: a phase 3 trial")) == "new"


@pytest.mark.parametrize(
    ("reg_kind", "expected"),
    [
        ("new application", "approval"),
        ("new indication", "approval"),
        ("CHMP opinion", "approval"),
        ("EU authorisation", "approval"),
        ("withdrawal", "update"),
        ("suspension", "update"),
        ("refusal", "update"),
        ("negative CHMP opinion", "update"),
        ("application withdrawn", "update"),
    ],
)
def test_structured_regulatory_records_are_their_kind(reg_kind: str, expected: str) -> None:
    title = {"approval": "FDA approval: TRAILNOVA (aponermin)", "update": "EU authorisation withdrawn: Xyz (abc)"}
    rec = Record(source="feed:fda-approvals", key="BLA761901:ORIG:1", title=title[expected], reg_kind=reg_kind)
    assert classify_new(rec) == expected
    assert classify_new(rec, approvals_source=True) == expected  # whatever the feed's flag
