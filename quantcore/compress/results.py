"""What quantizing a tensor takes and gives: the request, the report row and the result."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from quantcore.compress.hessian import LayerStats
from quantcore.quantizers.codes import QuantizedTensor
from quantcore.quantizers.stats import CountArray
from quantcore.spec import QuantizerSpec


@dataclass(frozen=True, kw_only=True)
class TensorRequest:
    """One tensor to quantize: float16/bfloat16/float32/float64 weights of any shape."""

    name: str
    weights: np.ndarray
    quantizer: QuantizerSpec  # resolved (``QuantizerSpec.resolved()``)
    channel_axis: int | None = None  # output-channel axis, for granularity "channel"
    block_axis: int | None = None  # the axis a layer sums over, for granularity "group"
    block_trailing: bool = False  # blocks run over the axes after block_axis too (Conv)
    stats: LayerStats | None = None  # calibration inputs' Hessian: granularity group uses GPTQ
    group_size: int | None = None  # granularity "auto": its plan's block size (None: the rule)


@dataclass(frozen=True, kw_only=True)
class LayerReport:
    """One row of the report's ``layers`` (docs/api.md), describing a tensor and its quantizer.

    ``mean``, ``std`` (population), ``wmin`` and ``wmax`` describe the tensor's own weights,
    in their units. ``xmax`` is the support threshold in normalisation units (std, or RMS with
    ``normalize=False``; for ``model`` granularity the group's), ``xmax_abs`` the same in the
    weights' units: the quantizer covers ``centre ± xmax_abs``. ``within_support_pct`` is the
    share of weights with ``|w - centre| ≤ xmax_abs``. ``levels_used`` counts distinct codes,
    ``entropy_bits`` their empirical entropy per weight, ``sqnr_db`` is
    ``10·log10(mean(w²)/mean((w-ŵ)²))`` (``inf`` when exact), ``sqnr_theory_db`` the closed-form
    Laplacian SQNR of the designed quantizer at the tensor's own variance in normalised units
    (1 for ``layer``; the variance mismatch of seed 000 for ``model``), per channel or block at
    its own, and given the group's extremes where its grid spans them
    (``quantcore.design.extremes``), or None where no closed form applies (mu-law, exponential,
    minifloat, constant tensors).

    Per channel: ``xmax`` is the mean of the channels' thresholds, ``xmax_abs`` the largest
    channel's threshold in weight units, the theory SQNR is ``Σ signal / Σ noise`` over the
    channels (weights times variance) and the other fields are measured on the whole tensor.
    """

    name: str
    shape: tuple[int, ...]
    params: int
    dtype: str
    method: str
    bits: int
    xmax: float
    xmax_abs: float
    support: str
    mean: float
    std: float
    wmin: float
    wmax: float
    within_support_pct: float
    levels_used: int
    entropy_bits: float
    sqnr_db: float
    sqnr_theory_db: float | None
    granularity: str = "layer"  # model, layer, channel or group: what this tensor got
    group_size: int | None = None  # weights per scale, for granularity "group"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values: lists for tuples, None for non-finite floats (no NaN, no inf)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class TensorResult:
    name: str
    quantized: QuantizedTensor
    report: LayerReport
    counts: CountArray  # the codes' bincount by unsigned bit pattern (``StreamResult.counts``)
    notes: tuple[str, ...] = ()
