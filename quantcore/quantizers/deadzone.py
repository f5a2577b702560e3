"""The dead-zone uniform quantizer (seed 004 table 4), σ = ``deadzone_ratio``.

With step Δ and ``t = x/Δ``::

    X_q = 0                                  if |t| < σ
    X_q = s(x)·min(floor(|t| - σ) + 1, M)    otherwise
    X̂  = s(X_q)·Δ·(|X_q| + σ - ½)           (0 for X_q = 0)

``floor(·) + 1`` is the table's ceiling ``⌈|t| - σ⌉`` except on the cell edges
``|t| = k + σ``, which go to the outer cell: the tie rule of seed 001 eq. 3, so that σ = 0 is
exactly the midrise quantizer and σ = ½ exactly the midtread one (same Δ, same clipping;
``|t| - σ`` is exact in binary floating point for the codes that fit 16 bits).

Codes fit in ``bits``: for σ > 0 there are M = N/2 - 1 levels a side plus zero (N - 1 codes,
index ``X_q + M``); for σ = 0 no weight lands in the empty dead zone, so M = N/2 and the index
is the midrise code plus N/2. The top cell edge ``(M + σ)·Δ`` is xmax, hence
``Δ = xmax/(M + σ)`` (``support_edge = M + σ``); beyond it weights take the outermost level.
Decoded through a codebook of ``X̂/Δ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantcore.quantizers.base import Design
from quantcore.spec import Method, QuantizerSpec


def deadzone_codes(t: np.ndarray, out: np.ndarray, *, ratio: float, max_index: int) -> None:
    """Signed codes ``X_q`` of ``t`` (in steps) into ``out``; ``t`` is overwritten."""
    negative = t < 0
    magnitude = np.abs(t, out=t)
    dead = magnitude < ratio
    # |t| - σ is exact (Sterbenz for |t| ≤ 2σ, aligned exponents above), so ties are exact.
    np.subtract(magnitude, magnitude.dtype.type(ratio), out=magnitude)
    np.floor(magnitude, out=magnitude)
    magnitude += 1
    np.minimum(magnitude, max_index, out=magnitude)
    magnitude[dead] = 0
    np.negative(magnitude, out=magnitude, where=negative)
    np.copyto(out, magnitude, casting="unsafe")


@dataclass(frozen=True, kw_only=True)
class DeadzoneDesign(Design):
    """Codebook indices ``0..N-1`` (σ = 0) or ``0..N-2`` (σ > 0); see the module docstring."""

    ratio: float
    max_index: int

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        signed = np.empty(t.shape, np.int32)
        deadzone_codes(t, signed, ratio=self.ratio, max_index=self.max_index)
        if self.ratio == 0.0:
            # No zero code: +k and -k sit next to each other, as midrise codes do.
            signed -= signed > 0
        signed += self.max_index
        np.copyto(out, signed, casting="unsafe")


def deadzone_levels(ratio: float, max_index: int) -> np.ndarray:
    """The reconstruction values ``X̂/Δ`` in index order (float64)."""
    k = np.arange(1, max_index + 1, dtype=np.float64)
    positive = k + ratio - 0.5
    if ratio == 0.0:
        return np.concatenate([-positive[::-1], positive])
    return np.concatenate([-positive[::-1], [0.0], positive])


def design_deadzone(spec: QuantizerSpec) -> DeadzoneDesign:
    """The dead-zone design of ``spec`` (resolved, method ``deadzone``, bits ≥ 2)."""
    ratio = float(spec.deadzone_ratio)
    half_levels = 1 << (spec.bits - 1)
    max_index = half_levels if ratio == 0.0 else half_levels - 1
    levels = deadzone_levels(ratio, max_index)
    return DeadzoneDesign(
        method=Method.DEADZONE,
        bits=spec.bits,
        support_edge=max_index + ratio,
        code_min=0,
        code_max=levels.size - 1,
        levels=levels.astype(np.float32),
        ratio=ratio,
        max_index=max_index,
    )
