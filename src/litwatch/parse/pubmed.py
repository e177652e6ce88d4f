"""PubmedArticleSet XML (efetch, db=pubmed, retmode=xml) → `Record`s.

Pure and streaming: `lxml.etree.iterparse` with no network, no DTD loading and no
entity expansion, clearing each article once read, so memory stays flat however long
the input. Element names follow the PubMed DTD (pubmed_250101.dtd)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import IO

from lxml import etree

from ..errors import ParseError
from ..records import PUBMED, Link, Record

log = logging.getLogger(__name__)

_ARTICLE_TAGS = ("PubmedArticle", "PubmedBookArticle")
_ROOTS = ("PubmedArticleSet", "eFetchResult", "ERROR")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def parse_pubmed(
    data: bytes | IO[bytes], *, what: str = "efetch", problems: list[str] | None = None
) -> Iterator[Record]:
    """Yield one `Record` per PubmedArticle / PubmedBookArticle.

    A record that cannot be read is reported (in `problems` and the log) with its PMID
    and skipped. A document that is not well-formed or not a PubmedArticleSet raises
    `ParseError`: records yielded before the break are from a broken response too, so
    callers must treat the whole response as failed."""
    stream: IO[bytes] = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    head = stream.read(4096)
    if b"<!ENTITY" in head:
        raise ParseError(f"{what}: refusing XML with entity declarations (possible entity-expansion attack)")
    stream = _Rejoin(head, stream)  # type: ignore[assignment]
    context = etree.iterparse(
        stream,
        events=("start", "end"),
        tag=(*_ROOTS, *_ARTICLE_TAGS),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    root_seen = False
    try:
        for event, elem in context:
            tag = elem.tag
            if event == "start":
                if tag in _ROOTS and not root_seen:
                    root_seen = True
                    if tag != "PubmedArticleSet":
                        root_seen = False
                continue
            if tag == "ERROR":
                raise ParseError(f"{what}: E-utilities error: {' '.join(''.join(elem.itertext()).split())}")
            if tag not in _ARTICLE_TAGS:
                continue
            try:
                record = _book(elem) if tag == "PubmedBookArticle" else _article(elem)
            except Exception as e:  # noqa: BLE001 - one odd record must not sink the batch
                pmid = elem.findtext(".//PMID") or "?"
                message = f"{what}: skipped PMID {pmid}: cannot read it ({type(e).__name__}: {e})"
                log.warning("%s", message)
                if problems is not None:
                    problems.append(message)
                record = None
            _release(elem)
            if record is not None:
                yield record
    except etree.XMLSyntaxError as e:
        raise ParseError(f"{what}: malformed XML: {e}") from None
    if not root_seen:
        raise ParseError(f"{what}: the response is not a PubmedArticleSet")


class _Rejoin(io.RawIOBase):
    """A stream that first replays `head` (already read for sniffing), then the rest."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            out, self._head = (
                (self._head, b"")
                if size < 0 or size >= len(self._head)
                else (
                    self._head[:size],
                    self._head[size:],
                )
            )
            return out
        return self._rest.read(size)


def _release(elem: etree._Element) -> None:
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _text(elem: etree._Element | None) -> str:
    """All text inside, inline markup (<i>, <sup>, MathML) kept as text, whitespace folded."""
    if elem is None:
        return ""
    if len(elem) == 0:  # no inline markup (most elements): skip the itertext walk
        text = elem.text
        return " ".join(text.split()) if text else ""
    return " ".join("".join(elem.itertext()).split())


def _firsts(elem: etree._Element) -> dict[object, etree._Element]:
    """tag → the first child with that tag (what `elem.find(tag)` gives), in one pass:
    several `find` calls cost more than one walk over the children."""
    out: dict[object, etree._Element] = {}
    for c in elem:
        if c.tag not in out:
            out[c.tag] = c
    return out


def _ftext(firsts: dict[object, etree._Element], tag: str) -> str:
    """`elem.findtext(tag) or ""` over `_firsts(elem)`."""
    e = firsts.get(tag)
    return (e.text or "") if e is not None else ""


def _texts(parent: etree._Element | None, path: str) -> tuple[str, ...]:
    if parent is None:
        return ()
    return tuple(t for t in (_text(e) for e in parent.iterfind(path)) if t)


def _article(elem: etree._Element) -> Record:
    # `_firsts(x).get(tag)` is `x.find(tag)`, one walk over the children instead of a
    # find per field (bench/RESULTS.md: find calls were most of the parse time)
    top = _firsts(elem)
    mc = top.get("MedlineCitation")
    if mc is None:
        raise ValueError("no MedlineCitation")
    m = _firsts(mc)
    pmid = _ftext(m, "PMID").strip()
    if not pmid:
        raise ValueError("no PMID")
    art = m.get("Article")
    if art is None:
        raise ValueError("no Article")
    pd = top.get("PubmedData")
    a = _firsts(art)
    journal = a.get("Journal")
    ji = journal.find("JournalIssue") if journal is not None else None
    j = _firsts(ji) if ji is not None else {}
    return Record(
        source=PUBMED,
        key=pmid,
        title=_text(a.get("ArticleTitle")) or _text(a.get("VernacularTitle")),
        abstract=_abstract(a.get("Abstract")),
        authors=_authors(a.get("AuthorList")),
        journal=_journal(journal, mc),
        volume=_ftext(j, "Volume").strip(),
        issue=_ftext(j, "Issue").strip(),
        pages=_pages(a.get("Pagination")),
        pub_date=_pub_date(j.get("PubDate")),
        article_date=_iso(a.get("ArticleDate")),
        entrez_date=_history_date(pd, "entrez"),
        pubmed_date=_history_date(pd, "pubmed"),
        doi=_doi(pd, art),
        pmcid=_article_id(pd, "pmc"),
        pubtypes=_texts(art, "PublicationTypeList/PublicationType"),
        links=_links(m.get("CommentsCorrectionsList")),
        mesh=_mesh(m.get("MeshHeadingList")),
        keywords=_texts(mc, "KeywordList/Keyword"),
        status=mc.get("Status", ""),
        pub_status=(pd.findtext("PublicationStatus") or "").strip() if pd is not None else "",
    )


def _book(elem: etree._Element) -> Record:
    doc = elem.find("BookDocument")
    if doc is None:
        raise ValueError("no BookDocument")
    pmid = (doc.findtext("PMID") or "").strip()
    if not pmid:
        raise ValueError("no PMID")
    book = doc.find("Book")
    pd = elem.find("PubmedBookData")
    title = _text(doc.find("ArticleTitle")) or (_text(book.find("BookTitle")) if book is not None else "")
    return Record(
        source=PUBMED,
        key=pmid,
        title=title,
        abstract=_abstract(doc.find("Abstract")),
        authors=_authors(doc.find("AuthorList")) or (_authors(book.find("AuthorList")) if book is not None else ()),
        journal=_text(book.find("BookTitle")) if book is not None else "",
        pub_date=_pub_date(book.find("PubDate")) if book is not None else "",
        entrez_date=_history_date(pd, "entrez"),
        pubmed_date=_history_date(pd, "pubmed"),
        doi=_article_id(pd, "doi") or _article_id(doc, "doi"),
        pmcid=_article_id(pd, "pmc"),
        pubtypes=_texts(doc, "PublicationType"),
        links=_links(doc.find("CommentsCorrectionsList")),
        keywords=_texts(doc, "KeywordList/Keyword"),
        pub_status=(pd.findtext("PublicationStatus") or "").strip() if pd is not None else "",
    )


def _abstract(abstract: etree._Element | None) -> str:
    if abstract is None:
        return ""
    parts = []
    for at in abstract.iterfind("AbstractText"):
        text = _text(at)
        label = at.get("Label")
        if label and text:
            parts.append(f"{label}: {text}")
        elif text:
            parts.append(text)
    return "\n".join(parts)


def _authors(alist: etree._Element | None) -> tuple[str, ...]:
    if alist is None:
        return ()
    out = []
    for a in alist.iterfind("Author"):
        if a.get("ValidYN", "Y") == "N":
            continue
        f = _firsts(a)
        collective = _text(f.get("CollectiveName"))
        if collective:
            out.append(collective)
            continue
        last = _text(f.get("LastName"))
        initials = _text(f.get("Initials")) or "".join(w[0] for w in _text(f.get("ForeName")).split() if w)
        if last:
            out.append(f"{last} {initials}".strip())
    return tuple(out)


def _journal(journal: etree._Element | None, mc: etree._Element) -> str:
    if journal is not None:
        name = _text(journal.find("Title")) or _text(journal.find("ISOAbbreviation"))
        if name:
            return name
    return _text(mc.find("MedlineJournalInfo/MedlineTA"))


def _pages(pagination: etree._Element | None) -> str:
    if pagination is None:
        return ""
    pgn = _text(pagination.find("MedlinePgn"))
    if pgn:
        return pgn
    start, end = _text(pagination.find("StartPage")), _text(pagination.find("EndPage"))
    return f"{start}-{end}" if start and end else start


def _pub_date(pd: etree._Element | None) -> str:
    """PubDate as printed: Year [Month [Day]] or MedlineDate ("2023 Dec-2024 Jan")."""
    if pd is None:
        return ""
    f = _firsts(pd)
    medline = _text(f.get("MedlineDate"))
    if medline:
        return medline
    parts = [_text(f.get(t)) for t in ("Year", "Season", "Month", "Day")]
    return " ".join(p for p in parts if p)


def _iso(date: etree._Element | None) -> str:
    if date is None:
        return ""
    f = _firsts(date)
    year = _ftext(f, "Year").strip()
    month = _ftext(f, "Month").strip()
    day = _ftext(f, "Day").strip()
    if not year.isdigit():
        return ""
    m = int(month) if month.isdigit() else _MONTHS.get(month[:3].title(), 0)
    if not m:
        return year
    if not day.isdigit():
        return f"{year}-{m:02d}"
    return f"{year}-{m:02d}-{int(day):02d}"


def _history_date(pd: etree._Element | None, status: str) -> str:
    if pd is None:
        return ""
    for d in pd.iterfind("History/PubMedPubDate"):
        if d.get("PubStatus") == status:
            return _iso(d)
    return ""


def _article_id(parent: etree._Element | None, id_type: str) -> str:
    if parent is None:
        return ""
    for aid in parent.iterfind("ArticleIdList/ArticleId"):
        if aid.get("IdType") == id_type:
            return (aid.text or "").strip()
    return ""


def _doi(pd: etree._Element | None, art: etree._Element) -> str:
    doi = _article_id(pd, "doi")
    if doi:
        return doi
    for loc in art.iterfind("ELocationID"):
        if loc.get("EIdType") == "doi" and loc.get("ValidYN", "Y") == "Y":
            return (loc.text or "").strip()
    return ""


def _links(ccl: etree._Element | None) -> tuple[Link, ...]:
    if ccl is None:
        return ()
    out = []
    for cc in ccl.iterfind("CommentsCorrections"):
        ref_type = cc.get("RefType", "")
        f = _firsts(cc)
        pmid = _ftext(f, "PMID").strip()
        source = _text(f.get("RefSource"))
        out.append(Link(ref_type, pmid, source))
    return tuple(out)


def _mesh(mhl: etree._Element | None) -> tuple[str, ...]:
    if mhl is None:
        return ()
    out = []
    for mh in mhl.iterfind("MeshHeading"):
        # one pass over the children instead of find + iterfind (same result: the
        # first DescriptorName, every QualifierName in order)
        first = None
        quals = []
        for c in mh:
            tag = c.tag
            if tag == "QualifierName":
                quals.append(_text(c))
            elif tag == "DescriptorName" and first is None:
                first = c
        desc = _text(first)
        out.append("/".join([desc, *quals]) if quals else desc)
    return tuple(out)
