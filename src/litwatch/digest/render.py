"""Render a `DigestData` to a subject, a plain-text part and an HTML part (CSS inlined
with css-inline, so mail clients that strip <style> still show it). Templates come
from the package, or first from the config's `templates:` directory."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import css_inline
import jinja2

from .. import __version__
from .group import DigestData


def _wrap(text: str, width: int = 76, indent: str = "", subsequent: str | None = None) -> str:
    """Fill each non-blank line; long words (URLs, DOIs) are never broken."""
    later = indent if subsequent is None else subsequent
    return "\n".join(
        textwrap.fill(
            line,
            width=width,
            initial_indent=indent,
            subsequent_indent=later,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for line in text.splitlines()
        if line.strip()
    )


def _date(value: object) -> str:
    return value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else ""


def _days(since: object, now: object) -> str:
    """'3 days' between two datetimes, for "failing since ... (3 days)"."""
    if not isinstance(since, datetime) or not isinstance(now, datetime):
        return ""
    if (since.tzinfo is None) != (now.tzinfo is None):  # the store keeps naive UTC
        since, now = since.replace(tzinfo=None), now.replace(tzinfo=None)
    n = max((now - since).days, 0)
    return "less than a day" if n == 0 else f"{n} day{'s' if n != 1 else ''}"


def _diff_text(words: list[tuple[str, str]], sep: str = " ") -> str:
    """A compact diff inline, as `git diff --word-diff=plain` shows it: [-old-] {+new+}."""
    marks = {"=": "{}", "-": "[-{}-]", "+": "{{+{}+}}"}
    return sep.join(marks[op].format(text) for op, text in words)


class Renderer:
    def __init__(self, template_dir: Path | None = None, web_url: str | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if template_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(template_dir)))
        loaders.append(jinja2.PackageLoader("litwatch.digest", "templates"))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["wrap"] = _wrap
        self.env.filters["date"] = _date
        self.env.filters["days"] = _days
        self.env.filters["diff_text"] = _diff_text
        self.env.globals["version"] = __version__
        self.env.globals["web_url"] = web_url  # web.base_url: items about a change link to their record's page
        self._inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)

    def subject(self, data: DigestData, prefix: str | None = None) -> str:
        more = f" (+{data.more_waiting} more)" if data.more_waiting else ""
        return f"{prefix or data.name}: {data.summary}{more}"

    def text(self, data: DigestData) -> str:
        return self.env.get_template("digest.txt").render(d=data)

    def html(self, data: DigestData) -> str:
        raw = self.env.get_template("digest.html").render(d=data)
        return str(self._inliner.inline(raw))
