"""The `match` language of SPEC.md: which feed entries a query wants, and why.

Owns parsing an expression once (at config load) into an AST of precompiled
regular expressions, and evaluating it per entry. Contains no I/O and no clock.

Grammar (precedence NOT > AND > OR; parentheses group)::

    expr   := and ("OR" and)*
    and    := unary (["AND"] unary)*     -- adjacent terms are joined by an implicit AND
    unary  := "NOT" unary | atom
    atom   := TERM | '"' PHRASE '"' | "(" expr ")"

* ``a b`` means ``a AND b`` (implicit AND, as in PubMed); ``a NOT b`` is ``a AND NOT b``.
* Operators are recognised in any case (``and``, ``Or``): a user who types
  ``trail or apo2l`` means OR. To look for the word itself, quote it: ``"or"``.
* Matching is case-insensitive and on whole words. A word is a maximal run of Unicode
  word characters (letters, digits, underscore; ``\\w``); everything else, hyphens
  included, separates words. A term or phrase is split into words the same way and
  hits where those words occur consecutively in the text, separated by any non-word
  characters. So ``TRAIL`` hits "TRAIL-R2" and "anti-TRAIL", and ``TRAIL-R2`` (or
  ``"TRAIL R2"``) hits "TRAIL-R2", "TRAIL R2" and "trail–r2", but ``TRAIL`` never
  hits "TRAILS" or "entrails".
* A trailing ``*`` on a word makes it a prefix: ``agonist*`` hits "agonist",
  "agonists", "agonistic". ``*`` anywhere else is a syntax error.
* Text and expression are NFKC-normalised so ligatures and compatibility forms match.
* Each text passed to `Matcher.hits` (title, summary) is searched on its own, so a
  phrase never spans the end of the title and the start of the summary; the boolean
  expression is then evaluated over what was found in any of them.
* The texts must be plain text (parse/feeds.py strips HTML), else tag names could hit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MatchSyntaxError", "Matcher", "compile_match"]

OPERATORS = ("AND", "OR", "NOT")
_WORD = re.compile(r"\w+")
_SPACE = frozenset(" \t\r\n\f\v")


class MatchSyntaxError(ValueError):
    """A `match` expression that cannot be parsed; `column` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column})")
        self.message = message
        self.column = column


# --- tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "AND", "OR", "NOT", "TERM", "PHRASE", "END"
    text: str  # as written (a phrase with its quotes)
    column: int


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in _SPACE:
            i += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, i + 1))
            i += 1
        elif ch == '"':
            end = expr.find('"', i + 1)
            if end < 0:
                raise MatchSyntaxError('unterminated quote: a phrase needs a closing "', i + 1)
            tokens.append(_Token("PHRASE", expr[i : end + 1], i + 1))
            i = end + 1
        else:
            start = i
            while i < n and expr[i] not in _SPACE and expr[i] not in '()"':
                i += 1
            word = expr[start:i]
            kind = word.upper() if word.upper() in OPERATORS else "TERM"
            tokens.append(_Token(kind, word, start + 1))
    tokens.append(_Token("END", "", n + 1))
    return tokens


# --- AST --------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A word, hyphenated word or phrase; `index` orders terms as written."""

    index: int
    written: str
    pattern: re.Pattern[str] = field(compare=False)
    negated: bool = False  # below a NOT: never reported as a hit


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


Node = Term | Not | And | Or


def _term_pattern(text: str, column: int) -> re.Pattern[str]:
    """Compile a term's text into a whole-word, case-insensitive regex (rules above)."""
    body = unicodedata.normalize("NFKC", text)
    parts: list[str] = []
    pos = 0
    for m in _WORD.finditer(body):
        gap = body[pos : m.start()]
        star_in_gap = gap.find("*")
        if star_in_gap > 0 or (star_in_gap == 0 and not parts):
            raise MatchSyntaxError("`*` must directly follow a word (as in agonist*)", column + _col(text, body, pos))
        if star_in_gap == 0:
            if gap.count("*") > 1 or len(gap) == 1:  # "ag**" or "ag*nist": only a trailing * is allowed
                raise MatchSyntaxError("`*` is only allowed at the end of a word", column + _col(text, body, pos))
            parts[-1] += r"\w*"
        parts.append(re.escape(m.group()))
        pos = m.end()
    tail = body[pos:]
    if not parts:
        if "*" in body:
            raise MatchSyntaxError("`*` needs a word before it (as in agonist*)", column)
        raise MatchSyntaxError(f"{text!r} has no letters or digits to look for", column)
    if "*" in tail:
        if not tail.startswith("*") or tail.count("*") > 1:
            raise MatchSyntaxError("`*` must directly follow a word (as in agonist*)", column)
        parts[-1] += r"\w*"
    return re.compile(r"(?<!\w)" + r"\W+".join(parts) + r"(?!\w)", re.IGNORECASE)


def _col(text: str, body: str, pos: int) -> int:
    """Offset in `text` of position `pos` in its normalised form (exact unless NFKC
    changed the length, in which case the term's own column is close enough)."""
    return pos if len(text) == len(body) else 0


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, expr: str) -> None:
        self.tokens = _tokenize(expr)
        self.pos = 0
        self.terms = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Node:
        if self.tok.kind == "END":
            raise MatchSyntaxError("the expression is empty", 1)
        node = self.expr(negated=False)
        if self.tok.kind == ")":
            raise MatchSyntaxError("`)` without a matching `(`", self.tok.column)
        if self.tok.kind != "END":  # pragma: no cover - every other token starts a unary
            raise MatchSyntaxError(f"unexpected {self.tok.text!r}", self.tok.column)
        return node

    def expr(self, negated: bool) -> Node:
        children = [self.and_(negated)]
        while self.tok.kind == "OR":
            self.take()
            children.append(self.and_(negated))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_(self, negated: bool) -> Node:
        children = [self.unary(negated)]
        while self.tok.kind in ("AND", "NOT", "TERM", "PHRASE", "("):
            if self.tok.kind == "AND":
                self.take()
            children.append(self.unary(negated))
        return children[0] if len(children) == 1 else And(tuple(children))

    def unary(self, negated: bool) -> Node:
        if self.tok.kind == "NOT":
            self.take()
            return Not(self.unary(negated=True))
        return self.atom(negated)

    def atom(self, negated: bool) -> Node:
        tok = self.tok
        if tok.kind in ("TERM", "PHRASE"):
            self.take()
            text = tok.text[1:-1] if tok.kind == "PHRASE" else tok.text
            if tok.kind == "PHRASE" and not text.strip():
                raise MatchSyntaxError("empty phrase", tok.column)
            self.terms += 1
            return Term(self.terms, tok.text, _term_pattern(text, tok.column + (tok.kind == "PHRASE")), negated)
        if tok.kind == "(":
            self.take()
            if self.tok.kind == ")":
                raise MatchSyntaxError("empty parentheses", self.tok.column)
            if self.tok.kind == "END":
                raise MatchSyntaxError("`(` is never closed", tok.column)
            node = self.expr(negated)
            if self.tok.kind != ")":
                raise MatchSyntaxError("`(` is never closed", tok.column)
            self.take()
            return node
        raise self._missing_operand(tok)

    def _missing_operand(self, tok: _Token) -> MatchSyntaxError:
        prev = self.tokens[self.pos - 1] if self.pos else None
        if prev is not None and prev.kind in OPERATORS:
            return MatchSyntaxError(f"{prev.kind} needs a term after it", prev.column)
        if tok.kind in OPERATORS:
            return MatchSyntaxError(f"{tok.kind} needs a term before it", tok.column)
        if tok.kind == ")":
            return MatchSyntaxError("`)` without a matching `(`", tok.column)
        return MatchSyntaxError("a term is missing", tok.column)  # pragma: no cover


# --- evaluation -------------------------------------------------------------------


def _evaluate(node: Node, found: Callable[[Term], bool], hits: set[int]) -> bool:
    """True when `node` is satisfied; adds to `hits` the indices of the positive terms
    that made it so (an OR reports every branch that holds, an AND all of its parts)."""
    if isinstance(node, Term):
        if found(node):
            if not node.negated:
                hits.add(node.index)
            return True
        return False
    if isinstance(node, Not):
        return not _evaluate(node.child, found, set())
    if isinstance(node, And):
        mine: set[int] = set()
        for child in node.children:
            if not _evaluate(child, found, mine):
                return False
        hits |= mine
        return True
    any_true = False
    for child in node.children:
        any_true = _evaluate(child, found, hits) or any_true
    return any_true


def _terms(node: Node) -> list[Term]:
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return _terms(node.child)
    return [t for child in node.children for t in _terms(child)]


@dataclass(frozen=True)
class Matcher:
    """A compiled `match` expression. Equal when the expressions are equal."""

    expr: str
    root: Node = field(compare=False, repr=False)
    _written: dict[int, str] = field(compare=False, repr=False, default_factory=dict)

    def hits(self, *texts: str) -> tuple[str, ...] | None:
        """None if the entry does not match; else the positive terms that hit, in
        expression order, deduplicated, as written (phrases with their quotes).

        `texts` are plain text (title, summary); each is searched separately."""
        normalised = [unicodedata.normalize("NFKC", t) for t in texts if t]
        cache: dict[int, bool] = {}

        def found(term: Term) -> bool:
            hit = cache.get(term.index)
            if hit is None:
                hit = cache[term.index] = any(term.pattern.search(t) for t in normalised)
            return hit

        indices: set[int] = set()
        if not _evaluate(self.root, found, indices):
            return None
        return tuple(dict.fromkeys(self._written[i] for i in sorted(indices)))


def compile_match(expr: str) -> Matcher:
    """Parse `expr` once; raise `MatchSyntaxError` (message, 1-based column) if it is
    not a valid expression or has nothing to look for (every term negated)."""
    root = _Parser(expr).parse()
    terms = _terms(root)
    if all(t.negated for t in terms):
        raise MatchSyntaxError("nothing to look for: every term is negated with NOT", 1)
    return Matcher(expr, root, {t.index: t.written for t in terms})
