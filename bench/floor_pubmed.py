"""The floor for PubMed parsing: bare `lxml.etree.iterparse` extracting the same
fields litwatch keeps (title, abstract with labels, authors, journal, volume, issue,
pages, dates, DOI, PMCID, publication types, CommentsCorrections, MeSH, keywords,
statuses), into plain dicts shaped like `Record.fields()`. No Record objects, no
per-record error handling, no entity sniffing: what a careful one-off script does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from lxml import etree

_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


def _t(e: Any) -> str:
    if e is None:
        return ""
    s = e.text if len(e) == 0 else "".join(e.itertext())
    return " ".join(s.split()) if s else ""


def _f(e: Any) -> dict[Any, Any]:
    """First child per tag, in one walk (cheaper than a find per field)."""
    out: dict[Any, Any] = {}
    for c in e:
        if c.tag not in out:
            out[c.tag] = c
    return out


def _tx(f: dict[Any, Any], tag: str) -> str:
    e = f.get(tag)
    return (e.text or "").strip() if e is not None else ""


def _iso(d: Any) -> str:
    if d is None:
        return ""
    f = _f(d)
    y, m, day = _tx(f, "Year"), _tx(f, "Month"), _tx(f, "Day")
    if not y.isdigit():
        return ""
    mi = int(m) if m.isdigit() else _MONTHS.get(m[:3].title(), 0)
    if not mi:
        return y
    return f"{y}-{mi:02d}-{int(day):02d}" if day.isdigit() else f"{y}-{mi:02d}"


def _article(el: Any) -> dict[str, Any]:
    top = _f(el)
    mc = top["MedlineCitation"]
    m = _f(mc)
    art = m["Article"]
    a = _f(art)
    pd = top.get("PubmedData")
    j = a.get("Journal")
    jf = _f(j) if j is not None else {}
    ji = jf.get("JournalIssue")
    jif = _f(ji) if ji is not None else {}
    d: dict[str, Any] = {"key": _tx(m, "PMID")}
    d["title"] = _t(a.get("ArticleTitle")) or _t(a.get("VernacularTitle"))
    parts = []
    ab = a.get("Abstract")
    for at in ab.iterfind("AbstractText") if ab is not None else ():
        text, label = _t(at), at.get("Label")
        if text:
            parts.append(f"{label}: {text}" if label else text)
    d["abstract"] = "\n".join(parts)
    authors = []
    al = a.get("AuthorList")
    for au in al if al is not None else ():
        if au.tag != "Author" or au.get("ValidYN", "Y") == "N":
            continue
        af = _f(au)
        c = _t(af.get("CollectiveName"))
        if c:
            authors.append(c)
            continue
        last = _t(af.get("LastName"))
        ini = _t(af.get("Initials")) or "".join(w[0] for w in _t(af.get("ForeName")).split())
        if last:
            authors.append(f"{last} {ini}".strip())
    d["authors"] = authors
    d["journal"] = _t(jf.get("Title")) or _t(jf.get("ISOAbbreviation")) or _t(mc.find("MedlineJournalInfo/MedlineTA"))
    d["volume"] = _tx(jif, "Volume")
    d["issue"] = _tx(jif, "Issue")
    pg = a.get("Pagination")
    pages = ""
    if pg is not None:
        pf = _f(pg)
        pages = _t(pf.get("MedlinePgn"))
        if not pages:
            s, e = _t(pf.get("StartPage")), _t(pf.get("EndPage"))
            pages = f"{s}-{e}" if s and e else s
    d["pages"] = pages
    pdate = jif.get("PubDate")
    if pdate is not None:
        pf = _f(pdate)
        d["pub_date"] = _t(pf.get("MedlineDate")) or " ".join(
            x for x in (_t(pf.get(k)) for k in ("Year", "Season", "Month", "Day")) if x
        )
    d["article_date"] = _iso(a.get("ArticleDate"))
    ids: dict[str, str] = {}
    if pd is not None:
        for h in pd.iterfind("History/PubMedPubDate"):
            st = h.get("PubStatus")
            if st in ("entrez", "pubmed") and st + "_date" not in d:
                d[st + "_date"] = _iso(h)
        for aid in pd.iterfind("ArticleIdList/ArticleId"):
            ids.setdefault(aid.get("IdType"), (aid.text or "").strip())
        d["pub_status"] = (pd.findtext("PublicationStatus") or "").strip()
    doi = ids.get("doi", "")
    if not doi:
        for loc in art.iterfind("ELocationID"):
            if loc.get("EIdType") == "doi" and loc.get("ValidYN", "Y") == "Y":
                doi = (loc.text or "").strip()
                break
    d["doi"] = doi
    d["pmcid"] = ids.get("pmc", "")
    d["pubtypes"] = [x for x in (_t(p) for p in art.iterfind("PublicationTypeList/PublicationType")) if x]
    links = []
    ccl = m.get("CommentsCorrectionsList")
    for c in ccl if ccl is not None else ():
        cf = _f(c)
        s = _t(cf.get("RefSource"))
        links.append([c.get("RefType", ""), _tx(cf, "PMID")] + ([s] if s else []))
    d["links"] = links
    mesh = []
    mhl = m.get("MeshHeadingList")
    for mh in mhl if mhl is not None else ():
        desc, quals = "", []
        for c in mh:
            if c.tag == "QualifierName":
                quals.append(_t(c))
            elif c.tag == "DescriptorName":
                desc = _t(c)
        mesh.append("/".join([desc, *quals]))
    d["mesh"] = mesh
    d["keywords"] = [x for x in (_t(k) for k in mc.iterfind("KeywordList/Keyword")) if x]
    d["status"] = mc.get("Status", "")
    return d


def _book(a: Any) -> dict[str, Any]:
    doc = a.find("BookDocument")
    book = doc.find("Book")
    d: dict[str, Any] = {"key": (doc.findtext("PMID") or "").strip()}
    d["title"] = _t(doc.find("ArticleTitle")) or _t(book.find("BookTitle") if book is not None else None)
    d["abstract"] = "\n".join(
        f"{at.get('Label')}: {_t(at)}" if at.get("Label") else _t(at)
        for at in doc.iterfind("Abstract/AbstractText")
        if _t(at)
    )
    d["journal"] = _t(book.find("BookTitle")) if book is not None else ""
    d["pubtypes"] = [x for x in (_t(p) for p in doc.iterfind("PublicationType")) if x]
    return d


def floor_parse(source: str | IO[bytes]) -> Iterator[dict[str, Any]]:
    for _, a in etree.iterparse(
        source,
        tag=("PubmedArticle", "PubmedBookArticle"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    ):
        d = _article(a) if a.tag == "PubmedArticle" else _book(a)
        a.clear(keep_tail=False)
        parent = a.getparent()
        while a.getprevious() is not None:
            del parent[0]
        yield {k: v for k, v in d.items() if v}
