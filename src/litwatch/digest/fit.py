"""Mail that arrives whole (issue 26): Gmail clips an HTML body over ~102 KB, hiding
everything after it, the footer too. A digest whose HTML or text part would be larger
than PART_LIMIT is cut into numbered parts ("(1 of 3)"), each with fewer items and
each whole, footer included; together they hold every item once.

Pure: `regroup(events, max_items)` groups the given events again (the caller's
`group`), `size(data)` renders and measures a part."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from .group import DigestData

PART_LIMIT = 100_000  # bytes, decoded, of the HTML part and of the text part

E = TypeVar("E")  # a pending event: anything with an `id`


def fit(
    data: DigestData,
    events: Sequence[E],
    *,
    regroup: Callable[[list[E], int], DigestData],
    size: Callable[[DigestData], int],
    event_id: Callable[[E], int],
    limit: int = PART_LIMIT,
) -> list[DigestData]:
    """`data` as it is when it fits, else parts that do, in `data`'s order. A single
    item over the limit goes out on its own (it cannot be cut)."""
    if size(data) <= limit or data.items < 2:
        return [data]
    wanted = set(data.event_ids)
    left = [e for e in events if event_id(e) in wanted]
    parts: list[DigestData] = []
    per_part = max(1, data.items * limit // max(size(data), 1))  # a first guess, refined below
    while left:
        part = regroup(left, per_part)
        while part.items > 1 and size(part) > limit:
            per_part = max(1, part.items * 3 // 4)
            part = regroup(left, per_part)
        taken = set(part.event_ids)
        if not taken:  # nothing bound: cannot happen with events left, but never loop forever
            break
        parts.append(dataclasses.replace(part, more_waiting=0))
        left = [e for e in left if event_id(e) not in taken]
    if parts:
        parts[-1] = dataclasses.replace(parts[-1], more_waiting=data.more_waiting)
    return parts
