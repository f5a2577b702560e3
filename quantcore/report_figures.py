"""The figures of ``report.html``, drawn with matplotlib's Agg backend as inline PNG.

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

Each figure is a plain ``matplotlib.figure.Figure`` on its own Agg canvas, drawn once: no
pyplot (global state, not thread-safe) and no second pass to find a tight bounding box.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from quantcore.metrics import Histogram
from quantcore.quantized import decode

if TYPE_CHECKING:
    from quantcore.pipeline import CodedWeight, QuantizedModel

HIST_BINS = 101
# More distinct quantized values than this (per-channel scales) are binned like the floats.
MAX_STEMS = 64
# Panels of their own for this many tensors (the largest), plus one for all weights together.
MAX_LAYER_PANELS = 12
HIST_SAMPLE = 1_000_000
POOLED_NAME = "all quantized weights"
# Histogram panels are many and small: a moderate resolution keeps encoding cheap.
HIST_DPI = 80
CURVE_DPI = 110


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


def png(fig: Figure, dpi: int = CURVE_DPI) -> str:
    """``fig`` drawn once on an Agg canvas, as an inline ``<img>``."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)  # attaches itself to the figure
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='figure' src='data:image/png;base64,{data}'>"


# Fixed margins in inches (no tight-layout pass): room for the legend on top, the titles and
# the twin y-axis labels between the columns.
_PANEL_W, _PANEL_H = 6.2, 3.2
_TOP, _BOTTOM, _SIDE = 0.55, 0.5, 0.75


def hist_figure(histograms: Sequence[HistogramPanel]) -> str:
    """The before/after panels, two per row, at most ``MAX_LAYER_PANELS + 1`` of them."""
    shown = list(histograms[: MAX_LAYER_PANELS + 1])
    cols = min(len(shown), 2)
    rows = math.ceil(len(shown) / cols)
    width, height = _PANEL_W * cols, _PANEL_H * rows + _TOP
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=_SIDE / width,
        right=1 - _SIDE / width,
        bottom=_BOTTOM / height,
        top=1 - _TOP / height,
        wspace=0.45,
        hspace=0.6,
    )
    for ax, h in zip(axes.ravel(), shown, strict=False):
        _hist_panel(ax, h)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    proxies = [
        Patch(color="#9bb7d4"),
        Line2D([], [], color="#c0392b", marker="o", ms=3),
    ]
    fig.legend(
        proxies,
        ["float32 weights (share per bin)", "quantized (share per level)"],
        loc="upper center",
        ncol=2,
    )
    note = ""
    if len(histograms) > len(shown):
        note = f"<p>First {len(shown)} of {len(histograms)} panels shown.</p>"
    return png(fig, HIST_DPI) + note


def _hist_panel(ax: Axes, h: HistogramPanel) -> None:
    # Most of a panel's drawing time goes to ticks and to placing the title: a few ticks per
    # axis, and a title at a fixed height, keep it small.
    total = max(int(h.weights.counts.sum()), 1)
    # One step artist rather than a bar per bin: the same picture, a fraction of the drawing.
    ax.stairs(h.weights.counts / total, h.weights.edges, fill=True, color="#9bb7d4")
    ax.set_ylabel("share per bin")
    ax2 = ax.twinx()
    ax2.vlines(h.levels, 0, h.level_counts / total, color="#c0392b", lw=2)
    ax2.plot(h.levels, h.level_counts / total, "o", color="#c0392b", ms=3)
    ax2.set_ylim(bottom=0)
    ax2.set_ylabel("share per level", color="#c0392b")
    ax.set_title(h.name, fontsize=10, y=1.0, pad=4)
    ax.set_xlabel("weight")
    for axis in (ax.xaxis, ax.yaxis, ax2.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))


def _series_key(row: dict[str, Any]) -> str:
    point = row.get("point", {})
    spec = row.get("spec", {})
    bits = point.get("bits", spec.get("bits"))
    gran = point.get("granularity", spec.get("granularity"))
    method = point.get("method", spec.get("method"))
    return f"{bits}-bit {method}, {gran}"


def _sqnr_and_top1(
    draw: Callable[[Axes, Axes], None], *, x_label: str, titles: tuple[str, str]
) -> str:
    """A figure of two panels, SQNR (left) and top-1 (right) against ``x_label``; ``draw``
    plots the curves."""
    fig = Figure(figsize=(12, 4), layout="tight")
    sqnr, top1 = fig.subplots(1, 2)
    draw(sqnr, top1)
    sqnr.set(xlabel=x_label, ylabel="SQNR (dB)", title=titles[0])
    top1.set(xlabel=x_label, ylabel="top-1 accuracy (%)", title=titles[1])
    for ax in (sqnr, top1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png(fig)


def sweep_figures(rows: Sequence[dict[str, Any]]) -> str:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_series_key(row), []).append(row)
    by_threshold = {k: [r for r in v if r.get("xmax") is not None] for k, v in series.items()}

    def against_threshold(ax1: Axes, ax2: Axes) -> None:
        for i, (name, pts) in enumerate(by_threshold.items()):
            pts = sorted(pts, key=lambda r: r["xmax"])
            color = f"C{i % 10}"
            x = [r["xmax"] for r in pts]
            ax1.plot(x, [_num(r.get("sqnr_db")) for r in pts], "o-", color=color, label=name)
            ax1.plot(
                x,
                [_num(r.get("sqnr_theory_db")) for r in pts],
                "--",
                color=color,
                label=f"{name} (theory, Laplacian)",
            )
            ax2.plot(x, [_top1(r) for r in pts], "o-", color=color, label=name)

    def against_rate(ax1: Axes, ax2: Axes) -> None:
        for i, (name, pts) in enumerate(series.items()):
            pts = sorted(pts, key=lambda r: _num(r.get("entropy_bits_per_weight")))
            x = [_num(r.get("entropy_bits_per_weight")) for r in pts]
            ax1.plot(x, [_num(r.get("sqnr_db")) for r in pts], "o", color=f"C{i % 10}", label=name)
            ax2.plot(x, [_top1(r) for r in pts], "o", color=f"C{i % 10}", label=name)

    out = ""
    if any(len(v) > 1 for v in by_threshold.values()):
        out += _sqnr_and_top1(
            against_threshold,
            x_label="support threshold xmax (std units)",
            titles=("SQNR against the support threshold", "Accuracy against the support threshold"),
        )
    return out + _sqnr_and_top1(
        against_rate,
        x_label="entropy (bits per weight)",
        titles=("Rate-distortion", "Accuracy against rate"),
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _top1(row: dict[str, Any]) -> float:
    """Quantized top-1 in percent; the agreement when the set has no labels."""
    acc = row.get("accuracy") or {}
    quant = acc.get("quantized") or {}
    value = quant.get("top1", acc.get("agreement"))
    return 100.0 * value if isinstance(value, int | float) else float("nan")


def search_figure(path: Sequence[dict[str, Any]], budget: float | None) -> str:
    """Package size against drop for every step of a search; the chosen step is ringed."""
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.subplots()
    for within, color, label in ((True, "C2", "within the budget"), (False, "C3", "over it")):
        pts = [s for s in path if bool(s.get("within_budget")) is within]
        ax.plot([100 * _num(s.get("drop")) for s in pts],
                [_num(s.get("package_bytes")) / 1024 for s in pts],
                "o", color=color, label=label)  # fmt: skip
    chosen = [s for s in path if s.get("chosen")]
    if chosen:
        ax.plot([100 * _num(chosen[0].get("drop"))],
                [_num(chosen[0].get("package_bytes")) / 1024],
                "o", ms=14, mfc="none", mec="k", label="chosen")  # fmt: skip
    if budget is not None:
        ax.axvline(100 * budget, color="k", ls="--", lw=1, label="budget")
    ax.set(xlabel="drop (%)", ylabel="package (KiB)", title="Search: size against drop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)
