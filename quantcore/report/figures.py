"""The figures of ``report.html``, as inline SVG written from the NumPy data.

- Weight histograms before and after quantisation: ``quantcore.report.histograms``.
- For sweeps: SQNR (measured and theoretical) and top-1 against the support threshold, one
  curve per (bits, method, granularity) (001's figures 8 to 10); the rate-distortion curves,
  SQNR and top-1 against entropy bits per weight (004's).
- For searches: each step's package size against its drop, with the budget and the chosen
  step marked.

Accuracy axes show the quantized top-1 in percent, or the agreement without labels.

Each figure is one ``<svg>`` element built with ``quantcore.report.svg``: text, so the cost
is that of formatting its coordinates, and every name in it escaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantcore.report import svg as sp

if TYPE_CHECKING:
    pass

_CURVE_W, _CURVE_H = 550, 340
_CURVE_INSET = {"left": 72, "top": 30, "right": 24, "bottom": 52}
_SEARCH_W, _SEARCH_H = 720, 380
# Pixels between the outer ticks and the frame on curve figures: no marker sits on the frame.
_PAD = 10


def _series_key(row: dict[str, Any]) -> str:
    point = row.get("point", {})
    spec = row.get("spec", {})
    bits = point.get("bits", spec.get("bits"))
    gran = point.get("granularity", spec.get("granularity"))
    method = point.get("method", spec.get("method"))
    return f"{bits}-bit {method}, {gran}"


@dataclass(frozen=True, kw_only=True)
class _Panel:
    title: str
    y_label: str
    series: list[sp.Series]
    empty: str = "no data"
    # The y range of a panel without any point.
    empty_y: tuple[float, float] = (0.0, 1.0)


def _curve_figure(
    title: str, x_label: str, panels: Sequence[_Panel], keys: Sequence[sp.Key]
) -> str:
    """Panels side by side over one legend."""
    width = _CURVE_W * len(panels)
    parts = []
    for i, panel in enumerate(panels):
        plot = sp.Box(left=i * _CURVE_W, top=0, width=_CURVE_W, height=_CURVE_H).inset(
            **_CURVE_INSET
        )
        parts.append(_curve_panel(plot, panel, x_label))
    _, _, legend_h = sp.legend_size(keys, width - 40)
    parts.append(sp.legend(keys, sp.Box(left=20, top=_CURVE_H, width=width - 40, height=legend_h)))
    return sp.document(width, _CURVE_H + legend_h + 4, title, *parts)


def _curve_panel(plot: sp.Box, panel: _Panel, x_label: str) -> str:
    any_point = sp.has_points(panel.series)
    frame = sp.Frame.fit(
        plot,
        x=sp.finite_range(*(s.x for s in panel.series)),
        y=sp.finite_range(*(s.y for s in panel.series)) if any_point else panel.empty_y,
        pad=_PAD,
    )
    parts = [sp.axes(frame, title=panel.title, x_label=x_label, y_label=panel.y_label)]
    parts += [sp.plot(frame, s) for s in panel.series]
    if not any_point:
        parts.append(sp.note(frame, panel.empty))
    return sp.group(panel.title, *parts, kind="panel")


_ACCURACY_LABEL = "top-1 accuracy (%)"
_NO_ACCURACY = "no accuracy: the job had no evaluation set"


def sweep_figures(rows: Sequence[dict[str, Any]]) -> str:
    """SQNR and accuracy against the support threshold (when a series has more than one
    threshold), and against entropy bits per weight; one colour per (bits, method,
    granularity)."""
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_series_key(row), []).append(row)
    styles = {name: sp.style(i) for i, name in enumerate(series)}
    keys = [
        sp.Key(label=name, color=color, line=True, marker=marker)
        for name, (color, marker) in styles.items()
    ]
    by_threshold = {k: [r for r in v if r.get("xmax") is not None] for k, v in series.items()}
    out = ""
    if any(len(v) > 1 for v in by_threshold.values()):
        sqnr, top1 = [], []
        for name, pts in by_threshold.items():
            pts = sorted(pts, key=lambda r: r["xmax"])
            color, marker = styles[name]
            x = [_num(r["xmax"]) for r in pts]
            measured = [_num(r.get("sqnr_db")) for r in pts]
            theory = [_num(r.get("sqnr_theory_db")) for r in pts]
            sqnr.append(
                sp.Series(
                    label=f"{name}: SQNR measured", x=x, y=measured, color=color, marker=marker
                )
            )
            sqnr.append(
                sp.Series(
                    label=f"{name}: SQNR in theory (Laplacian)",
                    x=x,
                    y=theory,
                    color=color,
                    dash="6 4",
                    marker=None,
                )
            )
            top1.append(_accuracy_series(name, x, pts, styles[name], line=True))
        line_keys = [
            sp.Key(label="measured", color=sp.INK, line=True, marker="circle"),
            sp.Key(label="theory (Laplacian)", color=sp.INK, line=True, dash="6 4"),
        ]
        out += _curve_figure(
            "SQNR and accuracy against the support threshold",
            "support threshold xmax (std units)",
            [
                _Panel(
                    title="SQNR against the support threshold", y_label="SQNR (dB)", series=sqnr
                ),
                _accuracy_panel("Accuracy against the support threshold", top1),
            ],
            keys + line_keys,
        )
    sqnr, top1 = [], []
    for name, pts in series.items():
        pts = sorted(pts, key=lambda r: _num(r.get("entropy_bits_per_weight")))
        color, marker = styles[name]
        x = [_num(r.get("entropy_bits_per_weight")) for r in pts]
        sqnr.append(
            sp.Series(
                label=f"{name}: SQNR",
                x=x,
                y=[_num(r.get("sqnr_db")) for r in pts],
                color=color,
                marker=marker,
                line=False,
            )
        )
        top1.append(_accuracy_series(name, x, pts, styles[name], line=False))
    rate_keys = [dataclasses.replace(k, line=False) for k in keys]
    return out + _curve_figure(
        "SQNR and accuracy against rate",
        "entropy (bits per weight)",
        [
            _Panel(title="Rate-distortion", y_label="SQNR (dB)", series=sqnr),
            _accuracy_panel("Accuracy against rate", top1),
        ],
        rate_keys,
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _accuracy_series(
    name: str, x: list[float], rows: Sequence[dict[str, Any]], style: tuple[str, str],
    *, line: bool,
) -> sp.Series:
    """The quantized top-1 (or agreement) of ``rows`` against ``x``, in a series' style."""
    color, marker = style
    return sp.Series(label=f"{name}: {_ACCURACY_LABEL}", x=x, y=[_top1(r) for r in rows],
                     color=color, marker=marker, line=line)


def _accuracy_panel(title: str, series: list[sp.Series]) -> _Panel:
    """An accuracy panel in percent, which says so when no row has an accuracy."""
    return _Panel(title=title, y_label=_ACCURACY_LABEL, series=series, empty=_NO_ACCURACY,
                  empty_y=(0.0, 100.0))


def _top1(row: dict[str, Any]) -> float:
    """Quantized top-1 in percent; the agreement when the set has no labels."""
    acc = row.get("accuracy") or {}
    quant = acc.get("quantized") or {}
    value = quant.get("top1", acc.get("agreement"))
    return 100.0 * value if isinstance(value, int | float) else float("nan")


_WITHIN, _OVER = "#2ca02c", "#d62728"


def search_figure(path: Sequence[dict[str, Any]], budget: float | None) -> str:
    """Package size against drop for every step of a search; the chosen step is ringed and
    the budget drawn as a dashed line."""
    series = []
    for within, color, label in ((True, _WITHIN, "within the budget"), (False, _OVER, "over it")):
        pts = [s for s in path if bool(s.get("within_budget")) is within]
        series.append(
            sp.Series(
                label=f"steps {label}",
                x=[100 * _num(s.get("drop")) for s in pts],
                y=[_num(s.get("package_bytes")) / 1024 for s in pts],
                color=color,
                line=False,
            )
        )
    chosen = [s for s in path if s.get("chosen")][:1]
    series.append(
        sp.Series(
            label="the chosen step",
            x=[100 * _num(s.get("drop")) for s in chosen],
            y=[_num(s.get("package_bytes")) / 1024 for s in chosen],
            color=sp.INK,
            line=False,
            size=9,
            filled=False,
        )
    )
    budget_x = 100 * _num(budget)
    plot = sp.Box(left=0, top=0, width=_SEARCH_W, height=_SEARCH_H).inset(**_CURVE_INSET)
    frame = sp.Frame.fit(
        plot,
        x=sp.finite_range(*(s.x for s in series), [budget_x]),
        y=sp.finite_range(*(s.y for s in series)),
        pad=_PAD,
    )
    parts = [
        sp.axes(
            frame, title="Search: size against drop", x_label="drop (%)", y_label="package (KiB)"
        )
    ]
    if math.isfinite(budget_x):
        parts.append(sp.group(f"budget: drop at most {budget_x:g}%", sp.vline(frame, budget_x)))
    parts += [sp.plot(frame, s) for s in series]
    if not sp.has_points(series):
        parts.append(sp.note(frame, "no steps"))
    panel = sp.group("Search: size against drop", *parts, kind="panel")
    keys = [
        sp.Key(label="within the budget", color=_WITHIN, marker="circle"),
        sp.Key(label="over it", color=_OVER, marker="circle"),
        sp.Key(label="chosen", color=sp.INK, marker="circle", filled=False),
        sp.Key(label="budget", color=sp.INK, line=True, dash="5 4"),
    ]
    _, _, legend_h = sp.legend_size(keys, _SEARCH_W)
    legend = sp.legend(keys, sp.Box(left=0, top=_SEARCH_H, width=_SEARCH_W, height=legend_h))
    return sp.document(
        _SEARCH_W, _SEARCH_H + legend_h + 4, "Search: size against drop", panel, legend
    )
