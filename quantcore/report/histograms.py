"""The before/after weight histograms of ``report.html`` (seed 001's figures 4 to 7).

The float weights as a density, the quantized weights as stems at their levels, the height
being the share of weights on that level. ``model_histograms`` samples big tensors by rows, so
no whole dequantized copy of a tensor is made, and gives panels to the ``MAX_LAYER_PANELS``
largest tensors only (plus one for all weights), so drawing the figure costs the same for any
number of layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from quantcore.quantizers.codes import BlockDecoder, decode
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
# Weights looked at first when counting a tensor's distinct quantized values.
PREFIX_PROBE = 4096
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
    # A prefix with too many distinct values already answers, without sorting the whole
    # tensor (group-wise codes have thousands of levels; that sort was most of a report).
    if np.unique(quantized[:PREFIX_PROBE]).size <= MAX_STEMS:
        levels, level_counts = np.unique(quantized, return_counts=True)
        if levels.size <= MAX_STEMS:
            return HistogramPanel(
                name=name, weights=bins.add(original), levels=levels, level_counts=level_counts
            )
    return HistogramPanel(
        name=name,
        weights=bins.add(original),
        levels=bins.centres,
        level_counts=bins.add(quantized).counts,
    )


def merged_histogram(name: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> HistogramPanel:
    """One histogram of several tensors together (the "all layers" panel)."""
    pairs = list(pairs)
    original = np.concatenate([np.asarray(a, np.float32).ravel() for a, _ in pairs])
    quantized = np.concatenate([np.asarray(b, np.float32).ravel() for _, b in pairs])
    return weight_histogram(name, original, quantized)


def model_histograms(
    qmodel: QuantizedModel, done: Callable[[CodedWeight], None] | None = None
) -> list[HistogramPanel]:
    """Before/after panels for the ``MAX_LAYER_PANELS`` largest quantized tensors (in model
    order; ties go to the earlier tensor) and, with more than one tensor, one panel for all of
    them. A tensor over ``HIST_SAMPLE`` weights is sampled by rows (every k-th slice along
    axis 0, decoded on its own), so no whole dequantized copy is made; the figure's shape,
    not its counts, is what matters. ``done`` is called with each tensor once it is sampled
    (a streamed model's codes drop their pages then)."""
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
        pooled.append((np.array(original[::stride]), np.array(quantized[::stride])))
        if done is not None:
            done(coded)
    if len(weights) > 1:
        panels.append(merged_histogram(POOLED_NAME, pooled))
    return panels


def _sampled_rows(
    qmodel: QuantizedModel, coded: CodedWeight, limit: int = HIST_SAMPLE
) -> tuple[np.ndarray, np.ndarray]:
    """(original, dequantized) of every k-th slice along axis 0, flattened: all of a tensor of
    at most ``limit`` weights, else at most ``limit`` weights but never less than one slice."""
    codes = coded.codes
    # A view where the file holds the tensor off its item size: only the sample is copied
    # (aligned: NumPy's arithmetic on unaligned data takes a slower, buffered path).
    original = np.asarray(qmodel.source.array(coded.name, aligned=False))
    if codes.ndim == 0 or codes.size <= limit:
        whole = original if original.flags.aligned else original.copy()
        return whole.reshape(-1), coded.dequantized().reshape(-1)
    row = codes.size // codes.shape[0]
    step = max(1, math.ceil(codes.shape[0] * row / limit))
    decoder = coded.decoder
    sampled = original.reshape(codes.shape)[::step].reshape(-1)
    if isinstance(decoder, BlockDecoder):
        if decoder.view[0] != codes.shape[0]:  # a view that regroups the rows
            return sampled, coded.dequantized().reshape(codes.shape)[::step].reshape(-1)
        return sampled, _decode_block_rows(codes, decoder, step).reshape(-1)
    if decoder.axis == 0 and np.ndim(decoder.scale) > 0:
        decoder = dataclasses.replace(
            decoder,
            scale=np.asarray(decoder.scale)[::step],
            offset=np.asarray(decoder.offset)[::step]
            if np.ndim(decoder.offset)
            else decoder.offset,
        )
    quantized = decode(np.ascontiguousarray(codes[::step]), decoder)
    return sampled, quantized.reshape(-1)


def _decode_block_rows(codes: np.ndarray, decoder: BlockDecoder, step: int) -> np.ndarray:
    """Every ``step``-th row (axis 0 of the codes and of the decoder's view) decoded alone,
    the same values as those rows of the whole decode: each keeps its blocks' scales and zero
    points, and where blocks run down the rows (axis 0) each row is a block of its own."""
    rows = np.arange(0, codes.shape[0], step)
    view = decoder.view
    part = np.ascontiguousarray(codes.reshape(view)[rows])
    at = rows // decoder.block_size if decoder.axis == 0 else rows
    zero_point = decoder.zero_point
    sub = dataclasses.replace(
        decoder, view=part.shape, scale=np.asarray(decoder.scale)[at],
        zero_point=None if zero_point is None else np.asarray(zero_point)[at],
        block_size=1 if decoder.axis == 0 else decoder.block_size,
    )  # fmt: skip
    return decode(part, sub)


# Panel sizes in pixels (the page scales a figure down to its width), and each plot area's
# margins inside its panel: the title above, tick labels and axis labels around.
_HIST_W, _HIST_H = 500, 280
_HIST_INSET = {"left": 68, "top": 30, "right": 68, "bottom": 50}


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
