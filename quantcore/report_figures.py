"""The figures of ``report.html``, drawn with matplotlib's Agg backend as inline PNG.

- Weight histograms before and after quantisation (seed 001's figures 4 to 7): the float
  weights as a density, the quantized weights as stems at their levels, the height being the
  share of weights on that level. ``model_histograms`` samples big tensors by rows, so no
  whole dequantized copy of a tensor is made.
- For sweeps: SQNR (measured and theoretical) and top-1 against the support threshold, one
  curve per (bits, method, granularity) (001's figures 8 to 10); the rate-distortion curves,
  SQNR and top-1 against entropy bits per weight (004's).
- For searches: each step's package size against its drop, with the budget and the chosen
  step marked.

Accuracy axes show the quantized top-1 in percent, or the agreement without labels.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from quantcore.quantized import decode

if TYPE_CHECKING:
    from quantcore.pipeline import CodedWeight, QuantizedModel

HIST_BINS = 101
# More distinct quantized values than this (per-channel scales) are binned like the floats.
MAX_STEMS = 64
MAX_HIST_PANELS = 8
HIST_SAMPLE = 1_000_000


@dataclass(frozen=True, kw_only=True)
class WeightHistogram:
    """One panel of the before/after figure.

    ``edges``/``counts``: the float weights' histogram; ``levels``/``level_counts``: how many
    weights sit on each quantized value (or, with more than ``MAX_STEMS`` distinct values,
    the quantized weights' histogram on the same bins, given at the bin centres).
    """

    name: str
    edges: np.ndarray
    counts: np.ndarray
    levels: np.ndarray
    level_counts: np.ndarray


def weight_histogram(name: str, original: np.ndarray, quantized: np.ndarray) -> WeightHistogram:
    """Histograms of one tensor before and after quantisation, over the range of both."""
    original = np.asarray(original, np.float32).ravel()
    quantized = np.asarray(quantized, np.float32).ravel()
    lo = float(min(original.min(), quantized.min()))
    hi = float(max(original.max(), quantized.max()))
    if hi <= lo:  # a constant tensor: one bin around its value
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(original, bins=HIST_BINS, range=(lo, hi))
    levels, level_counts = np.unique(quantized, return_counts=True)
    if levels.size > MAX_STEMS:
        level_counts, _ = np.histogram(quantized, bins=edges)
        levels = (edges[:-1] + edges[1:]) / 2
    return WeightHistogram(
        name=name, edges=edges, counts=counts, levels=levels, level_counts=level_counts
    )


def merged_histogram(name: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> WeightHistogram:
    """One histogram of several tensors together (the "all layers" panel)."""
    pairs = list(pairs)
    original = np.concatenate([np.asarray(a, np.float32).ravel() for a, _ in pairs])
    quantized = np.concatenate([np.asarray(b, np.float32).ravel() for _, b in pairs])
    return weight_histogram(name, original, quantized)


def model_histograms(qmodel: QuantizedModel) -> list[WeightHistogram]:
    """Before/after panels for the first ``MAX_HIST_PANELS - 1`` quantized tensors and one for
    all of them. A tensor over ``HIST_SAMPLE`` weights is sampled by rows (every k-th slice
    along axis 0, decoded on its own), so no whole dequantized copy is made; the figure's
    shape, not its counts, is what matters."""
    panels: list[WeightHistogram] = []
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    budget = max(1, HIST_SAMPLE // max(len(qmodel.weights), 1))
    for i, coded in enumerate(qmodel.weights):
        original, quantized = _sampled_rows(qmodel, coded)
        if i < MAX_HIST_PANELS - 1:
            panels.append(weight_histogram(coded.name, original, quantized))
        stride = max(1, original.size // budget)
        pooled.append((original[::stride], quantized[::stride]))
    if len(qmodel.weights) > 1:
        panels.append(merged_histogram("all quantized weights", pooled))
    return panels


def _sampled_rows(qmodel: QuantizedModel, coded: CodedWeight) -> tuple[np.ndarray, np.ndarray]:
    """(original, dequantized) of every k-th slice along axis 0, flattened."""
    codes = coded.codes
    original = np.asarray(qmodel.source.array(coded.name))
    if codes.ndim == 0 or codes.size <= HIST_SAMPLE:
        return original.reshape(-1), coded.dequantized().reshape(-1)
    row = codes.size // codes.shape[0]
    step = max(1, math.ceil(codes.shape[0] * row / HIST_SAMPLE))
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


def png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='figure' src='data:image/png;base64,{data}'>"


def hist_figure(histograms: Sequence[WeightHistogram]) -> str:
    shown = list(histograms[:MAX_HIST_PANELS])
    cols = min(len(shown), 2)
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.2 * rows), squeeze=False)
    for ax, h in zip(axes.ravel(), shown, strict=False):
        total = max(int(h.counts.sum()), 1)
        widths = np.diff(h.edges)
        ax.bar(h.edges[:-1], h.counts / total, width=widths, align="edge", color="#9bb7d4")
        ax.set_ylabel("share per bin")
        ax2 = ax.twinx()
        ax2.vlines(h.levels, 0, h.level_counts / total, color="#c0392b", lw=2)
        ax2.plot(h.levels, h.level_counts / total, "o", color="#c0392b", ms=3)
        ax2.set_ylim(bottom=0)
        ax2.set_ylabel("share per level", color="#c0392b")
        ax.set_title(h.name, fontsize=10)
        ax.set_xlabel("weight")
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
        bbox_to_anchor=(0.5, 1.04),
    )
    fig.tight_layout()
    note = ""
    if len(histograms) > MAX_HIST_PANELS:
        note = f"<p>First {MAX_HIST_PANELS} of {len(histograms)} panels shown.</p>"
    return png(fig) + note


def _series_key(row: dict[str, Any]) -> str:
    point = row.get("point", {})
    spec = row.get("spec", {})
    bits = point.get("bits", spec.get("bits"))
    gran = point.get("granularity", spec.get("granularity"))
    method = point.get("method", spec.get("method"))
    return f"{bits}-bit {method}, {gran}"


def sweep_figures(rows: Sequence[dict[str, Any]]) -> str:
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_series_key(row), []).append(row)
    out = ""
    by_threshold = {k: [r for r in v if r.get("xmax") is not None] for k, v in series.items()}
    if any(len(v) > 1 for v in by_threshold.values()):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
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
        ax1.set(
            xlabel="support threshold xmax (std units)",
            ylabel="SQNR (dB)",
            title="SQNR against the support threshold",
        )
        ax2.set(
            xlabel="support threshold xmax (std units)",
            ylabel="top-1 accuracy (%)",
            title="Accuracy against the support threshold",
        )
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        out += png(fig)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda r: _num(r.get("entropy_bits_per_weight")))
        x = [_num(r.get("entropy_bits_per_weight")) for r in pts]
        ax1.plot(x, [_num(r.get("sqnr_db")) for r in pts], "o", color=f"C{i % 10}", label=name)
        ax2.plot(x, [_top1(r) for r in pts], "o", color=f"C{i % 10}", label=name)
    ax1.set(xlabel="entropy (bits per weight)", ylabel="SQNR (dB)", title="Rate-distortion")
    ax2.set(
        xlabel="entropy (bits per weight)",
        ylabel="top-1 accuracy (%)",
        title="Accuracy against rate",
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return out + png(fig)


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
    fig, ax = plt.subplots(figsize=(7, 4))
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
    fig.tight_layout()
    return png(fig)
