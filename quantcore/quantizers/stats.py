"""Measurements of a quantized tensor (seed 001 eq. 18-19), all computable chunk by chunk.

- ``Moments``: count, mean, sum of squared deviations, min and max, merged across chunks with
  Chan's parallel update, so a 50M-element tensor never needs a float64 copy.
- ``sqnr_db``: ``10·log10(mean(w²) / mean((w - ŵ)²))``. Identical tensors (no error) give
  ``math.inf``; the JSON layer maps it to null. A zero signal with an error gives ``-inf``.
- ``code_entropy_bits`` and ``levels_used`` from a bincount of the codes.
- ``Histogram``: fixed bins for the report's before/after figures, filled chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidSpecError

# Values from which ``Histogram.add`` counts with its compiled kernel (fewer: NumPy's calls
# cost less than the kernel's dispatch).
COMPILED_COUNT = 1 << 15

CountArray = npt.NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class Moments:
    """Count, mean, ``m2 = Σ(w - mean)²``, min and max of a set of weights.

    Merging two sets (``merge``) is exact up to float64 rounding (Chan et al.), which keeps the
    variance accurate even when ``|mean| ≫ std``, where ``E[w²] - mean²`` would cancel.
    An empty set has count 0, mean 0, m2 0 and min/max of +inf/-inf.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    @property
    def variance(self) -> float:
        """Population variance ``m2 / count`` (0 for an empty set)."""
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def mean_square(self) -> float:
        """``mean(w²) = variance + mean²``: the signal power of seed 001 eq. 19."""
        return self.variance + self.mean * self.mean

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        total = self.count + other.count
        delta = other.mean - self.mean
        return Moments(
            count=total,
            mean=self.mean + delta * other.count / total,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / total,
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
        )


def chunk_moments(chunk: np.ndarray, scratch: np.ndarray | None = None) -> Moments:
    """Moments of one chunk (1-D, float32 or float64), two passes over data in cache.

    The chunk mean comes from NumPy's pairwise sum; ``m2`` from the dot product of the
    deviations, written into ``scratch`` (same dtype, at least as long) to avoid allocation.
    A chunk holding NaN or Inf gives non-finite moments; callers check for that.
    """
    n = chunk.size
    if n == 0:
        return Moments()
    lo = float(chunk.min())
    hi = float(chunk.max())
    if lo == hi:
        # Constant chunk: exact mean, no rounding from the sum.
        return Moments(count=n, mean=lo, m2=0.0, minimum=lo, maximum=hi)
    # NaN/Inf (or overflowing squares) propagate into the result; the caller decides.
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(chunk.sum(dtype=np.float64 if chunk.dtype == np.float64 else None)) / n
        dev = np.subtract(
            chunk, chunk.dtype.type(mean), out=None if scratch is None else scratch[:n]
        )
        m2 = float(np.dot(dev, dev))
    return Moments(count=n, mean=mean, m2=m2, minimum=lo, maximum=hi)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """``10·log10(signal_power / noise_power)`` in dB (seed 001 eq. 19).

    ``noise_power == 0`` (the quantized weights equal the weights) gives ``math.inf``; a zero
    signal with noise gives ``-math.inf``; both zero (an all-zero tensor reproduced) is
    ``math.inf`` as well, since nothing was lost. Infinite noise gives ``-math.inf``.
    """
    if noise_power <= 0.0:
        return math.inf
    ratio = signal_power / noise_power
    if not ratio > 0.0:  # no signal, or infinite noise (errors that overflow even float64)
        return -math.inf
    return 10.0 * math.log10(ratio)


def levels_used(counts: CountArray) -> int:
    """Number of distinct codes that occur (non-zero bins of a code bincount)."""
    return int(np.count_nonzero(counts))


def code_entropy_bits(counts: CountArray) -> float:
    """Empirical entropy ``-Σ p·log2 p`` of the codes, in bits per weight.

    ``p`` are the code frequencies ``counts / Σ counts``. 0 for a single used code or no
    codes at all; at most ``log2(levels_used)``.
    """
    total = int(counts.sum())
    if total == 0:
        return 0.0
    used = counts[counts > 0].astype(np.float64)
    p = used / total
    return max(0.0, float(-np.dot(p, np.log2(p))))


def code_counts(codes: np.ndarray) -> CountArray:
    """Bincount of integer codes of 8 or 16 bits, indexed by the codes' unsigned bit pattern.

    The order of the bins does not matter for ``levels_used`` and ``code_entropy_bits``, so
    signed codes are counted through an unsigned view (no offsetting pass).
    """
    flat = codes.reshape(-1)
    if flat.dtype.itemsize == 1:
        # Count byte pairs (half as many items through bincount's intp conversion), then fold
        # the 256×256 pair table onto single codes.
        even = flat.size - flat.size % 2
        if even < 1 << 12 or not flat.flags.c_contiguous:
            return np.bincount(flat.view(np.uint8), minlength=256)
        pairs = np.bincount(flat[:even].view(np.uint16), minlength=1 << 16).reshape(256, 256)
        counts = pairs.sum(axis=0) + pairs.sum(axis=1)
        if even < flat.size:
            counts[int(flat[-1:].view(np.uint8)[0])] += 1
        return counts
    if flat.dtype.itemsize == 2:
        return np.bincount(flat.view(np.uint16), minlength=1 << 16)
    raise InvalidSpecError(f"codes of dtype {flat.dtype} are not 8- or 16-bit integers")


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Counts over ``bins`` equal bins on ``[lo, hi]``; values outside land in the end bins.

    Fill it chunk by chunk with ``add``; ``edges`` gives the ``bins + 1`` bin edges. Clamping
    the outliers into the end bins keeps every weight counted in the figure.
    """

    lo: float
    hi: float
    counts: CountArray

    @classmethod
    def empty(cls, *, lo: float, hi: float, bins: int = 256) -> Histogram:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidSpecError(f"histogram range {lo=}, {hi=} must be finite with lo < hi")
        if not 1 <= bins <= 1 << 20:
            raise InvalidSpecError(f"{bins=} must be between 1 and {1 << 20}")
        return cls(lo=lo, hi=hi, counts=np.zeros(bins, np.int64))

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        return np.linspace(self.lo, self.hi, self.counts.size + 1)

    @property
    def centres(self) -> npt.NDArray[np.float64]:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def add(self, values: np.ndarray) -> Histogram:
        """A new histogram with ``values`` (any shape, finite) counted in: by the compiled
        counter (the same counts) where there are many float32 or float64 values and numba
        is loaded already, as it is in every job that codes its weights."""
        bins = self.counts.size
        scale = bins / (self.hi - self.lo)
        flat = np.asarray(values).reshape(-1)
        if flat.size >= COMPILED_COUNT and flat.dtype in (np.float32, np.float64) and (
                "numba" in sys.modules):  # fmt: skip
            from quantcore.quantizers.histogram_kernel import count_bins

            counts = self.counts.copy()
            count_bins(np.ascontiguousarray(flat), self.lo, scale, counts)
            return dataclasses.replace(self, counts=counts)
        index = np.floor((np.asarray(flat, np.float64) - self.lo) * scale)
        np.clip(index, 0, bins - 1, out=index)
        counts = self.counts + np.bincount(index.astype(np.intp), minlength=bins)
        return dataclasses.replace(self, counts=counts)
