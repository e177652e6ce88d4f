"""What a digest looks like: `litwatch.digest.group` + `Renderer` on fixed events.

The plain-text part is compared with golden files in tests/golden/ (subject line first,
then the text part), rendered from fixed data with a fixed `now` and version. After a
deliberate change to digest.txt or the grouping, rewrite them and review the diff:

    LITWATCH_UPDATE_GOLDEN=1 python3 -m pytest tests/test_render.py
    git diff tests/golden/

The HTML part is checked for structure with lxml: sections in order, links, nothing
loaded from outside, no script, width, inlined styles, escaping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.digest import DigestData, Renderer, group
from litwatch.errors import ConfigError
from litwatch.records import PUBMED, PendingEvent, Record

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("LITWATCH_UPDATE_GOLDEN") == "1"
NOW = datetime(2025, 3, 10, 7, 0)
NASTY = "<script>alert(1)</script> & \"double\" 'single'"

ABSTRACT_OLD = (
    "BACKGROUND: Death receptor 5 agonists have shown limited single-agent activity in relapsed multiple "
    "myeloma. METHODS: Patients with relapsed or refractory multiple myeloma after at least three prior lines "
    "received aponermin with thalidomide and dexamethasone. RESULTS: The overall response rate was 27.1% and "
    "the median progression-free survival was 3.2 months. CONCLUSIONS: The combination was active."
)
ABSTRACT_NEW = ABSTRACT_OLD.replace("three prior", "two prior").replace("27.1%", "30.2%")


# ------------------------------------------------------------------------------- fixed data


def pubmed(pmid: str, title: str, **kw: Any) -> Record:
    kw.setdefault("journal", "Blood")
    kw.setdefault("pub_date", "2025 Mar 6")
    return Record(source=PUBMED, key=pmid, title=title, **kw)


class Events:
    """PendingEvents as the store hands them over, one per (record, query)."""

    def __init__(self) -> None:
        self.events: list[PendingEvent] = []
        self._ids: dict[str, int] = {}

    def add(
        self,
        kind: str,
        record: Record,
        queries: Sequence[str] = ("myeloma",),
        terms: Sequence[str] = ("multiple myeloma",),
        hours_ago: float = 1,
        detail: dict[str, Any] | None = None,
    ) -> Events:
        rid = self._ids.setdefault(f"{record.source}:{record.key}", len(self._ids) + 1)
        for q in queries:
            self.events.append(
                PendingEvent(
                    id=len(self.events) + 1,
                    record_id=rid,
                    query=q,
                    kind=kind,
                    version_n=1,
                    detail=detail or {},
                    created_at=NOW - timedelta(hours=hours_ago),
                    record=record,
                    terms=tuple(terms),
                )
            )
        return self

    def group(self, max_items: int = 100, **kw: Any) -> DigestData:
        kw.setdefault("queries", ["myeloma", "trail"])
        return group("weekly-myeloma", self.events, max_items=max_items, now=NOW, **kw)


def notice(pmid: str, title: str) -> dict[str, Any]:
    return {
        "notices": [pmid],
        "notice": {"pmid": pmid, "title": title, "url": f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"},
    }


def full_events() -> Events:
    """One of each kind, added out of order; a paper seen in PubMed and a feed; a long abstract change."""
    ev = Events()
    ev.add(
        "new",
        pubmed(
            "40000003",
            "c-FLIP degradation sensitises multiple myeloma to TRAIL-induced apoptosis",
            authors=("Fernández-Sánchez L", "Rossi G", "Kühn T", "Okafor C"),
            journal="Cell Death & Disease",
            volume="16",
            issue="1",
            pages="152",
            doi="10.1038/s41419-025-07433-1",
        ),
        queries=("myeloma", "trail"),
        terms=("TRAIL", "multiple myeloma"),
        hours_ago=50,
    )
    ev.add(
        "update",
        pubmed(
            "39811204",
            "Aponermin plus thalidomide and dexamethasone in relapsed or refractory multiple myeloma",
            authors=("Xia Z", "Leng Y", "Fang B", "Li W"),
            journal="Journal of Hematology & Oncology",
            pub_date="2025 Feb 14",
            doi="10.1186/s13045-025-01644-0",
            abstract=ABSTRACT_NEW,
        ),
        queries=("trail", "myeloma"),
        terms=("aponermin",),
        hours_ago=30,
        detail={
            "changes": [
                ["abstract", ABSTRACT_OLD, ABSTRACT_NEW],
                ["authors", ["Xia Z", "Leng Y", "Li W"], ["Xia Z", "Leng Y", "Fang B", "Li W"]],
                ["doi", "", "10.1186/s13045-025-01644-0"],
            ]
        },
    )
    ev.add(
        "retraction",
        pubmed(
            "37140022",
            "RETRACTED: TRAIL-R2 agonism synergises with venetoclax",
            authors=("Kowalski P",),
            journal="Oncogene",
            pub_date="2023 Jun",
            doi="10.1038/s41388-023-02701-5",
            pubtypes=("Journal Article", "Retracted Publication"),
        ),
        queries=("trail",),
        terms=("TRAIL-R2",),
        hours_ago=70,
        detail={
            **notice("40022119", "Retraction Note: TRAIL-R2 agonism synergises with venetoclax"),
            "changes": [
                [
                    "title",
                    "TRAIL-R2 agonism synergises with venetoclax",
                    "RETRACTED: TRAIL-R2 agonism synergises with venetoclax",
                ]
            ],
        },
    )
    ev.add(
        "approval",
        pubmed("40011873", "Aponermin: First Approval", authors=("Lamb YN",), journal="Drugs", doi="10.1007/apo"),
        queries=("trail",),
        terms=("aponermin",),
        hours_ago=150,
    )
    ev.add(
        "erratum",
        pubmed(
            "39876543",
            "Iberdomide maintenance after autologous transplantation",
            authors=("van de Donk NWCJ", "Popat R"),
            journal="The Lancet Haematology",
            doi="10.1016/S2352-3026(24)00334-0",
        ),
        hours_ago=20,
        detail=notice("40050210", "Correction to Lancet Haematol 2025; 12: e30-42"),
    )
    ev.add(
        "concern",
        pubmed(
            "36512871",
            "Mapatumumab restores TRAIL sensitivity of plasma cells",
            authors=("Haddad R", "Mercier F"),
            doi="10.1158/1535-7163.MCT-22-0311",
        ),
        queries=("trail",),
        terms=("TRAIL",),
        hours_ago=40,
        detail={"notices": ["40031502"]},  # the notice itself not stored yet: PMID only
    )
    feed_entry = Record(
        source="feed:blood-first-edition",
        key="blood-2025-027114",
        title="Sequencing T-cell redirecting therapies in myeloma: a decision model",
        authors=("Mateos MV", "Rodríguez-Otero P"),
        journal="Blood (First Edition)",
        pub_date="2025 Mar 9",
        url="https://ashpublications.org/blood/article/doi/10.1182/blood.2025027114",
    )
    ev.add("new", feed_entry, hours_ago=10)
    # the same paper in a feed and in PubMed: one item, PubMed metadata, both links
    both = dict(doi="10.1182/blood.2024026411", journal="Blood", pub_date="2025 Mar 6")
    ev.add(
        "new",
        Record(
            source="feed:blood",
            key="b-26411",
            title="DR5 clustering (feed title)",
            url="https://ashpublications.org/b-26411",
            **both,
        ),
        hours_ago=9,
    )
    ev.add(
        "new", pubmed("40000009", "DR5 clustering in myeloma cells", authors=("Zhang Y", "Liu H"), **both), hours_ago=8
    )
    return ev


def full_digest() -> DigestData:
    failing = [
        {
            "name": "feed:blood-first-edition",
            "since": NOW - timedelta(days=3, hours=5),
            "error": "HTTP 503 Service Unavailable from ashpublications.org",
        },
        {"name": "myeloma (pubmed)", "since": NOW - timedelta(hours=2), "error": "connection refused"},
    ]
    return full_events().group(failing=failing, config="/etc/litwatch/litwatch.yaml")


def minimal_digest() -> DigestData:
    entry = Record(source="feed:fda", key="x1", title="FDA approves something", url="https://www.fda.gov/x1")
    return Events().add("approval", entry, terms=()).group(queries=["myeloma"])


@pytest.fixture
def renderer() -> Renderer:
    r = Renderer()
    r.env.globals["version"] = "0.0.test"  # golden files outlive version bumps
    return r


def parse(html: str) -> Any:
    return lxml.html.document_fromstring(html)


def by_class(doc: Any, tag: str, name: str) -> list[Any]:
    return list(doc.xpath(f".//{tag}[contains(concat(' ', normalize-space(@class), ' '), ' {name} ')]"))


# ------------------------------------------------------------------------------- text part


@pytest.mark.parametrize("name, build", [("full", full_digest), ("minimal", minimal_digest)], ids=["full", "minimal"])
def test_text_matches_golden(renderer: Renderer, name: str, build: Any) -> None:
    data = build()
    got = f"Subject: {renderer.subject(data)}\n\n{renderer.text(data)}"
    path = GOLDEN / f"digest-{name}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert got == path.read_text(encoding="utf-8"), f"rerun with LITWATCH_UPDATE_GOLDEN=1 if {path.name} should change"


def test_text_lines_fit_a_terminal_except_urls(renderer: Renderer) -> None:
    for line in renderer.text(full_digest()).splitlines():
        assert len(line) <= 76 or "https://" in line, line


# ------------------------------------------------------------------------------- HTML part


def test_html_sections_in_order_with_linked_items(renderer: Renderer) -> None:
    data = full_digest()
    doc = parse(renderer.html(data))
    titles = [h.text_content() for h in doc.xpath("//td/h2")]
    assert titles == ["Approvals (1)", "Errata, retractions and concerns (3)", "New papers (3)", "Updates (1)"]
    items = by_class(doc, "div", "item")
    expected = [i for s in data.sections for i in s.items]
    assert len(items) == len(expected) == 8
    for div, item in zip(items, expected, strict=True):
        link = div.xpath(".//p[contains(@class, 'title')]/a")[0]
        assert link.text_content() == item.record.title
        pmid = item.record.pmid
        want = f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" if pmid else item.record.url
        assert link.get("href") == want
        hrefs = [a.get("href") for a in div.xpath(".//p[contains(@class, 'links')]/a")]
        if item.record.doi:
            assert f"https://doi.org/{item.record.doi}" in hrefs
        why = by_class(div, "p", "why")[0].text_content()
        assert all(q in why for q in item.queries) and all(t in why for t in item.terms)
    merged = items[6]  # the paper seen in a feed and in PubMed
    assert [a.text_content() for a in merged.xpath(".//p[contains(@class, 'links')]/a")] == ["PubMed", "DOI", "blood"]


def test_html_header_and_footer(renderer: Renderer) -> None:
    doc = parse(renderer.html(full_digest()))
    head = by_class(doc, "td", "head")[0].text_content()
    assert "weekly-myeloma" in head and "2025-03-04 – 2025-03-10" in head and "8 items" in head
    counts = by_class(doc, "td", "counts")[0].text_content()
    assert counts == "1 approval, 1 erratum, 1 retraction, 1 expression of concern, 3 new papers, 1 update"
    foot = " ".join(by_class(doc, "td", "foot")[0].text_content().split())
    assert "feed:blood-first-edition: failing since 2025-03-07 (3 days)" in foot
    assert "myeloma (pubmed): failing since 2025-03-10 (less than a day): connection refused" in foot
    assert "queries myeloma, trail, config /etc/litwatch/litwatch.yaml" in foot


def test_html_changes_show_old_and_new(renderer: Renderer) -> None:
    doc = parse(renderer.html(full_digest()))
    changes = {c.xpath("./span[@class='field']")[0].text: c for c in by_class(doc, "div", "change")}
    abstract = changes["abstract"]
    assert [d.text for d in abstract.xpath(".//del")] == ["three", "27.1%"]
    assert [i.text for i in abstract.xpath(".//ins")] == ["two", "30.2%"]
    assert "…" in abstract.text_content() and "BACKGROUND" not in abstract.text_content()  # compact
    assert [i.text for i in changes["authors"].xpath(".//ins")] == ["Fang B"]
    assert not changes["authors"].xpath(".//del")
    assert by_class(changes["doi"], "span", "none") and not changes["doi"].xpath(".//del")
    title = changes["title"]
    assert by_class(title, "span", "old")[0].text == "TRAIL-R2 agonism synergises with venetoclax"
    assert by_class(title, "span", "new")[0].text.startswith("RETRACTED: ")


def test_html_is_safe_for_mail_clients(renderer: Renderer) -> None:
    html = renderer.html(full_digest())
    doc = parse(html)
    assert not doc.xpath("//script | //link | //img | //iframe | //object | //embed | //form | //base")
    assert not doc.xpath("//@src | //@background | //@srcset")
    for href in doc.xpath("//@href"):
        assert href.startswith("https://"), href
    css = " ".join(doc.xpath("//style/text()")) + " ".join(doc.xpath("//@style"))
    assert "url(" not in css and "@import" not in css
    main = by_class(doc, "table", "main")[0]
    assert int(main.get("width")) <= 640
    assert re.search(r"max-width:\s*640px", main.get("style"))
    assert doc.xpath("//meta[@name='viewport']")


def test_html_styles_are_inlined_and_dark_mode_stays_in_style(renderer: Renderer) -> None:
    doc = parse(renderer.html(full_digest()))
    for el in doc.xpath("//body//*[@class]"):
        assert el.get("style"), f"<{el.tag} class={el.get('class')!r}> has no inlined style"
    assert "color" in doc.xpath("//p[contains(@class, 'title')]/a")[0].get("style")
    assert "background" in by_class(doc, "td", "head")[0].get("style")
    assert "line-through" in doc.xpath("//del")[0].get("style")
    style = "".join(doc.xpath("//head/style/text()"))
    dark = style[style.index("@media (prefers-color-scheme: dark)") :]
    assert dark.count("!important") >= 10
    assert "#171d25" not in " ".join(doc.xpath("//@style"))  # dark colours are not inlined


# ------------------------------------------------------------------------------- escaping


def nasty_digest() -> DigestData:
    title = f"TRAIL {NASTY} in myeloma"
    return (
        Events()
        .add(
            "update",
            pubmed(
                "1",
                title,
                authors=(f"O'Brien {NASTY}", "Smith & Wesson"),
                journal=f"J {NASTY}",
                abstract=NASTY * 20,
            ),
            terms=(NASTY,),
            detail={"changes": [["abstract", "x " * 100, f"x {NASTY} " * 50], ["title", "old", title]]},
        )
        .add("erratum", pubmed("2", "plain"), detail=notice("3", f"Erratum {NASTY}"))
        .group()
    )


def test_markup_in_records_is_text_in_html(renderer: Renderer) -> None:
    html = renderer.html(nasty_digest())
    assert "<script>" not in html and "alert(1)</script>" not in html
    doc = parse(html)
    assert not doc.xpath("//script")
    erratum, update = by_class(doc, "div", "item")
    assert by_class(erratum, "p", "notice")[0].text_content() == f"Notice: Erratum {NASTY}"
    title = f"TRAIL {NASTY} in myeloma"
    assert update.xpath(".//p[contains(@class, 'title')]/a")[0].text_content() == title
    assert by_class(update, "p", "meta")[0].text_content() == f"O'Brien {NASTY}, Smith & Wesson"
    assert by_class(update, "p", "meta")[1].text_content().startswith(f"J {NASTY}. ")
    assert by_class(update, "span", "term")[0].text_content() == NASTY
    assert NASTY in update.xpath(".//ins")[0].text_content()
    assert by_class(update, "span", "new")[0].text_content() == title


def test_markup_in_records_is_verbatim_in_text(renderer: Renderer) -> None:
    text = renderer.text(nasty_digest())
    assert "[Erratum — PubMed] plain" in text
    assert f"TRAIL {NASTY} in myeloma" in text
    assert f"O'Brien {NASTY}, Smith & Wesson" in text
    assert f"Notice: Erratum {NASTY}" in text
    assert "&lt;" not in text and "&amp;" not in text and "&#39;" not in text and "&#34;" not in text


# ------------------------------------------------------------------------------- subject, cap


@pytest.mark.parametrize(
    "kinds, subject",
    [
        (["approval"], "weekly-myeloma: 1 approval"),
        (["erratum", "erratum", "new"], "weekly-myeloma: 2 errata, 1 new paper"),
        (["approval"] + ["erratum"] * 2 + ["new"] * 14, "weekly-myeloma: 1 approval, 2 errata, 14 new papers"),
        (["concern", "retraction"], "weekly-myeloma: 1 retraction, 1 expression of concern"),
        (["concern", "concern", "retraction", "retraction"], "weekly-myeloma: 2 retractions, 2 expressions of concern"),
        (["update", "new", "update"], "weekly-myeloma: 1 new paper, 2 updates"),
    ],
    ids=["one", "errata", "issue-example", "notices", "notices-plural", "updates"],
)
def test_subject_counts(renderer: Renderer, kinds: list[str], subject: str) -> None:
    ev = Events()
    for n, kind in enumerate(kinds):
        ev.add(kind, pubmed(str(100 + n), f"Paper {n}"))
    data = ev.group()
    assert renderer.subject(data) == subject
    assert renderer.subject(data, "Myeloma watch") == "Myeloma watch" + subject.removeprefix("weekly-myeloma")


@pytest.mark.parametrize("cap, waiting", [(3, "2 more items waiting"), (4, "1 more item waiting")])
def test_max_items_says_how_many_wait(renderer: Renderer, cap: int, waiting: str) -> None:
    ev = Events()
    for n in range(5):
        ev.add("new", pubmed(str(200 + n), f"Paper {n}"), queries=("myeloma", "trail"), hours_ago=10 - n)
    data = ev.group(max_items=cap)
    more = 5 - cap
    assert data.items == cap and data.more_waiting == more
    assert data.event_ids == list(range(1, 2 * cap + 1))  # the held-back items' events stay pending
    assert renderer.subject(data) == f"weekly-myeloma: {cap} new papers (+{more} more)"
    text = renderer.text(data)
    assert f"{waiting}: they follow in the next mail." in text and "Paper 4" not in text
    doc = parse(renderer.html(data))
    assert by_class(doc, "td", "more")[0].text_content() == f"{waiting}: they follow in the next mail."
    assert len(by_class(doc, "div", "item")) == cap


def test_nothing_waiting_says_nothing(renderer: Renderer) -> None:
    data = minimal_digest()
    assert "waiting" not in renderer.text(data)
    assert not by_class(parse(renderer.html(data)), "td", "more")


# ------------------------------------------------------------------------------- templates: dir


@pytest.mark.parametrize("custom", ["digest.txt", "digest.html"])
def test_config_templates_dir_overrides_one_file(tmp_path: Path, custom: str) -> None:
    (tmp_path / "mytemplates").mkdir()
    (tmp_path / "mytemplates" / custom).write_text("CUSTOM {{ d.name }}: {{ d.summary }}\n")
    cfg = basic_config(tmp_path, "http://127.0.0.1:9/", extra="templates: mytemplates")
    settings = load(cfg)
    assert settings.template_dir == tmp_path / "mytemplates"  # relative to the config file
    r = Renderer(settings.template_dir)
    data = minimal_digest()
    text, html = r.text(data), r.html(data)
    if custom == "digest.txt":
        assert text == "CUSTOM weekly-myeloma: 1 approval\n"
        assert by_class(parse(html), "table", "main")  # the package's HTML
    else:
        assert "CUSTOM weekly-myeloma: 1 approval" in html and "<table" not in html
        assert text.startswith("weekly-myeloma: 1 approval\n") and "== Approvals (1) ==" in text


def test_templates_dir_reaches_the_digest_command(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add("101", terms="TRAIL", edat=TODAY, title="Aponermin: First Approval")
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "digest.txt").write_text(
        "{% for s in d.sections %}{% for i in s.items %}MINE {{ i.record.title }}\n{% endfor %}{% endfor %}"
    )
    cfg = basic_config(tmp_path, eutils.url, extra=f"templates: {tpl}")
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "MINE Aponermin: First Approval" in r.stdout


def test_missing_templates_dir_is_a_config_error(tmp_path: Path) -> None:
    cfg = basic_config(tmp_path, "http://127.0.0.1:9/", extra="templates: nowhere")
    with pytest.raises(ConfigError, match="templates.*'nowhere' is not a directory"):
        load(cfg)


# ------------------------------------------------------------------------------- notice sources (#16)


def test_a_notice_item_names_its_source(renderer: Renderer) -> None:
    """ "Retraction — Retraction Watch", "Correction — publisher notice", "Erratum — PubMed":
    from the event's detail (`sources`, `source_label`, `label`); PubMed's events carry none."""
    from litwatch import notices as nt
    from litwatch.records import Notice

    retracted = Record(source=PUBMED, key="22334455", title="Retracted paper", doi="10.1021/am300292v")
    corrected = Record(source="feed:blood-toc", key="e-1", title="Corrected paper", doi="10.1/feed", url="https://x/1")
    rw = Notice("retraction", "retraction", retracted.doi, "10.1021/acsami.9b11759", "retraction-watch", "2019-07-26")
    fix = Notice("erratum", "correction", corrected.doi, "10.1/fix", "publisher", "2025-03-01", notice_title="Fix")
    e_rw, e_fix = nt.crossref_event(rw, retracted), nt.crossref_event(fix, corrected)
    assert e_rw is not None and e_fix is not None
    merged = {**e_rw.detail, "sources": ["Retraction Watch", "PubMed"]}  # PubMed reported it later
    d = (
        Events()
        .add("retraction", retracted, detail=merged)
        .add("erratum", corrected, detail=e_fix.detail, queries=("trail",))
        .add("erratum", Record(source=PUBMED, key="9", title="Plain erratum"), detail=notice("10", "Erratum"))
        .group()
    )
    labels = [i.label for s in d.sections for i in s.items]
    assert labels == ["Retraction — Retraction Watch, PubMed", "Correction — publisher notice", "Erratum — PubMed"]
    text = renderer.text(d)
    assert "[Retraction — Retraction Watch, PubMed] Retracted paper" in text
    assert "Notice: DOI 10.1021/acsami.9b11759 (2019-07-26)" in text
    assert "https://doi.org/10.1021/acsami.9b11759" in text
    assert "[Correction — publisher notice] Corrected paper" in text and "Notice: Fix (2025-03-01)" in text
    assert "[Erratum — PubMed] Plain erratum" in text
    doc = parse(renderer.html(d))
    badges = [b.text_content() for b in by_class(doc, "span", "badge")]
    assert "Retraction — Retraction Watch, PubMed" in badges and "Correction — publisher notice" in badges
    assert by_class(doc, "p", "notice")[0].text_content() == "Notice: DOI 10.1021/acsami.9b11759 (2019-07-26)"
