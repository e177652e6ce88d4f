"""The NCBI E-utilities client: esearch (history server, date windows, the 10,000-id
cap split by date), efetch in batches from the history server or by id (POST for
long lists), `tool`/`email`/`api_key` on every request, and one rate limiter for the
whole process: 3 requests/s, 10 with an API key (E-utilities manual, "Usage
Guidelines and Requirements"). Returns bytes; never looks inside PubmedArticle XML.

PubMed's days are US Eastern: EDAT, MDAT, `mindate` and `maxdate` are calendar days in
America/New_York, so `pubmed_day` turns the clock into NCBI's day (zoneinfo, DST
included) and every window starts one day before its watermark (`window_start`): a
record indexed late, or a host clock a little off, still falls into the next window,
and identity (the PMID) makes the overlap free.

`prefetched` overlaps the next efetch with the caller's parsing of the current one."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from lxml import etree

from ..errors import ParseError, SourceError
from .http import Fetched, HttpClient, Limiter, RetryPolicy, shared_limiter

log = logging.getLogger(__name__)

# esearch returns at most 10,000 UIDs for PubMed (E-utilities manual, ESearch, retmax).
ESEARCH_CAP = 10_000
# Above this many ids a GET URL gets too long; the manual asks for POST beyond ~200.
POST_THRESHOLD = 200

# NCBI's clock: EDAT/MDAT and the esearch date range are days in New York.
NCBI_TIME = ZoneInfo("America/New_York")
# How far each window reaches back before the watermark (see the module docstring).
OVERLAP = timedelta(days=1)

_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@dataclass
class SearchResult:
    count: int
    ids: list[str]
    webenv: str = ""
    query_key: str = ""
    warnings: list[str] = field(default_factory=list)
    translation: str = ""
    # set when this one day held more than ESEARCH_CAP records and was skipped (ids empty)
    overflow_day: date | None = None


def pubmed_day(now: datetime) -> date:
    """The calendar day in New York at `now` (naive UTC, as litwatch stores times, or aware)."""
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return aware.astimezone(NCBI_TIME).date()


def window_start(watermark: str) -> date:
    """Where the window after a poll that stored up to `watermark` (an ISO day) starts."""
    return date.fromisoformat(watermark) - OVERLAP


@dataclass(frozen=True)
class EutilsSettings:
    """What the client needs, as plain values (polls/clients.py makes them from the config)."""

    base_url: str  # ends with "/"
    tool: str = "litwatch"
    email: str | None = None
    api_key: str = ""  # "" for none
    batch_size: int = 500
    rate: int = 3  # requests a second: NCBI's 3, 10 with an API key
    max_bytes: int = 64_000_000
    policy: RetryPolicy = field(default_factory=RetryPolicy)


class EutilsClient:
    def __init__(self, settings: EutilsSettings, limiter: Limiter | None = None) -> None:
        """`limiter`: the request budget shared with every process on the database
        (`coordination.RequestBudget`); by default this process's own limiter."""
        self.settings = settings
        self.base = settings.base_url
        host = urlsplit(self.base).netloc
        self.http = HttpClient(
            policy=settings.policy,
            max_bytes=settings.max_bytes,
            limiter=limiter or shared_limiter(f"eutils:{host}", settings.rate),
        )
        self.answered = 0  # requests NCBI answered (a poll that got none did not reach it)

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def close(self) -> None:
        self.http.close()

    def _params(self, **params: str | int) -> dict[str, str | int]:
        out: dict[str, str | int] = {"db": "pubmed", "tool": self.settings.tool}
        if self.settings.email:
            out["email"] = self.settings.email
        if self.settings.api_key:
            out["api_key"] = self.settings.api_key
        out.update(params)
        return out

    def _call(self, utility: str, what: str, params: dict[str, str | int], post: bool = False) -> Fetched:
        url = self.base + f"{utility}.fcgi"
        if post:
            fetched = self.http.request("POST", url, data=params, what=what)
        else:
            fetched = self.http.request("GET", url, params=params, what=what)
        self.answered += 1
        return fetched

    # ------------------------------------------------------------------ esearch

    def esearch(
        self,
        term: str,
        *,
        what: str,
        datetype: str | None = None,
        mindate: date | None = None,
        maxdate: date | None = None,
        retmax: int = ESEARCH_CAP,
        usehistory: bool = True,
    ) -> SearchResult:
        params: dict[str, str | int] = {"term": term, "retmax": retmax}
        if usehistory:
            params["usehistory"] = "y"
        if datetype and mindate and maxdate:
            params.update(datetype=datetype, mindate=_d(mindate), maxdate=_d(maxdate))
        fetched = self._call("esearch", what, self._params(**params), post=len(term) > 1500)
        result = parse_esearch(fetched.content, what)
        for w in result.warnings:
            log.warning("%s: PubMed says: %s", what, w)
        return result

    def search_window(
        self, term: str, *, what: str, datetype: str, start: date, end: date, skip_overflow: bool = False
    ) -> list[SearchResult]:
        """esearch over [start, end] (US Eastern days); windows above the 10,000-id cap
        are split in two by date until each fits. A single day over the cap is an error,
        not a silent cut; with `skip_overflow` it is instead returned as a result with
        `overflow_day` set and no ids, for the caller to report and move past."""
        result = self.esearch(term, what=what, datetype=datetype, mindate=start, maxdate=end)
        if result.count < ESEARCH_CAP:
            return [result]
        if start >= end:
            if skip_overflow:
                log.warning(
                    "%s: %d records (%s) on %s alone, above PubMed's %d cap: skipped",
                    what,
                    result.count,
                    datetype,
                    start,
                    ESEARCH_CAP,
                )
                return [SearchResult(count=result.count, ids=[], warnings=result.warnings, overflow_day=start)]
            raise SourceError(
                f"{what}: {result.count} records on {start.isoformat()} alone, above PubMed's "
                f"{ESEARCH_CAP} cap; narrow the query"
            )
        middle = start + timedelta(days=(end - start).days // 2)
        log.info("%s: %d records in %s..%s, splitting the window", what, result.count, start, end)
        return self.search_window(
            term, what=what, datetype=datetype, start=start, end=middle, skip_overflow=skip_overflow
        ) + self.search_window(
            term, what=what, datetype=datetype, start=middle + timedelta(days=1), end=end, skip_overflow=skip_overflow
        )

    def search_changed(
        self, term: str, *, what: str, entered_from: date, modified_from: date, end: date
    ) -> SearchResult | None:
        """One esearch for the records `term` finds that were entered in [entered_from,
        end] or modified in [modified_from, end] (US Eastern days): PubMed's search
        syntax ORs the two date ranges, so a poll needs one search, not two. None when
        the answer reaches the 10,000-id cap: the caller then searches each range on its
        own, where a window over the cap is split by date."""
        dated = f"({term}) AND ({_range(entered_from, end, 'edat')} OR {_range(modified_from, end, 'mdat')})"
        result = self.esearch(dated, what=what)
        return result if result.count < ESEARCH_CAP else None

    def search_modified(self, term: str, *, what: str, start: date, end: date) -> SearchResult | None:
        """The records `term` finds modified in [start, end] (US Eastern days), ids only
        (no history server): what a poll asks to tell the known records its overlap
        brings back that changed from those that did not. None when the answer reaches
        the 10,000-id cap (the caller then fetches them all: nothing is missed)."""
        result = self.esearch(term, what=what, datetype="mdat", mindate=start, maxdate=end, usehistory=False)
        return result if result.count < ESEARCH_CAP else None

    def search_entered_or_modified(self, term: str, *, what: str, start: date, end: date) -> list[SearchResult]:
        """What `term` finds entered or modified in [start, end]: one OR'd search
        (`search_changed`); only when that answer reaches the cap, each date range on
        its own, split by date (`search_window`). The notice search: a notice whose
        RetractionOf/ErratumFor link PubMed adds after it was entered is modified then."""
        both = self.search_changed(term, what=what, entered_from=start, modified_from=start, end=end)
        if both is not None:
            return [both]
        log.info("%s: entered or modified reaches PubMed's cap; searching each on its own", what)
        return self.search_window(term, what=what, datetype="edat", start=start, end=end) + self.search_window(
            term, what=what, datetype="mdat", start=start, end=end
        )

    # ------------------------------------------------------------------ efetch

    def efetch_history(self, result: SearchResult, *, what: str) -> Iterator[bytes]:
        """All records of a history-server result, `batch_size` per request."""
        batch = self.settings.batch_size
        for start in range(0, result.count, batch):
            params = self._params(
                query_key=result.query_key, WebEnv=result.webenv, retstart=start, retmax=batch, retmode="xml"
            )
            yield self._call(
                "efetch", f"{what} (records {start + 1}-{min(start + batch, result.count)})", params
            ).content

    def efetch_ids(self, ids: list[str], *, what: str) -> Iterator[bytes]:
        batch = self.settings.batch_size
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            params = self._params(id=",".join(chunk), retmode="xml")
            yield self._call("efetch", f"{what} ({len(chunk)} ids)", params, post=len(chunk) > POST_THRESHOLD).content


_T = TypeVar("_T")
_END = object()


def prefetched(items: Iterable[_T]) -> Iterator[_T]:
    """The items of `items`, each next one produced on a worker thread while the caller
    works on the current one: batch k+1 is fetched while batch k is parsed.

    One slot: the worker asks for item k+1 only once the caller has item k, so at most
    two batches are held. The worker only advances the iterator, so each request is
    still made by the same client, after the same limiter or shared request budget,
    with the same retries and deadline; what the iterator raises (a `SourceError` after
    its retries, a deadline) is raised here, in the caller's thread, at the item where
    it stopped, and no request is made after it. A daemon thread, not an executor: if
    the caller stops early (a failed parse, Ctrl-C), the request in flight finishes on
    its own and is dropped, and nothing waits for it."""
    it = iter(items)
    asks: queue.SimpleQueue[bool] = queue.SimpleQueue()
    answers: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()

    def work() -> None:
        while asks.get():
            try:
                item = next(it, _END)
            except BaseException as e:  # noqa: BLE001 - handed to the caller and raised there
                answers.put((_END, e))
                return
            answers.put((item, None))
            if item is _END:
                return

    threading.Thread(target=work, name="litwatch-prefetch", daemon=True).start()
    asks.put(True)
    try:
        while True:
            item, error = answers.get()
            if error is not None:
                raise error
            if item is _END:
                return
            asks.put(True)  # the next one, while the caller works on this one
            yield cast(_T, item)
    finally:
        asks.put(False)  # the worker stops after what it is doing


def _d(day: date) -> str:
    return day.strftime("%Y/%m/%d")


def _range(start: date, end: date, datetype: str) -> str:
    """A date range in a search term, PubMed's way: `2026/11/01:2026/11/30[edat]`."""
    return f"{_d(start)}:{_d(end)}[{datetype}]"


def parse_esearch(content: bytes, what: str) -> SearchResult:
    """eSearchResult XML → SearchResult. <ERROR> is a SourceError; ErrorList and
    WarningList entries are warnings (PubMed still ran the search)."""
    if b"<!ENTITY" in content[:4096]:
        raise ParseError(f"{what}: refusing XML with entity declarations")
    try:
        root = etree.fromstring(content, parser=_SAFE_XML)
    except etree.XMLSyntaxError as e:
        raise ParseError(f"{what}: esearch answered malformed XML: {e}") from None
    if root.tag != "eSearchResult":
        raise ParseError(f"{what}: esearch answered <{root.tag}>, not an eSearchResult")
    error = root.findtext("ERROR")
    if error:
        raise SourceError(f"{what}: PubMed refused the search: {error.strip()}")
    count_text = root.findtext("Count")
    if count_text is None or not count_text.strip().isdigit():
        raise ParseError(f"{what}: esearch answer has no Count")
    warnings = []
    for container in ("ErrorList", "WarningList"):
        for item in root.iterfind(container + "/*"):
            text = " ".join("".join(item.itertext()).split())
            if text:
                warnings.append(f"{item.tag}: {text}")
    return SearchResult(
        count=int(count_text),
        ids=[t for t in ((e.text or "").strip() for e in root.iterfind("IdList/Id")) if t],
        webenv=(root.findtext("WebEnv") or "").strip(),
        query_key=(root.findtext("QueryKey") or "").strip(),
        warnings=warnings,
        translation=" ".join((root.findtext("QueryTranslation") or "").split()),
    )
