"""A fake NCBI E-utilities server on 127.0.0.1 for tests: esearch (term lookup, edat and
mdat windows, usehistory, WebEnv/QueryKey, retmax), efetch (from the history server or
by id, GET or POST), fault injection (status codes with Retry-After, slow answers,
malformed XML, <ERROR>, huge bodies, records left out of an efetch answer) and a request
log with times, for checking the rate limit and that every request carries tool and email.

Like NCBI's, a record's entry (edat) and modification (mdat) dates are calendar days in
US Eastern time: pass a `datetime` to say when in New York it was entered or modified
(naive = New York wall-clock time; aware = converted), or a `date` for the Eastern day."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from .server import LocalServer

NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class FakeRecord:
    pmid: str
    xml: str
    terms: set[str]
    edat: date
    mdat: date


@dataclass
class Request:
    at: float
    method: str
    utility: str
    params: dict[str, str]
    sent: int = 0  # bytes of the answer's body


@dataclass
class Fault:
    utility: str  # "esearch", "efetch" or "*"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    huge: int = 0  # stream this many bytes of garbage
    term: str | None = None  # only for a request whose term starts with this
    datetype: str | None = None  # only for an esearch with this datetype ("edat", "mdat")
    times: int = 1  # how many requests it answers before it is gone


class FakeEutils(LocalServer):
    def __init__(self) -> None:
        self.records: dict[str, FakeRecord] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.histories: dict[str, list[str]] = {}
        self.delay = 0.0  # seconds added to every answer (a slow NCBI)
        # PMID -> how many more efetch answers leave it out (a 200 answer short of records)
        self.withhold: dict[str, int] = {}
        # NCBI's limit: a request arriving when `limit` others arrived in the second
        # before it is refused with 429 (and counted in `refused`)
        self.limit: int | None = None
        self.refused = 0
        self.lock = threading.Lock()
        self._serve(self._handler(), name="fake-eutils")

    # ---------------------------------------------------------------- control

    @property
    def url(self) -> str:
        return f"{self.base}/entrez/eutils/"

    def add(
        self,
        pmid: str,
        *,
        terms: set[str] | str,
        edat: date | datetime,
        mdat: date | datetime | None = None,
        **fields: Any,
    ) -> None:
        xml = fields.pop("xml", None) or article_xml(pmid, **fields)
        terms = {terms} if isinstance(terms, str) else set(terms)
        with self.lock:
            self.records[pmid] = FakeRecord(pmid, xml, terms, eastern_day(edat), eastern_day(mdat or edat))

    def change(self, pmid: str, *, mdat: date | datetime, **fields: Any) -> None:
        """Replace a record's XML (re-rendered from `fields`) and bump its mdat."""
        with self.lock:
            rec = self.records[pmid]
            rec.xml = fields.pop("xml", None) or article_xml(pmid, **fields)
            rec.mdat = eastern_day(mdat)

    def in_last_second(self, now: float) -> int:
        n = 0
        for r in reversed(self.requests):
            if r.at <= now - 1.0:
                break
            n += 1
        return n

    def peak_per_second(self) -> int:
        """The most requests that arrived within any one second."""
        with self.lock:
            times = [r.at for r in self.requests]
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def bytes_sent(self, since: int = 0) -> int:
        """The bytes of every answer's body since request `since`."""
        with self.lock:
            return sum(r.sent for r in self.requests[since:])

    def count(self, utility: str) -> int:
        return sum(1 for r in self.requests if r.utility == utility)

    # ---------------------------------------------------------------- behaviour

    def _search(self, params: dict[str, str]) -> bytes:
        term = params.get("term", "")
        datetype = params.get("datetype")
        lo = _date(params.get("mindate"))
        hi = _date(params.get("maxdate"))
        # PubMed's range syntax in the term, as litwatch ORs the entry and modification
        # windows into one search: `(TERM) AND (A:B[edat] OR C:D[mdat])`
        ranges: dict[str, tuple[date, date]] = {}
        m = _DATED.match(term)
        if m:
            term = m.group("term")
            for clause in m.group("dates").split(" OR "):
                r = _RANGE.fullmatch(clause.strip())
                if r is None:
                    raise ValueError(f"fake esearch: cannot read the date clause {clause!r}")
                ranges[r.group(3).lower()] = (_date(r.group(1)), _date(r.group(2)))  # type: ignore[assignment]
        with self.lock:
            ids = []
            for rec in self.records.values():
                if term not in rec.terms and not any(t in rec.terms for t in _or_terms(term)):
                    continue
                when = rec.mdat if datetype == "mdat" else rec.edat
                if lo and hi and not (lo <= when <= hi):
                    continue
                if ranges and not any(
                    a <= (rec.mdat if kind == "mdat" else rec.edat) <= b for kind, (a, b) in ranges.items()
                ):
                    continue
                ids.append(rec.pmid)
        ids.sort(key=int, reverse=True)
        retmax = int(params.get("retmax", "20"))
        webenv = ""
        if params.get("usehistory") == "y":
            webenv = "MCID_" + uuid.uuid4().hex
            with self.lock:
                self.histories[webenv] = ids
        id_xml = "".join(f"<Id>{i}</Id>" for i in ids[:retmax])
        history = f"<QueryKey>1</QueryKey><WebEnv>{webenv}</WebEnv>" if webenv else ""
        return (
            '<?xml version="1.0" encoding="UTF-8" ?>\n'
            '<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
            '"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
            f"<eSearchResult><Count>{len(ids)}</Count><RetMax>{min(retmax, len(ids))}</RetMax>"
            f"<RetStart>0</RetStart>{history}<IdList>{id_xml}</IdList>"
            f"<TranslationSet/><QueryTranslation>{escape(term)}</QueryTranslation></eSearchResult>"
        ).encode()

    def _fetch(self, params: dict[str, str]) -> bytes:
        if "WebEnv" in params:
            ids = self.histories.get(params["WebEnv"], [])
            start = int(params.get("retstart", "0"))
            ids = ids[start : start + int(params.get("retmax", "20"))]
        else:
            ids = [i for i in params.get("id", "").split(",") if i]
        with self.lock:
            left_out = {i for i in ids if self.withhold.get(i, 0) > 0}
            for i in left_out:
                self.withhold[i] -= 1
            body = "".join(self.records[i].xml for i in ids if i in self.records and i not in left_out)
        return (
            '<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
            '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
            f"<PubmedArticleSet>{body}</PubmedArticleSet>\n"
        ).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            logged: Request

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve(parse_qs(urlsplit(self.path).query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self._serve(parse_qs(self.rfile.read(length).decode()))

            def _serve(self, qs: dict[str, list[str]]) -> None:
                params = {k: v[-1] for k, v in qs.items()}
                utility = urlsplit(self.path).path.rsplit("/", 1)[-1].removesuffix(".fcgi")
                with fake.lock:
                    now = time.monotonic()
                    over = fake.limit is not None and fake.in_last_second(now) >= fake.limit
                    self.logged = Request(now, self.command, utility, params)
                    fake.requests.append(self.logged)
                    if over:
                        fake.refused += 1
                if over:
                    return self._send(429, b'{"error":"API rate limit exceeded"}', {"Retry-After": "1"})
                with fake.lock:
                    fault = next(
                        (
                            f
                            for f in fake.faults
                            if f.utility in (utility, "*")
                            and (f.term is None or _inner(params.get("term", "")).startswith(f.term))
                            and (
                                f.datetype is None
                                or params.get("datetype") == f.datetype
                                or f"[{f.datetype}]" in params.get("term", "").lower()
                            )
                        ),
                        None,
                    )
                    if fault is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            fake.faults.remove(fault)
                if fake.delay:
                    time.sleep(fake.delay)
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.huge:
                        return self._huge(fault.huge)
                    if fault.status != 200 or fault.body is not None:
                        return self._send(fault.status, fault.body or b"error", fault.headers)
                if utility == "esearch":
                    return self._send(200, fake._search(params))
                if utility == "efetch":
                    return self._send(200, fake._fetch(params))
                self._send(404, b"unknown utility")

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.logged.sent = len(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml; charset=UTF-8")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _huge(self, size: int) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/xml")
                    self.end_headers()  # no Content-Length: the client must count
                    self.close_connection = True
                    chunk = b"<x>" + b"a" * 65533
                    sent = 0
                    while sent < size:
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def eastern_day(when: date | datetime) -> date:
    """The day in New York: NCBI's EDAT and MDAT are US Eastern calendar days."""
    if not isinstance(when, datetime):
        return when
    if when.tzinfo is None:
        return when.date()  # New York wall-clock time already
    return when.astimezone(NEW_YORK).date()


def _date(value: str | None) -> date | None:
    if not value:
        return None
    y, m, d = (int(x) for x in value.split("/"))
    return date(y, m, d)


_DATED = re.compile(r"^\((?P<term>.*)\) AND \((?P<dates>[0-9/:\[\]a-zA-Z ]+)\)$", re.DOTALL)
_RANGE = re.compile(r"(\d{4}/\d{2}/\d{2}):(\d{4}/\d{2}/\d{2})\[(edat|mdat)\]", re.IGNORECASE)


def is_poll_search(r: Request) -> bool:
    """An esearch of new records: `datetype=edat`, or a term with an `[edat]` range (the
    one search litwatch makes per query, ORing the entered and modified windows)."""
    return r.utility == "esearch" and (
        r.params.get("datetype") == "edat" or "[edat]" in r.params.get("term", "").lower()
    )


def _inner(term: str) -> str:
    """A search's own term, without the date clause litwatch ANDs to it."""
    m = _DATED.match(term)
    return m.group("term") if m else term


def _or_terms(term: str) -> list[str]:
    return [t.strip() for t in term.split(" OR ")]


def article_xml(
    pmid: str,
    *,
    title: str = "A paper",
    abstract: str = "",
    authors: tuple[str, ...] = ("Smith J", "Doe A"),
    journal: str = "Journal of Tests",
    doi: str = "",
    pubtypes: tuple[str, ...] = ("Journal Article",),
    links: tuple[tuple[str, str], ...] = (),
    mesh: tuple[str, ...] = (),
    status: str = "MEDLINE",
    year: str = "2026",
) -> str:
    author_xml = "".join(
        f'<Author ValidYN="Y"><LastName>{escape(a.split(" ")[0])}</LastName><Initials>{escape(a.split(" ")[-1])}</Initials></Author>'
        for a in authors
    )
    pt_xml = "".join(f'<PublicationType UI="D000000">{escape(p)}</PublicationType>' for p in pubtypes)
    cc_xml = "".join(
        f'<CommentsCorrections RefType="{rt}"><RefSource>Ref</RefSource><PMID Version="1">{p}</PMID></CommentsCorrections>'
        for rt, p in links
    )
    cc_xml = f"<CommentsCorrectionsList>{cc_xml}</CommentsCorrectionsList>" if cc_xml else ""
    mesh_xml = "".join(f'<MeshHeading><DescriptorName UI="D1">{escape(m)}</DescriptorName></MeshHeading>' for m in mesh)
    mesh_xml = f"<MeshHeadingList>{mesh_xml}</MeshHeadingList>" if mesh_xml else ""
    abstract_xml = f"<Abstract><AbstractText>{escape(abstract)}</AbstractText></Abstract>" if abstract else ""
    doi_xml = f'<ArticleId IdType="doi">{escape(doi)}</ArticleId>' if doi else ""
    return (
        f'<PubmedArticle><MedlineCitation Status="{status}" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
        f'<Article PubModel="Print"><Journal><JournalIssue CitedMedium="Internet"><Volume>1</Volume>'
        f"<PubDate><Year>{year}</Year><Month>Jan</Month></PubDate></JournalIssue><Title>{escape(journal)}</Title></Journal>"
        f"<ArticleTitle>{escape(title)}</ArticleTitle>{abstract_xml}<AuthorList>{author_xml}</AuthorList>"
        f"<PublicationTypeList>{pt_xml}</PublicationTypeList></Article>{mesh_xml}{cc_xml}</MedlineCitation>"
        f'<PubmedData><History><PubMedPubDate PubStatus="entrez"><Year>{year}</Year><Month>1</Month><Day>2</Day></PubMedPubDate></History>'
        f'<PublicationStatus>ppublish</PublicationStatus><ArticleIdList><ArticleId IdType="pubmed">{pmid}</ArticleId>{doi_xml}</ArticleIdList></PubmedData>'
        "</PubmedArticle>"
    )
