"""The PubMed parser on real efetch files (../shared/data) and small hand-made XML."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from helpers.fake_eutils import article_xml
from litwatch.errors import ParseError
from litwatch.parse.pubmed import parse_pubmed


def wrap(*articles: str) -> bytes:
    return ("<?xml version='1.0'?><PubmedArticleSet>" + "".join(articles) + "</PubmedArticleSet>").encode()


def test_all_real_files_parse(shared_data: Path) -> None:
    total = 0
    for path in sorted((shared_data / "pubmed").rglob("*.xml")):
        problems: list[str] = []
        records = list(parse_pubmed(path.read_bytes(), problems=problems))
        total += len(records)
        for r in records:
            assert r.key.isdigit(), (path, r.key)
    assert total > 200


def test_real_record_fields(shared_data: Path) -> None:
    (r,) = parse_pubmed((shared_data / "pubmed/metapub/38270460.xml").read_bytes())
    assert r.key == "38270460"
    assert r.title == "The mTORC2 signaling network: targets and cross-talks."
    assert r.authors == ("Ragupathi A", "Kim C", "Jacinto E")
    assert r.journal == "The Biochemical journal"
    assert (r.volume, r.issue, r.pages) == ("481", "2", "45-91")
    assert r.doi == "10.1042/BCJ20220325" and r.pmcid == "PMC10903481"
    assert r.entrez_date == "2024-01-25" and r.pub_date == "2024 Jan 25"
    assert "Review" in r.pubtypes and "Sirolimus" in r.mesh and "mTORC2" in r.keywords
    assert r.status == "MEDLINE" and r.pub_status == "ppublish"


def test_comments_corrections_read(shared_data: Path) -> None:
    links = {}
    for path in (shared_data / "pubmed").rglob("*.xml"):
        for r in parse_pubmed(path.read_bytes()):
            for lk in r.links:
                links.setdefault(lk.ref_type, set()).add(r.key)
    # MANIFEST.txt recount: ErratumIn 16, RetractionIn 3, RetractionOf 2, ExpressionOfConcernIn 1
    assert len(links["ErratumIn"]) >= 10
    assert len(links["RetractionIn"]) == 3
    assert len(links["RetractionOf"]) == 2
    assert len(links["ExpressionOfConcernIn"]) == 1


def test_inline_markup_kept_as_text_and_structured_abstract() -> None:
    xml = wrap(
        article_xml("1", title="x").replace(
            "<ArticleTitle>x</ArticleTitle>",
            "<ArticleTitle>Role of <i>TP53</i> in CO<sub>2</sub>\n  sensing</ArticleTitle>"
            '<Abstract><AbstractText Label="BACKGROUND">Why.</AbstractText><AbstractText Label="RESULTS">What <b>now</b>.</AbstractText></Abstract>',
        )
    )
    (r,) = parse_pubmed(xml)
    assert r.title == "Role of TP53 in CO2 sensing"
    assert r.abstract == "BACKGROUND: Why.\nRESULTS: What now."


def test_collective_author_and_medline_date() -> None:
    xml = (
        article_xml("2", authors=("Smith J",))
        .replace("</AuthorList>", "<Author><CollectiveName>MM Study Group</CollectiveName></Author></AuthorList>")
        .replace(
            "<PubDate><Year>2026</Year><Month>Jan</Month></PubDate>",
            "<PubDate><MedlineDate>2023 Dec-2024 Jan</MedlineDate></PubDate>",
        )
    )
    (r,) = parse_pubmed(wrap(xml))
    assert r.authors == ("Smith J", "MM Study Group")
    assert r.pub_date == "2023 Dec-2024 Jan"


def test_book_article_does_not_crash() -> None:
    book = (
        '<PubmedBookArticle><BookDocument><PMID Version="1">20301295</PMID>'
        '<ArticleIdList><ArticleId IdType="bookaccession">NBK1116</ArticleId></ArticleIdList>'
        "<Book><Publisher><PublisherName>UW</PublisherName></Publisher><BookTitle>GeneReviews</BookTitle>"
        "<PubDate><Year>1993</Year></PubDate></Book><ArticleTitle>Myeloma genetics</ArticleTitle>"
        "<AuthorList><Author><LastName>Adam</LastName><Initials>MP</Initials></Author></AuthorList>"
        '<PublicationType UI="D000">Review</PublicationType></BookDocument>'
        '<PubmedBookData><History><PubMedPubDate PubStatus="entrez"><Year>2010</Year><Month>3</Month><Day>20</Day></PubMedPubDate></History>'
        '<PublicationStatus>ppublish</PublicationStatus><ArticleIdList><ArticleId IdType="pubmed">20301295</ArticleId></ArticleIdList></PubmedBookData>'
        "</PubmedBookArticle>"
    )
    (r,) = list(parse_pubmed(wrap(book)))
    assert r.key == "20301295" and r.title == "Myeloma genetics" and r.journal == "GeneReviews"
    assert r.authors == ("Adam MP",) and r.entrez_date == "2010-03-20"


def test_unreadable_record_is_skipped_and_reported() -> None:
    broken = "<PubmedArticle><MedlineCitation><PMID>99</PMID></MedlineCitation></PubmedArticle>"
    problems: list[str] = []
    records = list(parse_pubmed(wrap(article_xml("1"), broken, article_xml("2")), problems=problems))
    assert [r.key for r in records] == ["1", "2"]
    assert problems == ["efetch: skipped PMID 99: cannot read it (ValueError: no Article)"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<PubmedArticleSet><PubmedArticle><MedlineCitation>", "malformed XML"),
        (b"<html><body>Service unavailable</body></html>", "not a PubmedArticleSet"),
        (b"", "malformed XML"),
        (b"<eFetchResult><ERROR>Invalid WebEnv</ERROR></eFetchResult>", "E-utilities error: Invalid WebEnv"),
    ],
)
def test_bad_documents_raise_parse_error(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        list(parse_pubmed(body))


def test_entity_bomb_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        + b"".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">'.encode() for i in range(3, 10))
        + b"]><PubmedArticleSet><PubmedArticle>&lol9;</PubmedArticle></PubmedArticleSet>"
    )
    with pytest.raises(ParseError, match="entity"):
        list(parse_pubmed(bomb))


def test_streams_from_file_object_with_flat_memory() -> None:
    import tracemalloc

    def corpus(n: int) -> bytes:
        return wrap(*(article_xml(str(i), abstract="word " * 800) for i in range(1, n + 1)))

    peaks = []
    for n in (100, 1000):
        data = corpus(n)
        tracemalloc.start()
        count = sum(1 for _ in parse_pubmed(io.BytesIO(data)))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    assert peaks[1] < peaks[0] * 3  # 10x the input, nowhere near 10x the memory
