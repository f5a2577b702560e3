"""Exponential (logarithmic) quantizer designed by correlation maximisation (seed 003).

Levels are symmetric and exponentially spaced, ``±a·q^k`` for ``k = 0..K-1``, K = N/2, in units
of xmax (``t = x/xmax``); codes ``K + k`` for ``t ≥ 0`` and ``K - 1 - k`` for ``t < 0``.

Objective: the correlation between the weights and their quantized values,
``ρ = E[t·t̂] / sqrt(E[t²]·E[t̂²])``, over the layer's weight density. Since
``min_c E[(t - c·t̂)²] = E[t²]·(1 - ρ²)``, maximising ρ is minimising the error after the best
gain, which gives an alternating ascent on the histogram of ``|t|`` (``_BINS`` geometric bins
below ``max|t|``, each carrying its count and sum):

1. boundaries: the midpoints between consecutive levels (each bin goes to its nearest level;
   with the gain fitted in step 2 this cannot lower ρ);
2. levels: with the cells fixed, ``ρ(q) = Σ S_k q^k / sqrt(Σ P_k q^(2k))`` (``P_k``, ``S_k``:
   mass and first moment of cell k; ``a`` cancels) is maximised over ``q`` by a bounded 1-D
   search, then ``a = Σ S_k q^k / Σ P_k q^(2k)`` (least-squares gain, so the gain of step 1
   is one).

It starts from powers of two below the top cell's centroid (``q = 2``, the classic log
quantizer) and stops when the partition repeats (at most ``_MAX_ITER`` rounds). Encoding is
nearest level, edges going to the outer level. One level a side (bits = 1) is the centroid of
``|t|``. An all-zero sample keeps the starting levels (noted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.design.brent import bounded_minimum
from quantcore.quantizers.base import Design
from quantcore.spec import Method, QuantizerSpec

_BINS = 4096
_SPAN = 2.0**-30  # smallest bin edge relative to max|t|
_MAX_ITER = 60
_MAX_DYNAMIC_RANGE = 1e9  # q^(K-1) is kept below this
# Bins per unit of log2(|t| / max|t|), the bins' span ending at _BINS
_BIN_SLOPE = (_BINS - 1) / -math.log2(_SPAN)
# The search of log q: its lower bound and tolerance (the upper: ``_log_q_upper``)
_LOG_Q_LOWER = 1e-6
_LOG_Q_XATOL = 1e-10


@dataclass(frozen=True, kw_only=True)
class ExponentialDesign(Design):
    boundaries: npt.NDArray[np.float64]  # K-1 magnitudes between consecutive levels
    ratio: float  # q
    correlation: float  # ρ reached on the design sample

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        half_levels = 1 << (self.bits - 1)
        negative = t < 0
        k = np.searchsorted(self.boundaries, np.abs(t), side="right")
        index = np.where(negative, half_levels - 1 - k, half_levels + k)
        np.copyto(out, index, casting="unsafe")


@dataclass(frozen=True, kw_only=True)
class _Histogram:
    mass: npt.NDArray[np.float64]
    first: npt.NDArray[np.float64]
    centre: npt.NDArray[np.float64]
    power: float  # Σ t²


def _histogram(magnitude: np.ndarray) -> _Histogram:
    """Geometric bins over ``[top·_SPAN, top]``, ``top = min(max|t|, 1)``; below: bin 0.

    Magnitudes beyond the support (``|t| > 1``) count as 1: they take the outermost level
    whatever it is, so the design must not chase them (this is what makes xmax matter).
    """
    magnitude = np.minimum(magnitude, 1.0)
    top = float(magnitude.max())
    with np.errstate(divide="ignore"):
        position = np.log2(magnitude / top) * _BIN_SLOPE + _BINS
    index = np.clip(position, 0, _BINS, out=position).astype(np.intp)
    mass = np.bincount(index, minlength=_BINS + 1).astype(np.float64)
    first = np.bincount(index, weights=magnitude, minlength=_BINS + 1).astype(np.float64)
    keep = mass > 0
    return _Histogram(
        mass=mass[keep],
        first=first[keep],
        centre=first[keep] / mass[keep],
        power=float(np.dot(magnitude, magnitude)),
    )


@dataclass(frozen=True, kw_only=True)
class _Levels:
    """Positive levels ``a·q^k`` (ascending), the ρ they reach and whether data shaped them."""

    levels: npt.NDArray[np.float64]
    ratio: float
    correlation: float
    informed: bool = True


def _fit_levels(mass: np.ndarray, first: np.ndarray, count: int) -> _Levels:
    """The levels ``a·q^k`` maximising ρ for cells of the given mass and first moment."""
    k = np.arange(count, dtype=np.float64)

    def negative_rho(log_q: float) -> float:
        power = np.exp(k * log_q)
        return -float(np.dot(first, power)) / math.sqrt(float(np.dot(mass, power * power)))

    found = bounded_minimum(negative_rho, (_LOG_Q_LOWER, _log_q_upper(count)), xatol=_LOG_Q_XATOL)
    q = math.exp(float(found.x))
    power = q**k
    a = float(np.dot(first, power) / np.dot(mass, power * power))
    return _Levels(levels=a * power, ratio=q, correlation=-float(found.fun))


def _log_q_upper(count: int) -> float:
    """The largest log q the search tries: q^(count-1) within _MAX_DYNAMIC_RANGE."""
    return math.log(_MAX_DYNAMIC_RANGE) / max(count - 1, 1)


def _start_levels(count: int) -> npt.NDArray[np.float64]:
    """Powers of two ``2^(k - count)``, ``k = 0..count-1``: the ascent's start, in units of
    twice the top cell's centroid (and the levels of an all-zero sample)."""
    return 2.0 ** (np.arange(count, dtype=np.float64) - count)


def _design_levels(magnitude: np.ndarray, count: int) -> _Levels:
    """The alternating ascent of the module docstring on the magnitudes' histogram."""
    start = _start_levels(count)
    if magnitude.size == 0 or float(magnitude.max()) == 0.0:
        return _Levels(levels=start, ratio=2.0, correlation=0.0, informed=False)
    hist = _histogram(magnitude)
    if count == 1:
        centroid = float(hist.first.sum() / hist.mass.sum())
        rho = float(hist.first.sum()) / math.sqrt(hist.power * hist.mass.sum())
        return _Levels(levels=np.array([centroid]), ratio=1.0, correlation=rho)
    levels = start * float(hist.centre[-1]) * 2.0
    q = 2.0
    partition = None
    for _ in range(_MAX_ITER):
        cells = np.searchsorted(0.5 * (levels[1:] + levels[:-1]), hist.centre, side="right")
        if partition is not None and np.array_equal(cells, partition):
            break
        partition = cells
        mass = np.bincount(cells, weights=hist.mass, minlength=count)
        first = np.bincount(cells, weights=hist.first, minlength=count)
        fit = _fit_levels(mass, first, count)
        levels, q = fit.levels, fit.ratio
    cells = np.searchsorted(0.5 * (levels[1:] + levels[:-1]), hist.centre, side="right")
    mass = np.bincount(cells, weights=hist.mass, minlength=count)
    first = np.bincount(cells, weights=hist.first, minlength=count)
    rho = float(np.dot(first, levels)) / math.sqrt(hist.power * float(np.dot(mass, levels**2)))
    return _Levels(levels=levels, ratio=q, correlation=rho)


def design_exponential(spec: QuantizerSpec, sample: np.ndarray) -> ExponentialDesign:
    """Design for ``spec`` (resolved, method ``log``) on ``sample``: weights in units of xmax."""
    count = 1 << (spec.bits - 1)
    magnitude = np.abs(np.asarray(sample, np.float64).reshape(-1))
    found = _design_levels(magnitude, count)
    positive = found.levels
    levels = np.concatenate([-positive[::-1], positive])
    notes: tuple[str, ...] = ()
    if not found.informed:
        notes = ("all-zero weights: exponential levels kept at powers of two",)
    return ExponentialDesign(
        method=Method.LOG,
        bits=spec.bits,
        support_edge=1.0,
        code_min=0,
        code_max=levels.size - 1,
        levels=levels.astype(np.float32),
        boundaries=0.5 * (positive[1:] + positive[:-1]),
        ratio=found.ratio,
        correlation=found.correlation,
        notes=notes,
    )
