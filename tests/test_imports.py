"""No import cycle in src/litwatch (issue 15): every import of a litwatch module by
another — at module level or inside a function, where a cycle hides best — read with
`ast`; only imports under `if TYPE_CHECKING:` (annotations, never run) are left out."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "litwatch"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The litwatch modules `path` imports when it runs."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("litwatch"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if not target.startswith("litwatch"):
                    continue
                found.add(target)
                for a in child.names:  # `from . import events`: a module, not a name
                    if f"{target}.{a.name}" in modules:
                        found.add(f"{target}.{a.name}")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    # importing a.b.c runs a and a.b first: a package's own __init__ is not a cycle
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    paths = {_module(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)
    return {m: _imports(p, modules) for m, p in paths.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, as the path that closes it (depth-first search)."""
    out: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                out.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                walk(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            walk(m)
    return out


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_relative_and_lazy_imports() -> None:
    g = graph()
    assert "litwatch.ingest" in g["litwatch.polls.feeds"]  # from ..ingest import ...
    assert "litwatch.polls.pubmed" in g["litwatch.polls.cycle"]  # imported inside a method


def test_no_import_cycle_in_src() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)
