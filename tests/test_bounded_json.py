"""Bounded parsing of every JSON answer (issue 24): an answer nested 100,000 deep is
refused before any parser sees it, in memory proportional to its size, measured in a
child process (whose address space is capped at 2 GB, so old code fails there instead
of taking the machine down); error bodies too (no RecursionError); a UTF-8 BOM is
accepted; the source fails, the rest of the cycle goes on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import TODAY, basic_config
from helpers.fake_crossref import FakeCrossref, Fault, real_works
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.parse.crossref import error_message, parse_works
from litwatch.parse.jsonguard import MAX_DEPTH, depth_over
from litwatch.service import Service

DEPTH = 100_000
SIZE = 1_000_000

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
which, depth, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from litwatch.errors import ParseError
from litwatch.parse.crossref import error_message, parse_works
from litwatch.parse.ema import parse_ema
from litwatch.parse.openfda import parse_drugsfda
head, tail = b'{"status":"ok","message-type":"work-list","message":', b"}"
pad = size - len(head) - len(tail) - 2 * depth - 2
body = head + b"[" * depth + b'"' + b"x" * pad + b'"' + b"]" * depth + tail
assert len(body) == size
run = {
    "crossref": lambda: parse_works(body, what="Crossref"),
    "crossref-error": lambda: error_message(body),
    "openfda": lambda: parse_drugsfda(body, feed_name="fda"),
    "ema": lambda: parse_ema(body, feed_name="ema"),
}[which]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    run()
    said = "parsed"
except ParseError as e:
    said = str(e)
except (MemoryError, RecursionError) as e:
    said = type(e).__name__
took = time.monotonic() - started
extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"extra_mb": extra, "seconds": took, "said": said}))
"""


def child(which: str) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(DEPTH), str(SIZE)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("which", ["crossref", "crossref-error", "openfda", "ema"])
def test_a_megabyte_nested_100000_deep_is_refused_in_bounded_memory(which: str) -> None:
    got = child(which)
    print(f"{which}: 1 MB nested {DEPTH:,} deep: +{got['extra_mb']:.1f} MB, {got['seconds']:.3f}s: {got['said']}")
    assert got["extra_mb"] < 50  # type: ignore[operator]
    if which != "crossref-error":
        assert f"nests deeper than {MAX_DEPTH} levels" in str(got["said"])


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert not depth_over(b'{"a": "' + b"[" * 1000 + b'"}')
    assert not depth_over(b"[" * 64 + b"]" * 64)
    assert depth_over(b"[" * 65 + b"]" * 65)
    assert not depth_over(b'["\\"' + b"[" * 100 + b'"]')  # an escaped quote does not end the string
    assert depth_over(b"[{}," * 10 + b'{"a":' * 65 + b"1" + b"}" * 65 + b"]" * 10)
    # across the 64 KB pieces it reads: a string, an escape, a nesting cut in two
    assert not depth_over(b'["' + b"x" * 65_530 + b"[" * 100 + b'"]')
    escaped = b'["' + b"x" * 65_533 + b'\\"' + b"[" * 100 + b'\\"' + b'"]'  # the backslash ends the first piece
    assert escaped[65_535:65_537] == b'\\"' and not depth_over(escaped + b"[" * 60 + b"]" * 60)
    assert depth_over(b"[" * 40 + b" " * 65_500 + b"[" * 40 + b"]" * 80)
    assert not depth_over(b"[" * 40 + b" " * 65_500 + b"]" * 40 + b"[" * 40 + b"]" * 40)


def test_an_error_body_nested_deep_is_no_recursion_error() -> None:
    assert error_message(b"[" * 100_000 + b"]" * 100_000) == ("[" * 300)


def test_an_answer_beginning_with_a_bom_is_read() -> None:
    work = real_works()["10.1021/am300292v"]
    body = b"\xef\xbb\xbf" + json.dumps({"status": "ok", "message-type": "work", "message": work}).encode()
    page = parse_works(body, what="Crossref")
    assert page.dois == frozenset({"10.1021/am300292v"}) and len(page.notices) == 1


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    fake = FakeCrossref().start()
    yield fake
    fake.stop()


def test_a_nested_answer_fails_that_source_and_the_cycle_goes_on(
    tmp_path: Path, eutils: FakeEutils, crossref: FakeCrossref, store_url: str
) -> None:
    from datetime import timedelta

    eutils.add("1", terms="TRAIL", edat=TODAY - timedelta(days=1), title="A TRAIL paper", doi="10.1021/AM300292V")
    block = f"crossref:\n  email: test@example.org\n  base_url: {crossref.url}\n  backoff: 0.05\n"
    settings = load(basic_config(tmp_path, eutils.url, db=store_url, extra=block))
    nested = b'{"status":"ok","message-type":"work-list","message":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    crossref.faults += [Fault(route="works", body=nested) for _ in range(3)]
    svc = Service(settings)
    try:
        results = {r.name: r for r in svc.poll()}
    finally:
        svc.close()
    assert results["trail"].ok and results["trail"].new == 1
    assert not results["crossref"].ok and "nests deeper than 64 levels" in (results["crossref"].error or "")
