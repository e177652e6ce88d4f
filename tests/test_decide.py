"""The pure decider (`events.decide`, issue 15): what events and hits follow from what
a batch stored, on data alone — no database, no server."""

from __future__ import annotations

from dataclasses import replace

from litwatch import events as ev
from litwatch.records import PUBMED, Link, Record

PAPER = Record(source=PUBMED, key="100", title="Aponermin in relapsed myeloma", doi="10.1/abc")
NOTICE = Record(
    source=PUBMED,
    key="900",
    title="Erratum: Aponermin in relapsed myeloma",
    pubtypes=("Published Erratum",),
    links=(Link("ErratumFor", "100"),),
)


def saved(record: Record, rid: int, *, old: Record | None = None, n: int = 1) -> ev.Saved:
    if old is None:
        return ev.Saved(record, rid, n, None, [], status="created" if n == 1 else "same")
    return ev.Saved(record, rid, n, old, ev.diff(old, record), status="changed")


def kinds(plan: ev.Plan) -> list[tuple[int, str, str]]:
    return [(e["record_id"], e["query"], e["kind"]) for e in plan.events]


def test_a_first_match_is_a_hit_and_a_new_event() -> None:
    plan = ev.decide(
        saved=[saved(PAPER, 1)],
        matches={"trail": {1: ("aponermin",)}, "myeloma": {1: ("myeloma",)}},
        hits={},
        current={1: (PAPER, 1)},
    )
    assert plan.hits == [(1, "trail", ("aponermin",)), (1, "myeloma", ("myeloma",))]
    assert kinds(plan) == [(1, "trail", "new"), (1, "myeloma", "new")]
    assert {e["dedup"] for e in plan.events} == {"first:pubmed:100"}


def test_a_record_matched_before_is_no_news_again() -> None:
    plan = ev.decide(
        saved=[saved(PAPER, 1, n=1)], matches={"trail": {1: ()}}, hits={1: {"trail"}}, current={1: (PAPER, 1)}
    )
    assert plan.hits == [] and plan.events == []


def test_an_approvals_feed_and_a_notice_record() -> None:
    item = Record(source="feed:fda", key="x", title="FDA approves aponermin for myeloma")
    plan = ev.decide(
        saved=[saved(item, 2), saved(NOTICE, 3)],
        matches={"trail": {2: (), 3: ()}},
        hits={},
        current={2: (item, 1), 3: (NOTICE, 1)},
        approvals_source=True,
    )
    # the notice is matched (a hit) but is not a paper: no `new` for it
    assert [h[0] for h in plan.hits] == [2, 3]
    assert kinds(plan) == [(2, "trail", "approval")]


def test_a_change_goes_to_the_queries_that_matched_before_not_to_a_first_match() -> None:
    retracted = replace(PAPER, title="RETRACTED: Aponermin in relapsed myeloma", links=(Link("RetractionIn", "901"),))
    plan = ev.decide(
        saved=[saved(retracted, 1, old=PAPER, n=2)],
        matches={"late": {1: ()}},
        hits={1: {"trail"}},
        current={1: (retracted, 2)},
    )
    # `trail` showed the paper: a retraction; `late` sees it for the first time: new
    assert kinds(plan) == [(1, "trail", "retraction"), (1, "late", "new")]
    assert plan.events[0]["version_n"] == 2


def test_a_notice_names_its_target_for_every_query_including_a_first_hit_now() -> None:
    plan = ev.decide(
        saved=[saved(NOTICE, 3)],
        matches={"late": {1: ()}},
        hits={1: {"trail"}},
        current={1: (PAPER, 1), 3: (NOTICE, 1)},
        notices=[("erratum", 1, NOTICE)],
        first_versions={1: PAPER},
    )
    assert kinds(plan) == [(1, "late", "new"), (1, "late", "erratum"), (1, "trail", "erratum")]
    erratum = plan.events[1]
    assert erratum["dedup"] == "erratum:pubmed:100:900" and erratum["detail"]["notice"]["pmid"] == "900"


def test_a_notice_the_first_version_already_showed_is_no_news() -> None:
    corrected = replace(PAPER, links=(Link("ErratumIn", "900"),))
    plan = ev.decide(
        saved=[saved(NOTICE, 3)],
        matches={},
        hits={1: {"trail"}},
        current={1: (corrected, 1)},
        notices=[("erratum", 1, NOTICE)],
        first_versions={1: corrected},
    )
    assert plan.events == []


def test_one_notice_seen_twice_in_a_batch_is_one_event() -> None:
    # the original gaining ErratumIn and the notice itself, in one batch: one dedup key
    corrected = replace(PAPER, links=(Link("ErratumIn", "900"),))
    plan = ev.decide(
        saved=[saved(corrected, 1, old=PAPER, n=2), saved(NOTICE, 3)],
        matches={},
        hits={1: {"trail"}},
        current={1: (corrected, 2), 3: (NOTICE, 1)},
        notices=[("erratum", 1, NOTICE)],
        first_versions={1: PAPER},
    )
    assert kinds(plan) == [(1, "trail", "erratum")]
