"""The support threshold of a quantizer: one for a layer (or the model), one per channel.

Each is chosen on a sample of normalised weights (``quantcore.compress.normalize``); ``mse``
measures the error on at most ``MSE_LIMIT`` of them (float32, every ``stride``-th). The
one-sample search (``sample_choice``) is the reference; ``channel_support.row_choices`` searches
every row at once, bit for bit the same.

The exponential family fits its codebook to the weights. A layer's ``mse`` search measures each
candidate with a codebook fitted at that candidate, as the layer is then quantized. A tensor's
channels share one codebook, so each channel's candidates are measured with that codebook,
fitted to the channels at ``max_abs`` (``shared_design``): the threshold of least error with the
codebook the layer uses, never worse than ``max_abs``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from quantcore.compress.channel_support import row_choices
from quantcore.design.support import SupportChoice, choose_support
from quantcore.design.support_rows import choose_support_rows
from quantcore.quantizers import Design, design, quantize
from quantcore.quantizers.stream import encode_tensor
from quantcore.spec import DEFAULT_SUPPORT, Method, QuantizerSpec, Support

MSE_LIMIT = 1 << 18
DATA_FREE = frozenset({Support.HUI, Support.JAYANT, Support.VALUE})


def support_of(spec: QuantizerSpec) -> Support:
    """The spec's support, or its method's default when the spec was not resolved."""
    return spec.support or DEFAULT_SUPPORT[spec.method]


def sample_mse(
    spec: QuantizerSpec, sample: np.ndarray, xmax: float, fitted: Design | None = None
) -> float:
    """Measured MSE of ``spec`` at ``xmax`` on a normalised sample (support='mse'), with the
    design ``fitted`` when given (else the one ``quantize`` fits)."""
    if fitted is None:
        decoded = quantize(sample, spec, xmax).quantized.dequantized
    else:
        step = fitted.unit(xmax)
        decoded = encode_tensor(sample, fitted, step=step, centre=0.0).quantized.dequantized
    error = (sample - decoded).astype(np.float64)
    return float(np.dot(error, error)) / error.size


def sample_choice(
    spec: QuantizerSpec, sample: np.ndarray, fitted: Design | None = None
) -> SupportChoice:
    """The support choice of one sample, searched alone (the reference)."""
    # The MSE search quantizes ~60 times: it measures on at most MSE_LIMIT float32 weights.
    stride = max(1, sample.size // MSE_LIMIT)
    measured = np.asarray(sample.reshape(-1)[::stride], np.float32)
    return choose_support(
        support_of(spec), levels=spec.levels, normalized=sample, value=spec.support_value,
        error_at=functools.partial(sample_mse, spec, measured, fitted=fitted),
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Threshold:
    xmax: float
    notes: tuple[str, ...] = ()


def layer_threshold(spec: QuantizerSpec, sample: np.ndarray) -> Threshold:
    """One threshold for the whole sample."""
    batched = None
    if support_of(spec) is Support.MSE:
        # One row for the batched search: the 40 grid points measured in one call (the log
        # family's 40 designs fitted together), as a channel's are; the same threshold.
        (batched,) = row_choices(spec, sample.reshape(1, -1), Support.MSE, MSE_LIMIT)
    choice = batched or sample_choice(spec, sample)
    if choice.fallback:
        note = f"constant weights: support {support_of(spec).value} fell back to jayant"
        return Threshold(xmax=choice.xmax, notes=(note,))
    return Threshold(xmax=choice.xmax)


@dataclass(frozen=True, kw_only=True)
class ChannelThresholds:
    xmax: np.ndarray
    notes: tuple[str, ...] = ()
    shared: Design | None = None  # the design the thresholds were chosen with, if fitted


def channel_thresholds(spec: QuantizerSpec, sample: np.ndarray) -> ChannelThresholds:
    """One threshold per row of ``sample``: computed once when the rule ignores the data."""
    support = support_of(spec)
    if support in DATA_FREE:
        one = layer_threshold(spec, sample[0])
        return ChannelThresholds(xmax=np.full(sample.shape[0], one.xmax), notes=one.notes)
    shared = shared_design(spec, sample)
    choices = row_choices(spec, sample, support, MSE_LIMIT, shared)
    # Searched row by row only where no batch choice exists: a call per row that only
    # read its choice back cost ~10 µs (40 ms of a 16M-weight job at 4000 channels).
    found = [c or sample_choice(spec, row, shared) for row, c in zip(sample, choices, strict=True)]
    notes: tuple[str, ...] = ()
    if any(c.fallback for c in found):
        notes = ("constant channels: their data-driven support fell back to jayant",)
    return ChannelThresholds(xmax=np.array([c.xmax for c in found]), notes=notes, shared=shared)


def shared_design(spec: QuantizerSpec, sample: np.ndarray) -> Design | None:
    """The codebook every channel's ``mse`` candidates are measured with, where the family
    fits one to the weights (the exponential family): fitted to the channels at ``max_abs``.
    None: each candidate is measured with the family's own design."""
    if spec.method is not Method.LOG or support_of(spec) is not Support.MSE:
        return None
    whole = choose_support_rows(Support.MAX_ABS, levels=spec.levels, rows=sample)
    return design(spec, sample / np.array([c.xmax for c in whole])[:, None])
