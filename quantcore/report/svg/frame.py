"""The frame of an SVG plot: escaping, 1-2-5 ticks, scales, boxes, frames, text and axes.

A ``Frame`` is one panel's plot area with its scales: it maps data to pixels (SVG's y grows
downwards). Each primitive returns a piece of SVG; ``document`` wraps the pieces of a figure.

Every text and attribute value goes through ``esc`` (tensor names come from user uploads).
Non-finite values never reach the output: a polyline breaks at them, a marker or stem is
left out, and a range is taken over the finite values only.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

FONT = "system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"
# Tableau's ten colours ("tab10"), then the same colours with another marker shape.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
MARKERS = ("circle", "square", "diamond", "triangle")
INK, GRID = "#333", "#e4e4e4"
TICK_FONT, LABEL_FONT, TITLE_FONT = 12, 13, 14
# Average glyph width of a sans-serif font, in font sizes: enough to lay out and trim text.
CHAR_WIDTH = 0.58
TICK_LEN = 4

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(text: object) -> str:
    """``text`` safe as SVG/HTML text and as a quoted attribute; characters that XML forbids
    (control characters, lone surrogates) are dropped."""
    return html.escape(_XML_INVALID.sub("", str(text)), quote=True)


def style(index: int) -> tuple[str, str]:
    """(colour, marker) of the ``index``-th series: ten colours, then another marker."""
    return PALETTE[index % len(PALETTE)], MARKERS[(index // len(PALETTE)) % len(MARKERS)]


# --- ticks -----------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Ticks at the smallest 1-2-5 step (1, 2 or 5 times a power of ten) for which the ticks
    from the last multiple at or below ``lo`` to the first at or above ``hi`` number at most
    ``max_ticks`` (at least 4). An empty range (``lo == hi``) is widened around its value."""
    lo, hi = _widen(lo, hi)
    max_ticks = max(max_ticks, 4)
    for step, e in _steps(lo, hi, max_ticks):
        # The tolerance keeps 0.3 / 0.1 = 2.9999999999999996 from adding a tick below.
        first = math.floor(lo / step + 1e-9)
        last = math.ceil(hi / step - 1e-9)
        if last - first + 1 <= max_ticks:
            return _multiples(first, last - first + 1, step, e)
    raise AssertionError("unreachable")  # pragma: no cover


def nice_ticks_n(lo: float, hi: float, count: int) -> list[float]:
    """Exactly ``count`` ticks (at least 3) at the smallest 1-2-5 step that covers ``lo..hi``
    from the last multiple at or below ``lo``: a second axis whose ticks share the first's
    grid lines."""
    lo, hi = _widen(lo, hi)
    count = max(count, 3)
    for step, e in _steps(lo, hi, count - 1):
        first = math.floor(lo / step + 1e-9)
        if (first + count - 1) * step >= hi - 1e-9 * step:
            return _multiples(first, count, step, e)
    raise AssertionError("unreachable")  # pragma: no cover


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` in order, an empty range widened around its value."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range {lo}, {hi} must be finite")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _steps(lo: float, hi: float, intervals: int) -> Iterator[tuple[float, int]]:
    """1-2-5 steps and their powers of ten, from about ``(hi - lo) / intervals`` upwards."""
    for e in itertools.count(math.floor(math.log10((hi - lo) / intervals))):
        for mantissa in (1, 2, 5):
            yield mantissa * 10.0**e, e


def _multiples(first: int, count: int, step: float, e: int) -> list[float]:
    digits = max(0, -e)
    return [round(i * step, digits) for i in range(first, first + count)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with as many decimals as the step needs (one format for all ticks of an axis);
    very large or small values in ``g`` format. A minus sign, never "-0"."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    biggest = max(abs(t) for t in ticks)
    if step >= 1e-4 and biggest < 1e6:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        texts = [f"{t:.{decimals}f}" for t in ticks]
    else:
        texts = [f"{t:.3g}" for t in ticks]
    return [
        "0" if float(t) == 0 else text.replace("-", "\N{MINUS SIGN}")
        for t, text in zip(ticks, texts, strict=True)
    ]


def finite_range(*arrays: npt.ArrayLike) -> tuple[float, float]:
    """(min, max) over the finite values of all ``arrays``; (0, 1) if there are none."""
    parts = [np.asarray(a, np.float64).ravel() for a in arrays]
    values = np.concatenate(parts) if parts else np.empty(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


# --- frames ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Scale:
    """Data ``lo..hi`` onto pixels ``start..end``; ``ticks`` lie within ``lo..hi``."""

    lo: float
    hi: float
    ticks: tuple[float, ...]
    start: float
    end: float

    @classmethod
    def fit(
        cls,
        lo: float,
        hi: float,
        start: float,
        end: float,
        *,
        max_ticks: int = 6,
        tight: bool = False,
        pad: float = 0.0,
    ) -> Scale:
        """Nice ticks over ``lo..hi``. The axis ends at the outer ticks or, ``tight``, at
        ``lo`` and ``hi`` themselves with the ticks between them; ``pad`` pixels stay free
        at both ends, so that no mark sits on the frame."""
        lo, hi = _widen(lo, hi)
        ticks = nice_ticks(lo, hi, max_ticks)
        if tight:
            eps = 1e-9 * (hi - lo)
            inner = [t for t in nice_ticks(lo, hi, max_ticks + 2) if lo - eps <= t <= hi + eps]
            if len(inner) >= 2:
                ticks = inner
        if not tight or ticks[0] < lo or ticks[-1] > hi:
            lo, hi = ticks[0], ticks[-1]
        sign = 1.0 if end >= start else -1.0
        return cls(lo=lo, hi=hi, ticks=tuple(ticks), start=start + sign * pad, end=end - sign * pad)

    @classmethod
    def aligned(cls, lo: float, hi: float, like: Scale) -> Scale:
        """A second scale over ``lo..hi`` with as many ticks as ``like``, at its tick
        positions."""
        ticks = nice_ticks_n(lo, hi, len(like.ticks))
        if len(ticks) != len(like.ticks):  # ``like`` has fewer than 3 ticks
            return cls.fit(lo, hi, like.start, like.end)
        start, end = like.px([like.ticks[0], like.ticks[-1]]).tolist()
        return cls(lo=ticks[0], hi=ticks[-1], ticks=tuple(ticks), start=start, end=end)

    def px(self, values: npt.ArrayLike) -> FloatArray:
        v = np.asarray(values, np.float64)
        return self.start + (v - self.lo) * ((self.end - self.start) / (self.hi - self.lo))


@dataclass(frozen=True, kw_only=True)
class Box:
    """A rectangle in pixels."""

    left: float
    top: float
    width: float
    height: float

    def inset(self, *, left: float, top: float, right: float, bottom: float) -> Box:
        return Box(
            left=self.left + left,
            top=self.top + top,
            width=self.width - left - right,
            height=self.height - top - bottom,
        )


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One panel's plot area; ``y2`` is an optional second y scale, labelled on the right."""

    box: Box
    x: Scale
    y: Scale
    y2: Scale | None = None

    @classmethod
    def fit(
        cls,
        box: Box,
        x: tuple[float, float],
        y: tuple[float, float],
        y2: tuple[float, float] | None = None,
        *,
        tight_x: bool = False,
        pad: float = 0.0,
    ) -> Frame:
        """Scales for data ranges ``x``, ``y`` (and ``y2``, its ticks on ``y``'s grid lines);
        see ``Scale.fit`` for ``tight_x`` and ``pad``."""
        bottom = box.top + box.height
        right = box.left + box.width
        y_scale = Scale.fit(*y, bottom, box.top, pad=pad)
        return cls(
            box=box,
            x=Scale.fit(*x, box.left, right, max_ticks=7, tight=tight_x, pad=pad),
            y=y_scale,
            y2=None if y2 is None else Scale.aligned(*y2, like=y_scale),
        )

    def y_scale(self, right: bool) -> Scale:
        if right:
            if self.y2 is None:
                raise ValueError("this frame has no second y scale")
            return self.y2
        return self.y


def coord(value: float) -> str:
    """A pixel coordinate: one decimal, no "-0.0"."""
    text = f"{value:.1f}"
    return "0" if text in ("0.0", "-0.0") else text.removesuffix(".0")


def text(
    x: float,
    y: float,
    content: str,
    *,
    size: int = TICK_FONT,
    anchor: str = "middle",
    color: str = INK,
    rotate: int = 0,
    bold: bool = False,
    tooltip: str | None = None,
) -> str:
    """A text node; ``content`` is escaped here. ``rotate`` turns it about its anchor."""
    attrs = f'x="{coord(x)}" y="{coord(y)}" font-size="{size}"'
    if anchor != "start":
        attrs += f' text-anchor="{anchor}"'
    if color != INK:
        attrs += f' fill="{color}"'
    if rotate:
        attrs += f' transform="rotate({rotate} {coord(x)} {coord(y)})"'
    if bold:
        attrs += ' font-weight="600"'
    inner = esc(content)
    if tooltip is not None:
        inner = f"<title>{esc(tooltip)}</title>{inner}"
    return f"<text {attrs}>{inner}</text>"


def fit_text(content: str, width: float, size: int) -> str:
    """``content``, cut with an ellipsis to about ``width`` pixels at font ``size``."""
    fits = max(int(width / (CHAR_WIDTH * size)), 2)
    return content if len(content) <= fits else content[: fits - 1] + "\N{HORIZONTAL ELLIPSIS}"


def text_width(content: str, size: int) -> float:
    return len(content) * CHAR_WIDTH * size


def axes(
    frame: Frame,
    *,
    title: str,
    x_label: str,
    y_label: str,
    y2_label: str | None = None,
    y2_color: str = INK,
) -> str:
    """Grid, border, ticks with labels, axis labels and the title of ``frame``."""
    box = frame.box
    left, top = box.left, box.top
    right, bottom = left + box.width, top + box.height
    xs = frame.x.px(frame.x.ticks)
    ys = frame.y.px(frame.y.ticks)
    grid = "".join(
        f"M{coord(x)} {coord(top)}V{coord(bottom)}" for x in xs if left + 0.5 < x < right - 0.5
    ) + "".join(
        f"M{coord(left)} {coord(y)}H{coord(right)}" for y in ys if top + 0.5 < y < bottom - 0.5
    )
    ticks = "".join(f"M{coord(x)} {coord(bottom)}v{TICK_LEN}" for x in xs) + "".join(
        f"M{coord(left)} {coord(y)}h-{TICK_LEN}" for y in ys
    )
    parts = [
        f'<path d="{grid}" stroke="{GRID}" fill="none"/>' if grid else "",
        f'<rect x="{coord(left)}" y="{coord(top)}" width="{coord(box.width)}" '
        f'height="{coord(box.height)}" fill="none" stroke="{INK}"/>',
        f'<path d="{ticks}" stroke="{INK}" fill="none"/>',
    ]
    parts += [
        text(x, bottom + TICK_LEN + TICK_FONT + 1, label)
        for x, label in zip(xs, tick_labels(frame.x.ticks), strict=True)
    ]
    parts += [
        text(left - TICK_LEN - 2, y + TICK_FONT / 3, label, anchor="end")
        for y, label in zip(ys, tick_labels(frame.y.ticks), strict=True)
    ]
    y_width = max(text_width(t, TICK_FONT) for t in tick_labels(frame.y.ticks))
    middle_y = (top + bottom) / 2
    parts.append(
        text(
            left - TICK_LEN - y_width - 8,
            middle_y,
            y_label,
            size=LABEL_FONT,
            rotate=-90,
        )
    )
    parts.append(text((left + right) / 2, bottom + 2 * TICK_FONT + 14, x_label, size=LABEL_FONT))
    if frame.y2 is not None:
        y2s = frame.y2.px(frame.y2.ticks)
        labels2 = tick_labels(frame.y2.ticks)
        parts.append(
            f'<path d="{"".join(f"M{coord(right)} {coord(y)}h{TICK_LEN}" for y in y2s)}" '
            f'stroke="{y2_color}" fill="none"/>'
        )
        parts += [
            text(right + TICK_LEN + 2, y + TICK_FONT / 3, label, anchor="start", color=y2_color)
            for y, label in zip(y2s, labels2, strict=True)
        ]
        if y2_label:
            y2_width = max(text_width(t, TICK_FONT) for t in labels2)
            parts.append(
                text(
                    right + TICK_LEN + y2_width + 10,
                    middle_y,
                    y2_label,
                    size=LABEL_FONT,
                    rotate=90,
                    color=y2_color,
                )
            )
    shown = fit_text(title, box.width + 40, TITLE_FONT)
    parts.append(
        text(
            (left + right) / 2,
            top - 8,
            shown,
            size=TITLE_FONT,
            bold=True,
            tooltip=title if shown != title else None,
        )
    )
    return "".join(parts)
