"""A small inline SVG chart for the comparison page: one series per job, bits per weight
on x, and SQNR or top-1 on y. Markup only (no script, no style attribute), so the portal's
content policy lets it show."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from service.api.portal.views import JobView, Point

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2")
WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def chart(views: Sequence[JobView], y_of: Callable[[Point], float | None], y_label: str,
          title: str) -> str:
    series = [(v, [(p.bits_per_weight, y) for p in v.points if (y := y_of(p)) is not None])
              for v in views]
    values = [xy for _, pts in series for xy in pts]
    if not values:
        return f"<p>No {html.escape(y_label)} to plot for these jobs.</p>"
    xs, ys = [x for x, _ in values], [y for _, y in values]
    x0, x1 = min(xs) - 0.25, max(xs) + 0.25
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)

    e = html.escape
    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart" '
             f'aria-label="{e(title)}"><title>{e(title)}</title>',
             f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
             f'height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#888"/>']
    for t in _ticks(x0, x1):
        parts.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{TOP}" '
                     f'y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>'
                     f'<text x="{sx(t):.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="12" '
                     f'text-anchor="middle" fill="#333">{t:g}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(t):.1f}" '
                     f'y2="{sy(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" font-size="12" '
                     f'text-anchor="end" fill="#333">{t:g}</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" font-size="13" '
                 f'text-anchor="middle" fill="#111">entropy bits per weight</text>'
                 f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" font-size="13" '
                 f'text-anchor="middle" fill="#111" transform="rotate(-90 14 '
                 f'{(TOP + HEIGHT - BOTTOM) / 2})">{e(y_label)}</text>')
    for i, (view, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        ordered = sorted(points)
        if len(ordered) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ordered)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5"/>')
        for x, y in ordered:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}">'
                         f'<title>{e(view.title)}: {x:.3g} bits, {e(y_label)} {y:.4g}</title>'
                         "</circle>")
    parts.append("</svg>")
    legend = "".join(
        f'<li><svg width="14" height="14" aria-hidden="true"><circle cx="7" cy="7" r="5" '
        f'fill="{COLOURS[i % len(COLOURS)]}"/></svg> {e(view.title)}</li>'
        for i, (view, _) in enumerate(series)
    )
    return f'<figure class="figure">{"".join(parts)}<figcaption>{e(title)}<ul ' \
           f'class="legend">{legend}</ul></figcaption></figure>'
