"""Events per week per query and kind, as server-rendered SVG (no script): one small
stacked bar chart per query, weeks left to right, a bar's parts coloured by kind
(classes the page's CSS colours, light and dark)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from markupsafe import Markup

WEEKS = 12
W, H, PAD = 360, 120, 18


@dataclass
class QueryChart:
    query: str
    total: int
    kinds: dict[str, int]
    svg: Markup


def weekly_chart(counts: dict[tuple[str, str, datetime], int], now: datetime, queries: list[str]) -> list[QueryChart]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    this_monday = today - timedelta(days=today.weekday())
    weeks = [this_monday - timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]
    names = list(dict.fromkeys([*queries, *(q for q, _, _ in counts)]))
    out = []
    for q in names:
        per_week = {w: {k: n for (qq, k, ww), n in counts.items() if qq == q and ww == w} for w in weeks}
        peak = max((sum(v.values()) for v in per_week.values()), default=0) or 1
        kinds: dict[str, int] = {}
        bar_w = (W - PAD) / WEEKS
        parts = [
            f'<svg class="chart" viewBox="0 0 {W} {H + PAD}" role="img" '
            f'aria-label="events per week for {escape(q)}" xmlns="http://www.w3.org/2000/svg">',
            f'<line class="axis" x1="{PAD}" y1="{H}" x2="{W}" y2="{H}"/>',
            f'<text class="label" x="0" y="12">{peak}</text>',
        ]
        for i, w in enumerate(weeks):
            y = float(H)
            for kind, n in sorted(per_week[w].items()):
                kinds[kind] = kinds.get(kind, 0) + n
                h = (H - 14) * n / peak
                y -= h
                x = PAD + i * bar_w + 2
                parts.append(
                    f'<rect class="k-{escape(kind)}" x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}">'
                    f"<title>week of {w:%Y-%m-%d}: {n} {escape(kind)}</title></rect>"
                )
            if i % 3 == 0:
                parts.append(f'<text class="label" x="{PAD + i * bar_w:.1f}" y="{H + 14}">{w:%m-%d}</text>')
        parts.append("</svg>")
        out.append(QueryChart(q, sum(kinds.values()), kinds, Markup("".join(parts))))
    return out
