"""Issue 25's "done when": the example config as shipped (config/litwatch.yaml, only
its addresses pointed at the local fakes: E-utilities, the FDA press feed and the
journal feed, Drugs@FDA, the EMA medicines file, Crossref, medRxiv), polled and
digested every day of a simulated week with an injected clock. Every source carries
some of the same news — the aponermin approval (press release, then Drugs@FDA), its
paper (a medRxiv preprint, then the journal feed and medRxiv's "published in", then
PubMed), the paper's erratum (PubMed, then the publisher through Crossref), and the
retraction of another paper (PubMed, then Retraction Watch through Crossref) — and each
digest mails each work's news exactly once."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest

from helpers import TODAY
from helpers.fake_biorxiv import FakeBiorxiv
from helpers.fake_crossref import FakeCrossref
from helpers.fake_eutils import FakeEutils
from helpers.fake_openfda import FakeOpenFda
from helpers.feedhost import FeedHost
from litwatch.config import load
from litwatch.service import Service
from test_changes import NOTICE_TERM, messages
from test_example_approvals import DATA, EMPTY_RSS, MYELOMA_PUBMED, ema_file, press_feed, trailnova, user_config
from test_polls_crossref import RETRACTED, RETRACTION, WORKS

TRAIL_PUBMED = (
    '(TRAIL[tiab] OR aponermin[tiab] OR "death receptor 5"[tiab] OR DR5[tiab] OR TNFSF10[tiab]) '
    "AND (agonist*[tiab] OR antibod*[tiab])"
)
PAPER_DOI = "10.1182/blood.2026012345"
PAPER = "Aponermin plus dexamethasone in relapsed multiple myeloma: a randomised phase 3 trial"
PREPRINT = "Aponermin plus dexamethasone in relapsed or refractory multiple myeloma: a phase 3 trial"
PREPRINT_DOI = "10.1101/2026.12.01.26301234"
ERRATUM_DOI = "10.1182/blood.2026099999"
OTHER = "Chitosan hydrogel bandages with a TRAIL agonist antibody"


def blood_toc() -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel><title>Blood</title>'
        "<link>https://ashpublications.org/</link><description>toc</description>"
        f"<item><title>{PAPER}</title><link>https://ashpublications.org/blood/article/2026012345</link>"
        f"<guid>blood-2026012345</guid><prism:doi>{PAPER_DOI}</prism:doi>"
        "<description>Aponermin, a TRAIL receptor agonist, in relapsed myeloma.</description>"
        "<pubDate>Mon, 07 Dec 2026 10:00:00 GMT</pubDate></item></channel></rss>"
    ).encode()


def publisher_correction() -> dict[str, object]:
    """The publisher's correction of PAPER as Crossref holds it (shape of a real one)."""
    work = copy.deepcopy(WORKS["10.1088/1361-6595/ab245f"])
    work["DOI"] = ERRATUM_DOI
    work["URL"] = f"https://doi.org/{ERRATUM_DOI}"
    work["title"] = [f"Correction to: {PAPER}"]
    work["update-to"][0]["DOI"] = PAPER_DOI
    return dict(work)


class Clock:
    def __init__(self) -> None:
        self.at = datetime.combine(TODAY, time(17))

    def __call__(self) -> datetime:
        return self.at

    def day(self, n: int) -> datetime:
        return datetime.combine(TODAY, time(17)) + timedelta(days=n)


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    fake = FakeCrossref().start()
    yield fake
    fake.stop()


def _items(text: str) -> list[str]:
    """Each item of a mail as "[section] title" (the first line of each item)."""
    out, heading = [], ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.fullmatch(r"== (.+?) \(\d+\) ==", line.strip())
        if m:
            heading = m.group(1)
            continue
        if heading and line.strip() and (i == 0 or not lines[i - 1].strip()) and not line.startswith(" "):
            if line.startswith("--"):
                heading = ""
                continue
            out.append(f"[{heading}] {line.strip()}")
    return out


def test_a_simulated_week_of_the_example_config_mails_each_works_news_once(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref
) -> None:
    clock = Clock()
    approved = clock.day(0).date()
    both = {MYELOMA_PUBMED, TRAIL_PUBMED}
    with FakeOpenFda([]) as fda, FeedHost() as host, FakeBiorxiv() as preprints:
        host.feed("/press.xml", press_feed(approved))
        host.feed("/blood.xml", EMPTY_RSS)
        host.feed("/medicines.json", (DATA / "ema" / "medicines-excerpt.json").read_bytes())  # no Trailnova yet
        cfg = user_config(tmp_path, eutils, fda, host, crossref, preprints)
        svc = Service(load(cfg), now=clock)
        seen: set[Path] = set()
        week: list[tuple[int, str, str, list[str]]] = []

        def day(n: int) -> None:
            clock.at = clock.day(n)
            results = svc.poll()
            assert all(r.ok for r in results), [r.line() for r in results]
            svc.digest()
            for subject, text in messages(tmp_path / "outbox", seen):
                week.append((n, subject.split(":")[0], subject, _items(text)))

        try:
            # day 0: the FDA press release; the paper as a medRxiv preprint; another paper in PubMed
            preprints.post("medrxiv", doi=PREPRINT_DOI, title=PREPRINT, date=clock.day(0).date(), category="hematology")
            eutils.add("41000010", terms=both, edat=clock.day(0), title=OTHER, doi=RETRACTED.upper())
            day(0)
            # day 1: the paper in Blood's feed, and medRxiv says the preprint was published there
            host.feed("/blood.xml", blood_toc())
            preprints.publish("medrxiv", PREPRINT_DOI, PAPER_DOI, "Blood", clock.day(1).date())
            day(1)
            # day 2: PubMed indexes the Blood paper (same DOI)
            eutils.add("41000011", terms=both, edat=clock.day(2), title=PAPER, doi=PAPER_DOI)
            day(2)
            # day 2 too: Drugs@FDA lists the approval of day 0
            fda.add(trailnova(approved))
            day(2)
            # day 3: the EU authorises it (two more decisions: the CHMP opinion, the
            # Commission's authorisation); PubMed links the erratum
            host.feed("/medicines.json", ema_file(clock.day(-20).date(), clock.day(3).date()))
            eutils.change("41000011", mdat=clock.day(3), title=PAPER, doi=PAPER_DOI, links=(("ErratumIn", "41000012"),))
            eutils.records["41000011"].terms = both
            eutils.add(
                "41000012",
                terms=NOTICE_TERM,
                edat=clock.day(3),
                title=f"Correction to: {PAPER}",
                doi=ERRATUM_DOI,
                pubtypes=("Published Erratum",),
                links=(("ErratumFor", "41000011"),),
            )
            day(3)
            # day 4: the publisher's deposit of the same correction reaches Crossref
            crossref.add(publisher_correction(), indexed=clock.day(4).date())
            day(4)
            # day 5: PubMed links the retraction of the other paper
            eutils.change(
                "41000010",
                mdat=clock.day(5),
                title=f"RETRACTED: {OTHER}",
                doi=RETRACTED.upper(),
                pubtypes=("Journal Article", "Retracted Publication"),
                links=(("RetractionIn", "41000013"),),
            )
            eutils.records["41000010"].terms = both
            eutils.add(
                "41000013",
                terms=NOTICE_TERM,
                edat=clock.day(5),
                title=f"Retraction of: {OTHER}",
                doi=RETRACTION,
                pubtypes=("Retraction of Publication",),
                links=(("RetractionOf", "41000010"),),
            )
            day(5)
            # day 6: Retraction Watch's entry for it reaches Crossref
            crossref.add(WORKS[RETRACTED], indexed=clock.day(6).date())
            crossref.add(WORKS[RETRACTION], indexed=clock.day(6).date())
            day(6)
            day(7)
        finally:
            svc.close()
    print()
    for n, to, subject, items in week:
        print(f"day {n} → {to}: {subject}")
        for item in items:
            print(f"    {item}")
    weekly = [i for _, digest, _, items in week if digest == "weekly-myeloma" for i in items]
    daily = [i for _, digest, _, items in week if digest == "safety-daily" for i in items]

    def count(items: list[str], *words: str) -> int:
        return sum(all(w.lower() in i.lower() for w in words) for i in items)

    # weekly-myeloma: every work's news once, nothing twice
    assert len(weekly) == len(set(weekly)), weekly
    assert count(weekly, "[New papers]", PAPER[:40]) == 1, weekly  # the preprint: the paper's arrival
    assert count(weekly, "[Updates]", "Aponermin") == 1, weekly  # ... and its journal version, once
    assert count(weekly, "[New papers]", OTHER[:30]) == 1, weekly
    assert count(weekly, "[Approvals]", "aponermin") == 3, weekly  # FDA; EU opinion; EU authorisation
    assert count(weekly, "[Approvals]", "FDA approves aponermin") == 1, weekly
    assert count(weekly, "[Approvals]", "CHMP opinion", "Trailnova") == 1, weekly
    assert count(weekly, "[Approvals]", "EU authorisation", "Trailnova") == 1, weekly
    assert count(weekly, "[Errata", PAPER[:40]) == 1, weekly
    assert count(weekly, "[Errata", OTHER[:30]) == 1, weekly
    assert count(weekly, "[Updates]") == 1, weekly
    # safety-daily (approvals, errata, retractions, concerns): the same, without new papers
    assert len(daily) == len(set(daily)), daily
    assert [i for i in daily if "aponermin" in i.lower() or "trailnova" in i.lower() or OTHER[:30] in i] == [
        i for i in weekly if not i.startswith(("[New papers]", "[Updates]"))
    ], (daily, weekly)
