"""Efetch-like PubmedArticleSet corpora for the benchmarks, made from the real PubMed
files under shared/data/pubmed (NLM baseline/update excerpts, efetch answers) repeated
with fresh PMIDs. Articles are drawn so the mean is ~10 KB per record, and every one
carries what efetch gives: abstract, authors, MeSH, CommentsCorrections, references
(a ReferenceList is added from other real articles' references when one has none).

    python bench/corpus.py 10000        # writes $LITWATCH_BENCH_DIR/pubmed-10000.xml
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

from common import SHARED_DATA, WORK
from lxml import etree

HEAD = (
    b'<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n<PubmedArticleSet>\n'
)
TAIL = b"</PubmedArticleSet>\n"
PMID_MARK = b"@@PMID@@"
TARGET_MEAN = 10_000
MAX_SIZE = 25_000  # leave out the few 30-180 KB giants (huge author lists): they skew the mean


def _templates() -> list[bytes]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=False)
    seen: set[str] = set()
    arts: list[etree._Element] = []
    ref_lists: list[etree._Element] = []
    for f in sorted((SHARED_DATA / "pubmed").rglob("*.xml")):
        try:
            tree = etree.parse(str(f), parser)
        except etree.XMLSyntaxError:
            continue
        for a in tree.iter("PubmedArticle"):
            pmid = a.findtext("MedlineCitation/PMID")
            if not pmid or pmid in seen:
                continue
            seen.add(pmid)
            arts.append(a)
            rl = a.find("PubmedData/ReferenceList")
            if rl is not None and len(rl) >= 10:
                ref_lists.append(rl)
    if not arts:
        raise SystemExit(f"no PubMed files under {SHARED_DATA / 'pubmed'}")
    dtd = _dtd()
    rng = random.Random(7)
    refs = [r for rl in ref_lists for r in rl.iterfind("Reference")]
    out = []
    for a in arts:
        if a.find("MedlineCitation/Article/Abstract") is None or a.find("MedlineCitation/Article/AuthorList") is None:
            continue  # efetch-like means abstracts and authors
        a = copy.deepcopy(a)
        a.tail = "\n"
        mc = a.find("MedlineCitation")
        mc.find("PMID").text = PMID_MARK.decode()
        pd = a.find("PubmedData")
        if pd is None:
            pd = etree.SubElement(a, "PubmedData")
        for aid in pd.iterfind("ArticleIdList/ArticleId"):
            if aid.get("IdType") == "pubmed":
                aid.text = PMID_MARK.decode()
            elif aid.get("IdType") == "doi":  # each copy is its own paper: its own DOI and PMCID
                aid.text = "10.5555/bench." + PMID_MARK.decode()
            elif aid.get("IdType") == "pmc":
                aid.text = "PMC" + PMID_MARK.decode()
        for loc in a.iterfind("MedlineCitation/Article/ELocationID"):
            if loc.get("EIdType") == "doi":
                loc.text = "10.5555/bench." + PMID_MARK.decode()
        if pd.find("ReferenceList") is None and refs:
            # references as efetch gives them, until the record reaches a size typical
            # of a recent article (5-11 KB)
            rl = etree.SubElement(pd, "ReferenceList")
            target = rng.randint(5_000, 11_000)
            size = len(etree.tostring(a))
            while size < target:
                ref = copy.deepcopy(rng.choice(refs))
                rl.append(ref)
                size += len(etree.tostring(ref))
        if dtd is not None and not dtd.validate(
            etree.fromstring(
                b"<PubmedArticleSet>" + etree.tostring(a).replace(PMID_MARK, b"1") + b"</PubmedArticleSet>"
            )
        ):
            continue  # an old-format record (e.g. DateCreated): today's efetch would not return it
        b = etree.tostring(a, encoding="utf-8")
        if len(b) <= MAX_SIZE:
            out.append(b)
    return out


def _dtd() -> etree.DTD | None:
    """The pubmed_250101 DTD Biopython ships (offline), to keep only records valid today."""
    try:
        import Bio.Entrez
    except ImportError:
        return None
    path = Path(Bio.Entrez.__file__).parent / "DTDs" / "pubmed_250101.dtd"
    return etree.DTD(str(path)) if path.exists() else None


def _weights(sizes: list[int]) -> list[float]:
    """Weights that bring the mean record size to TARGET_MEAN (exponential tilt)."""
    lo, hi = -1e-3, 1e-3
    for _ in range(60):
        t = (lo + hi) / 2
        w = [pow(2.718281828, t * s) for s in sizes]
        mean = sum(wi * s for wi, s in zip(w, sizes, strict=True)) / sum(w)
        lo, hi = (t, hi) if mean < TARGET_MEAN else (lo, t)
    return w


def build(n: int, seed: int = 1) -> Path:
    """The corpus of n records (cached); PMIDs 40000000+."""
    path = WORK / f"pubmed-{n}.xml"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    templates = _templates()
    weights = _weights([len(t) for t in templates])
    rng = random.Random(seed)
    picks = rng.choices(range(len(templates)), weights=weights, k=n)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(HEAD)
        for i, k in enumerate(picks):
            f.write(templates[k].replace(PMID_MARK, str(40_000_000 + i).encode()))
        f.write(TAIL)
    tmp.rename(path)
    return path


COMPACT_SIZE = 2_500  # the held-out first-poll corpus of issue 22: ~2.5 KB, 8 authors, abstract, MeSH
COMPACT_AUTHORS = 8


def _compact(a: bytes) -> bytes | None:
    """A template cut down to a short record as efetch gives one (None without MeSH):
    no references, exactly 8 authors (real ones, repeated if the paper has fewer, no
    affiliations), an abstract, at most 4 MeSH headings (no qualifiers) and one
    publication type; the abstract shortened towards ~2.5 KB a record."""
    el = etree.fromstring(a, etree.XMLParser(remove_blank_text=True))
    mesh = el.find("MedlineCitation/MeshHeadingList")
    if mesh is None or len(mesh) == 0:
        return None
    for heading in list(mesh)[4:]:
        mesh.remove(heading)
    for q in el.findall("MedlineCitation/MeshHeadingList/MeshHeading/QualifierName"):
        q.getparent().remove(q)
    for pt in el.findall("MedlineCitation/Article/PublicationTypeList/PublicationType")[1:]:
        pt.getparent().remove(pt)
    pd = el.find("PubmedData")
    for x in pd.findall("ReferenceList") if pd is not None else []:
        pd.remove(x)
    for x in el.findall("PubmedData/History/PubMedPubDate"):
        if x.get("PubStatus") not in ("pubmed", "entrez"):
            x.getparent().remove(x)
    for x in el.findall("MedlineCitation/CommentsCorrectionsList"):
        x.getparent().remove(x)
    for x in el.findall("MedlineCitation/KeywordList") + el.findall("MedlineCitation/ChemicalList"):
        x.getparent().remove(x)
    for x in el.findall("MedlineCitation/Article/GrantList"):
        x.getparent().remove(x)
    authors = el.find("MedlineCitation/Article/AuthorList")
    people = list(authors)
    for p in people:
        authors.remove(p)
        for aff in p.findall("AffiliationInfo"):
            p.remove(aff)
        for x in p.findall("Identifier"):
            p.remove(x)
    for i in range(COMPACT_AUTHORS):
        authors.append(copy.deepcopy(people[i % len(people)]))
    texts = el.findall("MedlineCitation/Article/Abstract/AbstractText")
    for t in texts[1:]:
        t.getparent().remove(t)
    text = "".join(texts[0].itertext())
    for child in list(texts[0]):
        texts[0].remove(child)
    texts[0].text = text
    over = len(etree.tostring(el, encoding="utf-8")) - COMPACT_SIZE
    if over > 0:
        texts[0].text = text[: max(120, len(text) - over)]
    return etree.tostring(el, encoding="utf-8") + b"\n"


def compact_articles(n: int, seed: int = 1) -> list[bytes]:
    """n short article XML strings (~2.5 KB, 8 authors, abstract, MeSH; no envelope)."""
    dtd = _dtd()
    templates = [
        c
        for c in (_compact(t) for t in _templates())
        if c is not None
        and (
            dtd is None
            or dtd.validate(etree.fromstring(b"<PubmedArticleSet>" + c.replace(PMID_MARK, b"1") + TAIL.strip()))
        )
    ]
    rng = random.Random(seed)
    return rng.choices(templates, k=n)


def articles(n: int, seed: int = 1) -> list[bytes]:
    """n article XML strings (no envelope), for the fake E-utilities server."""
    templates = _templates()
    weights = _weights([len(t) for t in templates])
    rng = random.Random(seed)
    return [t for t in rng.choices(templates, weights=weights, k=n)]


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["10000"]:
        p = build(int(arg))
        print(p, f"{p.stat().st_size / 1e6:.1f} MB")
