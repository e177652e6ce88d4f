"""Feed bytes → `Record`s. Owns everything litwatch reads out of an RSS/Atom document:
entry identity, plain-text and safe-HTML summaries, links, dates, authors and DOIs.

Pure: no I/O (feedparser is handed a stream, never a URL or a path) and no clock.
feedparser reads RSS 0.9x/1.0/2.0, RDF and Atom 0.3/1.0; when its strict (expat)
parser fails it falls back to a loose one, which is why a "bozo" feed can still
yield entries: litwatch uses them and reports a warning naming the feed.

Identity of an entry (stable across polls: the same bytes always give the same keys):

1. its ``<guid>`` (RSS 2.0 spec, "guid": "a string that uniquely identifies the item")
   or ``<id>`` (RFC 4287 §4.2.6, "a permanent, universally unique identifier"),
   whitespace stripped;
2. else its link: ``<guid>`` is optional in RSS while ``<link>`` is the item's URL;
3. else ``sha256:`` and the first 32 hex digits of the SHA-256 of title and date
   (and of the summary too when both are empty). Such an entry that changes its title
   becomes a new record: there is nothing else to recognise it by.

An entry whose key repeats one seen earlier in the same document is dropped with a
warning (feeds that repeat an item usually repeat it whole).

Entity declarations are refused before parsing (`ParseError`): feedparser's loose
parser expands "safe" internal entities itself, without expat's amplification limit,
so a 20 MB document of ``&a;`` references to a 10 kB entity would grow to gigabytes
(the quadratic-blowup cousin of "billion laughs"). Feeds do not declare entities.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

import feedparser
import lxml.html
import lxml.html.defs
import nh3
from feedparser.datetimes import _parse_date
from lxml import etree

from ..errors import ParseError
from ..records import Record, feed_source

__all__ = ["FeedParse", "html_to_text", "parse_feed", "safe_html"]


@dataclass(frozen=True)
class FeedParse:
    records: tuple[Record, ...]
    warnings: tuple[str, ...]
    title: str


def parse_feed(data: bytes, *, feed_name: str, base_url: str = "", content_type: str | None = None) -> FeedParse:
    """Parse one feed document. Raise `ParseError` naming the feed when nothing usable
    is in it; a well-formed feed with no entries gives no records and no error."""
    _refuse_entity_declarations(data, feed_name)
    # No Content-Location: feedparser would then resolve a relative <guid> too, and
    # an entry's identity must not move when the feed's URL does. Links are resolved
    # here instead, against `base_url`.
    headers: dict[str, str] = {}
    if content_type:
        headers["content-type"] = content_type  # its charset decides the encoding (RFC 3023 via feedparser)
    try:
        # A stream, never bare bytes: feedparser.parse(bytes) first tries open(bytes)
        # as a file name, which a hostile body could point at a local file.
        parsed = feedparser.parse(io.BytesIO(data), response_headers=headers)
    except Exception as e:  # noqa: BLE001 - feedparser bugs on hostile input must not stop other feeds
        raise ParseError(f"feed {feed_name}: could not be parsed ({type(e).__name__}: {e})") from e

    warnings: list[str] = []
    if parsed.get("bozo"):
        problem = _problem(parsed.get("bozo_exception"))
        if not parsed.entries and not (parsed.get("version") and _soft(parsed.get("bozo_exception"))):
            raise ParseError(f"feed {feed_name}: not a readable RSS or Atom feed ({problem})")
        if not isinstance(parsed.get("bozo_exception"), feedparser.NonXMLContentType):  # text/html: common, harmless
            warnings.append(f"feed {feed_name}: {problem}; used the {len(parsed.entries)} entries that could be read")
    elif not parsed.get("version") and not parsed.entries:
        raise ParseError(f"feed {feed_name}: the document is not an RSS or Atom feed")

    base = str(parsed.feed.get("link", "")) if not base_url else base_url
    records: list[Record] = []
    seen: set[str] = set()
    failures = 0
    for n, entry in enumerate(parsed.entries, 1):
        try:
            rec = entry_record(entry, feed_name=feed_name, base_url=base)
        except Exception as e:  # noqa: BLE001 - skip one bad entry, keep the rest (reader _process_feed)
            failures += 1
            warnings.append(f"feed {feed_name}: entry {n} skipped ({type(e).__name__}: {e})")
            continue
        if rec.key in seen:
            warnings.append(f"feed {feed_name}: entry {n} repeats id {rec.key!r}; kept the first")
            continue
        seen.add(rec.key)
        records.append(rec)
    if failures and not records:
        raise ParseError(f"feed {feed_name}: none of its {failures} entries could be read")
    title = _title(parsed.feed.get("title"), parsed.feed.get("title_detail"))
    return FeedParse(tuple(records), tuple(warnings), title)


def entry_record(entry: Mapping[str, Any], *, feed_name: str, base_url: str) -> Record:
    """One feedparser entry → one `Record` (identity rule in the module docstring)."""
    title = _title(entry.get("title"), entry.get("title_detail"))
    summary_html, summary_text = _summary(entry, base_url)
    link = _str(entry.get("link")).strip()
    url = _absolute(link, base_url)
    pub_date = _date(entry)
    key = _identity(entry, link, title, pub_date, summary_text)
    return Record(
        source=feed_source(feed_name),
        key=key,
        title=title,
        abstract=summary_text,
        summary_html=summary_html,
        authors=_authors(entry),
        pub_date=pub_date,
        url=url,
        doi=_doi(entry),
    )


def _title(value: object, detail: object) -> str:
    """A title as one line of text. HTML titles (feedparser has sanitised them) lose
    their tags; a text/plain title (RFC 4287 §3.1.1.1) is literal, so "<Hypothetical>"
    stays, unless it holds real HTML elements, which feeds mislabel often enough."""
    text = _str(value)
    kind = _str(detail.get("type")) if isinstance(detail, Mapping) else ""
    if kind == "text/plain" and not _HTML_TAG.search(text):
        return _collapse(_CONTROL.sub("", text), single_line=True)
    return html_to_text(text, single_line=True)


# --- identity, links, dates, people -------------------------------------------------


def _identity(entry: Mapping[str, Any], link: str, title: str, date: str, summary: str) -> str:
    guid = _str(entry.get("id")).strip()
    if guid:
        return guid
    # <guid> is not required in RSS; <link> is, so fall back to it (RSS 2.0 spec, "Elements
    # of <item>"). As written, not resolved: the key must not depend on the feed's URL.
    if link:
        return link
    basis = f"{title}\n{date}" if title or date else f"\n\n{summary}"
    return "sha256:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]


def _absolute(link: str, base_url: str) -> str:
    """The link resolved against the feed URL; only http(s) links are kept (a
    ``urn:uuid:`` or ``javascript:`` link is not something to put in a mail)."""
    if not link:
        return ""
    resolved = urljoin(base_url, link) if base_url else link
    return resolved if urlsplit(resolved).scheme.lower() in ("http", "https") else ""


_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")


def _date(entry: Mapping[str, Any]) -> str:
    """ISO 8601 in UTC: a date when the feed gave only a date, else a datetime."""
    for name in ("published", "prism_publicationdate", "updated", "created"):
        # dict.get: FeedParserDict.get("published") quietly answers with `updated`
        # (feedparser issue 310), which would put dc:date before prism:publicationDate.
        raw = _str(dict.get(entry, name)) if isinstance(entry, dict) else _str(entry.get(name))
        parsed = dict.get(entry, f"{name}_parsed") if isinstance(entry, dict) else entry.get(f"{name}_parsed")
        if parsed is None and raw:
            parsed = _parse_date(raw)  # prism:publicationDate has no *_parsed
        if not isinstance(parsed, time.struct_time):
            continue
        when = datetime(*parsed[:6], tzinfo=UTC)
        if _DATE_ONLY.match(raw):
            return when.date().isoformat()
        return when.isoformat().replace("+00:00", "Z")
    return ""


def _authors(entry: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for author in entry.get("authors") or ():
        name = html_to_text(_str(author.get("name") if isinstance(author, Mapping) else author), single_line=True)
        if name and name not in names:
            names.append(name)
    if not names:
        name = html_to_text(_str(entry.get("author")), single_line=True)
        if name:
            names.append(name)
    return tuple(names)


# DOI syntax: "10." registrant code "/" suffix (DOI Handbook §2.2); no whitespace.
_DOI = re.compile(r"^(10\.\d{4,9}/\S+)$")
_DOI_PREFIXES = (
    "doi:",
    "info:doi/",
    "urn:doi:",
    "https://doi.org/",
    "http://doi.org/",
    "https://dx.doi.org/",
    "http://dx.doi.org/",
)


def _doi(entry: Mapping[str, Any]) -> str:
    """The entry's DOI, case kept, prefixes stripped: prism:doi, dc:identifier
    ("doi:…", "info:doi/…"), a guid of that form, or a doi.org link / ``?doi=`` link."""
    for value in (entry.get("prism_doi"), entry.get("dc_identifier"), entry.get("id")):
        doi = _doi_from(_str(value))
        if doi:
            return doi
    links = [entry.get("link")] + [lk.get("href") for lk in entry.get("links") or () if isinstance(lk, Mapping)]
    for link in links:
        doi = _doi_from_link(_str(link))
        if doi:
            return doi
    return ""


def _doi_from(value: str) -> str:
    value = value.strip()
    lowered = value.lower()
    for prefix in _DOI_PREFIXES:
        if lowered.startswith(prefix):
            value = unquote(value[len(prefix) :])
            break
    m = _DOI.match(value)
    return m.group(1).rstrip(".,;") if m else ""


def _doi_from_link(link: str) -> str:
    parts = urlsplit(link.strip())
    if parts.hostname in ("doi.org", "dx.doi.org"):
        return _doi_from(unquote(parts.path.lstrip("/")))
    for name, value in parse_qsl(parts.query):
        if name.lower() == "doi":  # Wiley: /resolve/doi?DOI=10.1111%2Fjvs.12120
            return _doi_from(value)
    return ""


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


# --- summaries: HTML → text, HTML → safe HTML --------------------------------------------


def _summary(entry: Mapping[str, Any], base_url: str) -> tuple[str, str]:
    """(safe HTML, plain text) of the entry's summary, else of its first content."""
    detail = entry.get("summary_detail")
    value = _str(entry.get("summary"))
    if not value.strip():
        for content in entry.get("content") or ():
            if isinstance(content, Mapping) and _str(content.get("value")).strip():
                detail, value = content, _str(content.get("value"))
                break
    if not value.strip():
        return "", ""
    kind = _str(detail.get("type")) if isinstance(detail, Mapping) else ""
    if kind == "text/plain":
        text = _collapse(value, single_line=False)
        return html.escape(text, quote=False).replace("\n", "<br>\n"), text
    return safe_html(value, base_url), html_to_text(value)


# Elements whose content is never text for a reader (HTML Living Standard: script,
# style, template are not rendered; the rest embed other documents).
_DROP = ("script", "style", "template", "noscript", "iframe", "object", "embed", "head", "title", "svg", "math")
_BLOCK = frozenset(
    "address article aside blockquote dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 header hr li "
    "main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
# The subset kept in mail; <a> only with an http(s) href (no javascript:, data:).
_PARAGRAPH = {t: 2 for t in "blockquote h1 h2 h3 h4 h5 h6 ol p pre table ul".split()}
_SAFE = frozenset({"p", "br", "em", "i", "b", "strong", "sub", "sup", "a", "ul", "ol", "li"})
_WS = re.compile(r"\s+")
_HTML_TAG = re.compile(r"</?(" + "|".join(sorted(lxml.html.defs.tags)) + r")\b[^<>]*>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NH3_MAX_TAGS = 2000
_UNWRAPPED_BLOCK_END = re.compile(r"</(?:" + "|".join(sorted(_BLOCK - _SAFE)) + r")\s*>", re.IGNORECASE)
_BARE_A = re.compile(r"<a>(.*?)</a>", re.DOTALL)  # <a> cannot nest: html5ever closes one before the next
_MARKUP = re.compile(r"<[A-Za-z/!?]|&(#\d+|#x[0-9A-Fa-f]+|\w+);")


def _fragment(markup: str) -> lxml.html.HtmlElement | None:
    markup = _CONTROL.sub("", markup)  # lxml refuses them, and they mean nothing in text
    if not markup.strip():
        return None
    try:
        root = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (etree.ParserError, ValueError):
        return None
    for node in list(root.iter(etree.Comment, etree.ProcessingInstruction, *_DROP)):
        if node is not root:
            node.drop_tree()  # keeps the tail text
    return root


def html_to_text(markup: str, *, single_line: bool = False) -> str:
    """Visible text of an HTML fragment: tags and comments gone, entities unescaped,
    script/style content dropped, blocks on their own lines (or one line)."""
    if not _MARKUP.search(markup):
        return _collapse(_spaces(_CONTROL.sub("", markup)), single_line)
    root = _fragment(markup)
    if root is None:
        return ""
    out: list[str | int] = []  # text, or a break: 1 = new line, 2 = blank line
    for event, el in etree.iterwalk(root, events=("start", "end")):
        tag = el.tag if isinstance(el.tag, str) else ""
        if event == "start":
            if tag in _BLOCK or tag == "br":
                out.append(_PARAGRAPH.get(tag, 1))
            out.append(_spaces(el.text))
        else:
            if tag in _BLOCK:
                out.append(_PARAGRAPH.get(tag, 1))
            if el is not root:
                out.append(_spaces(el.tail))
    return _collapse(_join_breaks(out), single_line)


def _join_breaks(parts: list[str | int]) -> str:
    """Text with adjacent breaks merged into the strongest of them ("</li> <li>" is one
    new line, "</p><p>" one blank line); none at the start or the end."""
    text: list[str] = []
    pending = 0
    for part in parts:
        if isinstance(part, int):
            pending = max(pending, part)
        elif part.strip():
            if pending and text:
                text.append("\n" * pending)
            pending = 0
            text.append(part)
        elif not pending:
            text.append(part)
    return "".join(text)


def _spaces(text: str | None) -> str:
    """HTML whitespace in text is one space (a newline in the source is not a break)."""
    return _WS.sub(" ", text or "")


def safe_html(markup: str, base_url: str = "") -> str:
    """An HTML fragment reduced to p, br, em, i, b, strong, sub, sup, ul, ol, li and
    a[href] (http/https, resolved against `base_url`); every other tag is unwrapped
    (its text kept), script-like elements dropped with their content, every other
    attribute dropped. nh3 (Rust's ammonia on html5ever) does the sanitising: it is the
    security boundary of the mail's HTML, so a maintained library owns it."""
    markup = _CONTROL.sub("", markup)
    if not markup.strip():
        return ""
    if markup.count("<") > _NH3_MAX_TAGS:
        # ammonia's cost grows with the square of the nesting depth (50,000 nested
        # <div>s: 10 s); libxml2 stops at 256 levels, so let it flatten the fragment first.
        root = _fragment(markup)
        markup = lxml.html.tostring(root, encoding="unicode") if root is not None else ""
    # An unwrapped block (a <div>, a heading) still separates the words around it.
    markup = _UNWRAPPED_BLOCK_END.sub(lambda m: " " + m.group(0), markup)

    def href(tag: str, attr: str, value: str) -> str | None:
        if (tag, attr) != ("a", "href"):
            return value
        return _absolute(value.strip(), base_url) or None

    cleaned = nh3.clean(
        markup,
        tags=set(_SAFE),
        clean_content_tags=set(_DROP),
        attributes={"*": set(), "a": {"href"}},  # "*": no lang/title on every tag
        url_schemes={"http", "https"},
        attribute_filter=href,
        link_rel=None,
        strip_comments=True,
    )
    # White space (and &nbsp;) is one space, and an <a> whose href was refused is its
    # text, so the stored form equals what litwatch's earlier sanitiser stored (all 115
    # summaries of ../shared/data/feeds): an upgrade re-versions nothing.
    cleaned = _WS.sub(" ", cleaned.replace("&nbsp;", " "))
    return _BARE_A.sub(r"\1", cleaned).strip()


def _collapse(text: str, single_line: bool) -> str:
    if single_line:
        return " ".join(text.split())
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- refusing entity declarations ---------------------------------------------------


def _entity_pattern(encoding: str) -> re.Pattern[bytes]:
    chars = (
        b"(?:" + re.escape(c.upper().encode(encoding)) + b"|" + re.escape(c.lower().encode(encoding)) + b")"
        for c in "<!ENTITY"
    )
    return re.compile(b"".join(chars))


_ENTITY_DECLS = {enc: _entity_pattern(enc) for enc in ("ascii", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")}


def _refuse_entity_declarations(data: bytes, feed_name: str) -> None:
    """Raise `ParseError` if the document declares XML entities (see module docstring).
    UTF-16/32 documents are checked in their own byte forms (XML 1.0 Appendix F)."""
    encodings: Iterable[str] = _ENTITY_DECLS if b"\x00" in data[:4] else ("ascii",)
    for enc in encodings:
        if _ENTITY_DECLS[enc].search(data):
            raise ParseError(
                f"feed {feed_name}: the document declares XML entities (<!ENTITY>), which litwatch refuses "
                "because expanding them can exhaust memory; feeds do not need them"
            )


def _soft(exc: object) -> bool:
    """Bozo reasons that leave a document fully read (a charset guess, a media type)."""
    return isinstance(exc, feedparser.CharacterEncodingOverride | feedparser.NonXMLContentType)


def _problem(exc: object) -> str:
    if exc is None:
        return "malformed document"
    text = str(exc).strip()
    return text if text else type(exc).__name__
