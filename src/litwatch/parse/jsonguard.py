"""What every JSON answer goes through before it is parsed: bounded nesting and a
UTF-8 byte order mark.

ijson's prefixed events (`ijson.parse`, `ijson.items`) keep one prefix per level, each
as long as the path to it: memory and time grow with the square of the nesting, and
a 200 KB answer nested 40,000 deep takes gigabytes (the size cap cannot stop that,
nor can `isolated()` catch an OOM kill). `json.loads` recurses once per level
(RecursionError). No answer litwatch reads nests deeper than a dozen levels, so an
answer nested deeper than `MAX_DEPTH` is refused before any parser sees it, in time
proportional to its size and constant memory: strings are cut out by their quotes,
the brackets left are counted in C (`itertools.accumulate`), stopping at the first
level too deep, `_CHUNK` bytes at a time.

A UTF-8 BOM at the start of an answer (RFC 8259 §8.1: a parser may ignore it) is
dropped: ijson would call the answer invalid JSON."""

from __future__ import annotations

import json
import operator
from functools import partial
from itertools import accumulate, count
from typing import IO, Any

from ..errors import ParseError

MAX_DEPTH = 64
BOM = b"\xef\xbb\xbf"
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # an opener +1, a closer -1 (each minus one)
_CHUNK = 1 << 16  # bytes read at a time: the check's memory, whatever the answer's size


def depth_over(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether `data` nests arrays and objects deeper than `limit` (brackets inside
    strings aside). Reads `_CHUNK` bytes at a time; all the work is in C (bytes
    methods, `itertools.accumulate`), none per byte or per bracket in Python."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case of a small answer, in two scans
    depth, inside, pos, n = 0, False, 0, len(data)
    while pos < n:
        end = min(pos + _CHUNK, n)
        while end < n and data[end - 1] == 0x5C:  # never end a chunk inside an escape (\, \")
            end += 1
        # escaped quotes and backslashes out of the way: every quote left opens or closes a string
        seg = data[pos:end].replace(b"\\\\", b"__").replace(b'\\"', b"__")
        parts = seg.split(b'"')
        outside = b"".join(parts[1 if inside else 0 :: 2])
        inside ^= len(parts) % 2 == 0
        steps = outside.translate(None, _NOT_BRACKETS).translate(_STEP)
        # depth after each bracket = depth + sum(steps so far) - how many so far
        depths = map(operator.sub, accumulate(steps, initial=depth), count(0))
        if next(filter(partial(operator.lt, limit), depths), None) is not None:
            return True
        depth += 2 * steps.count(2) - len(steps)
        pos = end
    return False


def guarded(body: bytes | IO[bytes], *, what: str, url: str | None = None, limit: int = MAX_DEPTH) -> bytes:
    """`body` as bytes, without a leading BOM; `ParseError` when it nests deeper than
    `limit`."""
    data = body if isinstance(body, bytes) else body.read()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    if depth_over(data, limit):
        where = f" from {url}" if url else ""
        raise ParseError(f"{what}: the answer{where} nests deeper than {limit} levels; refusing it", url=url)
    return data


def loads(body: bytes, *, what: str = "JSON", limit: int = MAX_DEPTH) -> Any:
    """`json.loads` of an answer (an error body, a small page) with the same guard: a
    `ParseError` instead of a RecursionError or an answer beginning with a BOM."""
    return json.loads(guarded(body, what=what, limit=limit))
