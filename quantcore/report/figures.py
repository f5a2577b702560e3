"""The figures of ``report.html``, as inline SVG written from the NumPy data.

- Weight histograms before and after quantisation (seed 001's figures 4 to 7): the float
  weights as a density, the quantized weights as stems at their levels, the height being the
  share of weights on that level. ``model_histograms`` samples big tensors by rows, so no
  whole dequantized copy of a tensor is made, and gives panels to the ``MAX_LAYER_PANELS``
  largest tensors only (plus one for all weights), so drawing the figure costs the same for
  any number of layers.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcore.quantizers.codes import decode
from quantcore.quantizers.stats import Histogram
from quantcore.report import svg as sp

if TYPE_CHECKING:
    from quantcore.compress.pipeline import CodedWeight, QuantizedModel

HIST_BINS = 101
# More distinct quantized values than this (per-channel scales) are binned like the floats.
MAX_STEMS = 64
# Panels of their own for this many tensors (the largest), plus one for all weights together.
MAX_LAYER_PANELS = 12
HIST_SAMPLE = 1_000_000
POOLED_NAME = "all quantized weights"
FLOAT_COLOR, LEVEL_COLOR = "#9bb7d4", "#c0392b"


@dataclass(frozen=True, kw_only=True)
class HistogramPanel:
    """One panel of the before/after figure.

    ``weights``: the float weights' histogram; ``levels``/``level_counts``: how many weights
    sit on each quantized value (or, with more than ``MAX_STEMS`` distinct values, the
    quantized weights' histogram on the same bins, given at the bin centres).
    """

    name: str
    weights: Histogram
    levels: np.ndarray
    level_counts: np.ndarray


def weight_histogram(name: str, original: np.ndarray, quantized: np.ndarray) -> HistogramPanel:
    """Histograms of one tensor before and after quantisation, over the range of both.

    A constant tensor (both ranges one value ``v``) gets one bin range ``[v - 0.5, v + 0.5]``.
    """
    original = np.asarray(original, np.float32).ravel()
    quantized = np.asarray(quantized, np.float32).ravel()
    lo = float(min(original.min(), quantized.min()))
    hi = float(max(original.max(), quantized.max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = Histogram.empty(lo=lo, hi=hi, bins=HIST_BINS)
    levels, level_counts = np.unique(quantized, return_counts=True)
    if levels.size > MAX_STEMS:
        return HistogramPanel(
            name=name,
            weights=bins.add(original),
            levels=bins.centres,
            level_counts=bins.add(quantized).counts,
        )
    return HistogramPanel(
        name=name, weights=bins.add(original), levels=levels, level_counts=level_counts
    )


def merged_histogram(name: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> HistogramPanel:
    """One histogram of several tensors together (the "all layers" panel)."""
    pairs = list(pairs)
    original = np.concatenate([np.asarray(a, np.float32).ravel() for a, _ in pairs])
    quantized = np.concatenate([np.asarray(b, np.float32).ravel() for _, b in pairs])
    return weight_histogram(name, original, quantized)


def model_histograms(qmodel: QuantizedModel) -> list[HistogramPanel]:
    """Before/after panels for the ``MAX_LAYER_PANELS`` largest quantized tensors (in model
    order; ties go to the earlier tensor) and, with more than one tensor, one panel for all of
    them. A tensor over ``HIST_SAMPLE`` weights is sampled by rows (every k-th slice along
    axis 0, decoded on its own), so no whole dequantized copy is made; the figure's shape,
    not its counts, is what matters."""
    weights = qmodel.weights
    by_size = sorted(range(len(weights)), key=lambda i: -weights[i].codes.size)
    shown = set(by_size[:MAX_LAYER_PANELS])
    panels: list[HistogramPanel] = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    budget = max(1, HIST_SAMPLE // max(len(weights), 1))
    for i, coded in enumerate(weights):
        # A tensor without a panel of its own only feeds the pooled one: its share will do.
        original, quantized = _sampled_rows(qmodel, coded, HIST_SAMPLE if i in shown else budget)
        if i in shown:
            panels.append(weight_histogram(coded.name, original, quantized))
        stride = max(1, original.size // budget)
        pooled.append((original[::stride], quantized[::stride]))
    if len(weights) > 1:
        panels.append(merged_histogram(POOLED_NAME, pooled))
    return panels


def _sampled_rows(
    qmodel: QuantizedModel, coded: CodedWeight, limit: int = HIST_SAMPLE
) -> tuple[np.ndarray, np.ndarray]:
    """(original, dequantized) of every k-th slice along axis 0, flattened: all of a tensor of
    at most ``limit`` weights, else at most ``limit`` weights but never less than one slice."""
    codes = coded.codes
    original = np.asarray(qmodel.source.array(coded.name))
    if codes.ndim == 0 or codes.size <= limit:
        return original.reshape(-1), coded.dequantized().reshape(-1)
    row = codes.size // codes.shape[0]
    step = max(1, math.ceil(codes.shape[0] * row / limit))
    decoder = coded.decoder
    if decoder.axis == 0 and np.ndim(decoder.scale) > 0:
        decoder = dataclasses.replace(
            decoder,
            scale=np.asarray(decoder.scale)[::step],
            offset=np.asarray(decoder.offset)[::step]
            if np.ndim(decoder.offset)
            else decoder.offset,
        )
    quantized = decode(np.ascontiguousarray(codes[::step]), decoder)
    return original.reshape(codes.shape)[::step].reshape(-1), quantized.reshape(-1)


# Panel sizes in pixels (the page scales a figure down to its width), and each plot area's
# margins inside its panel: the title above, tick labels and axis labels around.
_HIST_W, _HIST_H = 500, 280
_HIST_INSET = {"left": 68, "top": 30, "right": 68, "bottom": 50}
_CURVE_W, _CURVE_H = 550, 340
_CURVE_INSET = {"left": 72, "top": 30, "right": 24, "bottom": 52}
_SEARCH_W, _SEARCH_H = 720, 380
# Pixels between the outer ticks and the frame on curve figures: no marker sits on the frame.
_PAD = 10


def hist_figure(histograms: Sequence[HistogramPanel]) -> str:
    """The before/after panels, two per row, at most ``MAX_LAYER_PANELS + 1`` of them, under
    one legend."""
    shown = list(histograms[: MAX_LAYER_PANELS + 1])
    cols = min(len(shown), 2)
    rows = math.ceil(len(shown) / cols)
    width = _HIST_W * cols
    keys = [
        sp.Key(label="float32 weights (share per bin)", color=FLOAT_COLOR, patch=True),
        sp.Key(label="quantized (share per level)", color=LEVEL_COLOR, marker="circle", stem=True),
    ]
    _, _, legend_h = sp.legend_size(keys, width)
    parts = [sp.legend(keys, sp.Box(left=0, top=4, width=width, height=legend_h))]
    for i, h in enumerate(shown):
        row, col = divmod(i, cols)
        box = sp.Box(
            left=col * _HIST_W, top=legend_h + row * _HIST_H, width=_HIST_W, height=_HIST_H
        )
        parts.append(_hist_panel(box.inset(**_HIST_INSET), h))
    height = legend_h + rows * _HIST_H
    note = ""
    if len(histograms) > len(shown):
        note = f"<p>First {len(shown)} of {len(histograms)} panels shown.</p>"
    return sp.document(width, height, "Weights before and after quantisation", *parts) + note


def _hist_panel(plot: sp.Box, h: HistogramPanel) -> str:
    """Float weights as a filled step histogram (left axis), quantized levels as stems (right
    axis), both in percent of the tensor's weights."""
    total = max(int(h.weights.counts.sum()), 1)
    per_bin = 100.0 * h.weights.counts / total
    # Empty bins of a binned "after" histogram (more than MAX_STEMS values) get no stem.
    used = np.asarray(h.level_counts) > 0
    levels = np.asarray(h.levels, np.float64)[used]
    per_level = 100.0 * np.asarray(h.level_counts, np.float64)[used] / total
    edges = h.weights.edges
    frame = sp.Frame.fit(
        plot,
        x=sp.finite_range(edges, levels),
        y=sp.finite_range(per_bin, [0.0]),
        y2=sp.finite_range(per_level, [0.0]),
        tight_x=True,
    )
    return sp.group(
        f"Weights of {h.name} before and after quantisation",
        sp.axes(
            frame,
            title=h.name,
            x_label="weight",
            y_label="share per bin (%)",
            y2_label="share per level (%)",
            y2_color=LEVEL_COLOR,
        ),
        sp.group(f"{h.name}: float32 weights", sp.stairs(frame, edges, per_bin, color=FLOAT_COLOR)),
        sp.group(
            f"{h.name}: quantized weights",
            sp.stems(frame, levels, per_level, color=LEVEL_COLOR, right=True),
        ),
        kind="panel",
    )


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
