"""The marks of an SVG plot: polylines, markers, stems, step histograms, rules, notes,
series, legends and the document that wraps a figure.

Non-finite values never reach the output: a polyline breaks at them, a marker or stem is left
out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.report.svg.frame import (
    FONT,
    INK,
    LABEL_FONT,
    TICK_FONT,
    Box,
    FloatArray,
    Frame,
    coord,
    esc,
    fit_text,
    text,
    text_width,
)


def _points(frame: Frame, x: npt.ArrayLike, y: npt.ArrayLike, right: bool) -> FloatArray:
    """(n, 2) pixel coordinates; a row is NaN where either value is not finite."""
    xv = np.asarray(x, np.float64).ravel()
    yv = np.asarray(y, np.float64).ravel()
    if xv.shape != yv.shape:
        raise ValueError(f"x and y differ in length: {xv.size} and {yv.size}")
    with np.errstate(invalid="ignore", over="ignore"):
        pts = np.stack([frame.x.px(xv), frame.y_scale(right).px(yv)], axis=1)
    pts[~np.isfinite(pts).all(axis=1)] = np.nan
    return pts


def polyline(
    frame: Frame,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    color: str,
    width: float = 1.6,
    dash: str | None = None,
    right: bool = False,
) -> str:
    """A line through the points in order, broken where a value is not finite (a run of a
    single point draws nothing: give it a marker)."""
    pts = _points(frame, x, y, right)
    ok = np.isfinite(pts[:, 0])
    runs: list[str] = []
    start = None
    for i, good in enumerate([*ok.tolist(), False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            if i - start > 1:
                run = pts[start:i].tolist()
                runs.append("M" + "L".join(f"{coord(px)} {coord(py)}" for px, py in run))
            start = None
    if not runs:
        return ""
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<path d="{"".join(runs)}" fill="none" stroke="{color}" stroke-width="{width}"'
        f' stroke-linejoin="round"{extra}/>'
    )


def _marker_path(shape: str, px: float, py: float, r: float) -> str:
    if shape == "square":
        r *= 0.9
        return f"M{coord(px - r)} {coord(py - r)}h{coord(2 * r)}v{coord(2 * r)}h{coord(-2 * r)}z"
    if shape == "diamond":
        r *= 1.2
        step, back = coord(r), coord(-r)
        return f"M{coord(px)} {coord(py - r)}l{step} {step}l{back} {step}l{back} {back}z"
    if shape == "triangle":
        r *= 1.15
        return f"M{coord(px)} {coord(py - r)}l{coord(r)} {coord(1.7 * r)}h{coord(-2 * r)}z"
    return (
        f"M{coord(px - r)} {coord(py)}a{coord(r)} {coord(r)} 0 1 0 {coord(2 * r)} 0"
        f"a{coord(r)} {coord(r)} 0 1 0 {coord(-2 * r)} 0z"
    )


def markers(
    frame: Frame,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    color: str,
    shape: str = "circle",
    size: float = 3.5,
    filled: bool = True,
    right: bool = False,
) -> str:
    """One marker per point with finite coordinates, as a single path."""
    pts = _points(frame, x, y, right)
    pts = pts[np.isfinite(pts[:, 0])]
    if pts.size == 0:
        return ""
    d = "".join(_marker_path(shape, px, py, size) for px, py in pts.tolist())
    paint = f'fill="{color}"' if filled else f'fill="none" stroke="{color}" stroke-width="1.8"'
    return f'<path d="{d}" {paint}/>'


def stems(
    frame: Frame,
    x: npt.ArrayLike,
    heights: npt.ArrayLike,
    *,
    color: str,
    right: bool = False,
) -> str:
    """A vertical line from 0 (or the scale's bottom) up to each height, with a dot on top."""
    scale = frame.y_scale(right)
    base = float(scale.px(max(scale.lo, 0.0)))
    pts = _points(frame, x, heights, right)
    pts = pts[np.isfinite(pts[:, 0])]
    if pts.size == 0:
        return ""
    d = "".join(f"M{coord(px)} {coord(base)}V{coord(py)}" for px, py in pts.tolist())
    return f'<path d="{d}" stroke="{color}" stroke-width="2" fill="none"/>' + markers(
        frame, x, heights, color=color, size=2.2, right=right
    )


def stairs(frame: Frame, edges: npt.ArrayLike, heights: npt.ArrayLike, *, color: str) -> str:
    """A filled step histogram: ``heights[i]`` over ``edges[i]..edges[i + 1]`` (non-finite
    heights count as 0)."""
    e = np.asarray(edges, np.float64).ravel()
    h = np.nan_to_num(np.asarray(heights, np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    if e.size != h.size + 1 or not np.isfinite(e).all():
        raise ValueError("stairs needs len(heights) + 1 finite edges")
    xs = frame.x.px(e).tolist()
    ys = frame.y.px(h).tolist()
    base = float(frame.y.px(max(frame.y.lo, 0.0)))
    d = f"M{coord(xs[0])} {coord(base)}" + "".join(
        f"V{coord(y)}H{coord(x1)}" for y, x1 in zip(ys, xs[1:], strict=True)
    )
    return f'<path d="{d}V{coord(base)}Z" fill="{color}"/>'


def vline(frame: Frame, x: float, *, color: str = INK, dash: str | None = "5 4") -> str:
    """A vertical rule across the plot area at data ``x`` (nothing if ``x`` is not finite)."""
    if not math.isfinite(x):
        return ""
    px = float(frame.x.px(x))
    box = frame.box
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<path d="M{coord(px)} {coord(box.top)}V{coord(box.top + box.height)}" stroke="{color}"'
        f' stroke-width="1.2" fill="none"{extra}/>'
    )


def note(frame: Frame, content: str) -> str:
    """A grey remark in the middle of the plot area (e.g. why a panel has no data)."""
    box = frame.box
    return text(
        box.left + box.width / 2, box.top + box.height / 2, content, size=LABEL_FONT, color="#777"
    )


def group(tooltip: str, *parts: str, kind: str = "series") -> str:
    """``parts`` as one group whose ``<title>`` names it (tooltip and accessible name);
    ``kind`` (its class) tells a panel from a series."""
    return f'<g class="{esc(kind)}"><title>{esc(tooltip)}</title>{"".join(parts)}</g>'


@dataclass(frozen=True, kw_only=True)
class Series:
    """Points drawn as a line, markers or both; ``label`` is its ``<title>``."""

    label: str
    x: npt.ArrayLike
    y: npt.ArrayLike
    color: str
    line: bool = True
    dash: str | None = None
    marker: str | None = "circle"
    size: float = 3.5
    filled: bool = True


def plot(frame: Frame, series: Series) -> str:
    """``series`` in ``frame``, as one titled group."""
    parts = []
    if series.line:
        parts.append(polyline(frame, series.x, series.y, color=series.color, dash=series.dash))
    if series.marker:
        parts.append(
            markers(
                frame,
                series.x,
                series.y,
                color=series.color,
                shape=series.marker,
                size=series.size,
                filled=series.filled,
            )
        )
    return group(series.label, *parts)


def has_points(series: Sequence[Series]) -> bool:
    """Whether any of ``series`` has a point with both coordinates finite."""
    for s in series:
        x = np.asarray(s.x, np.float64).ravel()
        y = np.asarray(s.y, np.float64).ravel()
        if x.size and (np.isfinite(x) & np.isfinite(y)).any():
            return True
    return False


# --- legends and documents -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Key:
    """One legend entry: a line (solid or dashed), a marker, or a filled patch."""

    label: str
    color: str
    line: bool = False
    dash: str | None = None
    marker: str | None = None
    patch: bool = False
    stem: bool = False
    filled: bool = True


_SWATCH = 26
_ROW = 18


def legend_size(keys: Sequence[Key], width: float) -> tuple[int, float, float]:
    """(columns, column width, height) of ``keys`` laid out row by row within ``width``."""
    if not keys:
        return 1, width, 0.0
    column = _SWATCH + 6 + max(text_width(k.label, LABEL_FONT) for k in keys) + 18
    columns = max(1, min(len(keys), int(width // column)))
    rows = math.ceil(len(keys) / columns)
    return columns, min(column, width), rows * _ROW + 6


def legend(keys: Sequence[Key], box: Box) -> str:
    """``keys`` in rows, centred in ``box`` (its height from ``legend_size``)."""
    if not keys:
        return ""
    columns, column, _ = legend_size(keys, box.width)
    used = min(columns, len(keys)) * column
    left0 = box.left + (box.width - used) / 2
    parts = []
    for i, key in enumerate(keys):
        row, col = divmod(i, columns)
        x = left0 + col * column
        y = box.top + row * _ROW + _ROW / 2 + 2
        parts.append(_swatch(key, x, y))
        label = fit_text(key.label, column - _SWATCH - 12, LABEL_FONT)
        parts.append(
            text(x + _SWATCH + 6, y + LABEL_FONT / 3, label, size=LABEL_FONT, anchor="start")
        )
    return f"<g>{''.join(parts)}</g>"


def _swatch(key: Key, x: float, y: float) -> str:
    out = []
    if key.patch:
        out.append(
            f'<rect x="{coord(x + 3)}" y="{coord(y - 6)}" width="{_SWATCH - 6}" height="12" '
            f'fill="{key.color}"/>'
        )
    if key.line:
        dash = f' stroke-dasharray="{key.dash}"' if key.dash else ""
        out.append(
            f'<path d="M{coord(x)} {coord(y)}h{_SWATCH}" stroke="{key.color}" '
            f'stroke-width="1.8"{dash}/>'
        )
    if key.stem:
        out.append(f'<path d="M{coord(x + _SWATCH / 2)} {coord(y + 7)}v-12" stroke="{key.color}" '
                   'stroke-width="2"/>')  # fmt: skip
    if key.marker:
        mid, r = x + _SWATCH / 2, (2.2 if key.stem else 3.5)
        cy = y - 5 if key.stem else y
        paint = (
            f'fill="{key.color}"'
            if key.filled
            else f'fill="none" stroke="{key.color}" stroke-width="1.8"'
        )
        out.append(f'<path d="{_marker_path(key.marker, mid, cy, r)}" {paint}/>')
    return "".join(out)


def document(width: float, height: float, title: str, *parts: str) -> str:
    """The ``<svg>`` element of one figure, its ``<title>`` first (the figure's accessible
    name)."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {coord(width)} {coord(height)}" '
        f'width="{coord(width)}" height="{coord(height)}" font-family="{esc(FONT)}" '
        f'font-size="{TICK_FONT}" fill="{INK}">'
        f"<title>{esc(title)}</title>{''.join(parts)}</svg>"
    )
