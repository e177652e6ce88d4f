"""approvals.py: press-release items that announce an approval, on the real FDA recalls
feed (../shared/data), the FDA-style test feed and hand-written titles; and the event kind
of regulatory records."""

from __future__ import annotations

from pathlib import Path

import pytest

from litwatch.approvals import announces_approval, approval_phrase, event_kind
from litwatch.parse.feeds import parse_feed
from litwatch.records import Record

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
