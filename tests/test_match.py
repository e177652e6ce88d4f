"""The `match` language (SPEC.md, queries[].match): parser, evaluator, hit terms, errors."""

from __future__ import annotations

import pytest

from litwatch.match import And, Matcher, MatchSyntaxError, Not, Or, Term, compile_match


def shape(node: object) -> object:
    """The AST as nested tuples of written terms, to compare parses at a glance."""
    if isinstance(node, Term):
        return ("-" if node.negated else "") + node.written
    if isinstance(node, Not):
        return ("NOT", shape(node.child))
    if isinstance(node, And):
        return ("AND", *(shape(c) for c in node.children))
    assert isinstance(node, Or)
    return ("OR", *(shape(c) for c in node.children))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("TRAIL", "TRAIL"),
        ("a OR b", ("OR", "a", "b")),
        ("a AND b", ("AND", "a", "b")),
        ("a b", ("AND", "a", "b")),  # implicit AND
        ("a b OR c", ("OR", ("AND", "a", "b"), "c")),
        ("a OR b AND c", ("OR", "a", ("AND", "b", "c"))),  # AND binds tighter than OR
        ("(a OR b) AND c", ("AND", ("OR", "a", "b"), "c")),
        ("NOT a AND b", ("AND", ("NOT", "-a"), "b")),  # NOT binds tighter than AND
        ("a NOT b", ("AND", "a", ("NOT", "-b"))),  # PubMed-style a NOT b
        ("a AND NOT (b OR c)", ("AND", "a", ("NOT", ("OR", "-b", "-c")))),
        ("NOT NOT a OR b", ("OR", ("NOT", ("NOT", "-a")), "b")),
        ('"death receptor 5" OR TRAIL', ("OR", '"death receptor 5"', "TRAIL")),
        ("a and b or c", ("OR", ("AND", "a", "b"), "c")),  # operators in any case
        ('"or" a', ("AND", '"or"', "a")),  # a quoted operator is a word
        ("((a))", "a"),
        ("agonist* OR TRAIL-R2", ("OR", "agonist*", "TRAIL-R2")),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_parse_shape(expr: str, expected: object) -> None:
    assert shape(compile_match(expr).root) == expected


SPEC_EXAMPLE = 'TRAIL OR aponermin OR "death receptor 5"'


@pytest.mark.parametrize(
    ("expr", "title", "summary", "expected"),
    [
        (SPEC_EXAMPLE, "FDA approves aponermin for multiple myeloma", "", ("aponermin",)),
        (SPEC_EXAMPLE, "TRAIL agonists", "bind death receptor 5 (DR5)", ("TRAIL", '"death receptor 5"')),
        (SPEC_EXAMPLE, "Trail Making Test in the elderly", "", ("TRAIL",)),  # case-insensitive: a known false friend
        (SPEC_EXAMPLE, "Hiking trails", "entrails", None),  # whole words only
        (SPEC_EXAMPLE, "Receptor 5 of death", "", None),  # a phrase is consecutive words
        # hyphens separate words, and a hyphenated term matches across hyphen or space
        ("TRAIL", "Targeting TRAIL-R2 in myeloma", "", ("TRAIL",)),
        ('"TRAIL-R2"', "Targeting TRAIL-R2 in myeloma", "", ('"TRAIL-R2"',)),
        ("TRAIL-R2", "TRAIL R2 expression", "", ("TRAIL-R2",)),
        ("TRAIL-R2", "TRAIL/R2 ligand", "", ("TRAIL-R2",)),  # any non-word run separates
        ("TRAIL-R2", "TRAIL-R20", "", None),
        ('"death receptor 5"', "Death-receptor-5 agonists", "", ('"death receptor 5"',)),
        # wildcard
        ("agonist*", "A new agonistic antibody", "", ("agonist*",)),
        ("agonist*", "Agonist", "", ("agonist*",)),
        ("agonist*", "antagonists", "", None),
        ('"death recept*"', "death receptors", "", ('"death recept*"',)),
        # AND / OR / NOT
        ("TRAIL AND agonist*", "TRAIL", "agonists of DR5", ("TRAIL", "agonist*")),  # across title and summary
        ("TRAIL AND agonist*", "TRAIL", "antagonists", None),
        ("TRAIL NOT mouse", "TRAIL in mouse models", "", None),
        ("TRAIL NOT mouse", "TRAIL in human cells", "", ("TRAIL",)),
        ("TRAIL NOT (mouse OR rat)", "TRAIL in rat", "", None),
        ("TRAIL OR NOT mouse", "nothing here", "", ()),  # matched only through the NOT: no term to show
        ("(a AND b) OR c", "a and c", "", ("c",)),  # a hit in a failed branch is not a reason
        ("(a AND b) OR c", "a b c", "", ("a", "b", "c")),
        ("a OR b OR a", "b a", "", ("a", "b")),  # deduped, in expression order
        ("TRAIL OR trail", "trail", "", ("TRAIL", "trail")),  # as written
        ('"or"', "this or that", "", ('"or"',)),
        # Unicode words and normalisation
        ("Müller", "MÜLLER et al.", "", ("Müller",)),
        ("TNF-α", "TNF α and TNFα", "", ("TNF-α",)),
        ("α", "TNFα", "", None),  # TNFα is one word
        ("fibrosis", "ﬁbrosis", "", ("fibrosis",)),  # NFKC: the fi ligature
        ("café", "cafe\u0301 au lait", "", ("café",)),  # NFKC composes e + combining acute
        # plain text from stripped HTML: markup characters are separators
        ("TRAIL", "<em>TRAIL</em>-based", "", ("TRAIL",)),
        ("TRAIL", "", "", None),
        ("TRAIL", "TRAIL_x", "", None),  # underscore is a word character
    ],
)
def test_hits(expr: str, title: str, summary: str, expected: tuple[str, ...] | None) -> None:
    assert compile_match(expr).hits(title, summary) == expected


def test_phrase_does_not_span_title_and_summary() -> None:
    m = compile_match('"myeloma approval"')
    assert m.hits("Drug for myeloma", "Approval expected") is None
    assert m.hits("Drug for myeloma approval", "") == ('"myeloma approval"',)


def test_hits_takes_any_number_of_texts() -> None:
    m = compile_match("a AND b")
    assert m.hits("a", "x", "b") == ("a", "b")
    assert m.hits() is None


def test_matcher_is_frozen_and_compares_by_expression() -> None:
    m = compile_match("a OR b")
    assert isinstance(m, Matcher)
    assert m.expr == "a OR b"
    assert m == compile_match("a OR b")
    assert m != compile_match("a OR c")
    with pytest.raises(AttributeError):
        m.expr = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expr", "message", "column"),
    [
        ("", "empty", 1),
        ("   ", "empty", 1),
        ("TRAIL OR", "OR needs a term after it", 7),
        ("OR TRAIL", "OR needs a term before it", 1),
        ("TRAIL AND", "AND needs a term after it", 7),
        ("TRAIL NOT", "NOT needs a term after it", 7),
        ("a AND OR b", "AND needs a term after it", 3),
        ("(a OR b", "`(` is never closed", 1),
        ("a OR (b AND (c)", "`(` is never closed", 6),
        ("a OR b)", "`)` without a matching `(`", 7),
        ("a ()", "empty parentheses", 4),
        ('a OR "death receptor', "unterminated quote", 6),
        ('""', "empty phrase", 1),
        ('"  "', "empty phrase", 1),
        ("*", "`*` needs a word before it", 1),
        ("a OR *", "`*` needs a word before it", 6),
        ("ago*nist", "only allowed at the end of a word", 4),
        ("*agonist", "`*` must directly follow a word", 1),
        ("-", "no letters or digits", 1),
        ("NOT TRAIL", "every term is negated", 1),
        ("NOT (a OR b)", "every term is negated", 1),
    ],
)
def test_syntax_errors(expr: str, message: str, column: int) -> None:
    with pytest.raises(MatchSyntaxError) as info:
        compile_match(expr)
    err = info.value
    assert message in err.message
    assert err.column == column
    assert isinstance(err, ValueError)
    assert f"column {column}" in str(err)


@pytest.mark.timeout(30)  # a guard against catastrophic backtracking (under 1 s here), not a measurement
def test_fast_enough_for_thousands_of_entries() -> None:
    m = compile_match('(TRAIL OR aponermin OR "death receptor 5" OR DR5 OR Apo2L*) AND NOT (mouse OR murine)')
    summary = "Tumour necrosis factor-related apoptosis-inducing ligand binds DR4 and DR5 receptors. " * 20
    for i in range(5000):
        m.hits(f"Entry {i}: a study of receptor agonists", summary)
