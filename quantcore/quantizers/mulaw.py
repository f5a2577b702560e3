"""The mu-law companded quantizer (seed 004, non-uniform quantization).

Compressor, in units of xmax (``t = x/xmax``): ``c(t) = sgn(t)·ln(1 + μ|t|)/ln(1 + μ)``, which
maps ``[-1, 1]`` onto itself with fine steps near zero. The companded value is quantized by the
N-level midrise rule of ``quantcore.quantizers.uniform`` on ``[-1, 1]`` (step 2/N, ties outward,
``|t| > 1`` to the outermost level), and each level ``y = (q + ½)·2/N`` is expanded back:
``c⁻¹(y) = sgn(y)·((1 + μ)^|y| - 1)/μ``. Codes are ``q + N/2`` in ``0..N-1``, decoded through
that codebook of N levels (times xmax). Levels are computed in float64 and stored as float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantcore.quantizers.base import Design
from quantcore.quantizers.uniform import midrise
from quantcore.spec import Method, QuantizerSpec


@dataclass(frozen=True, kw_only=True)
class MulawDesign(Design):
    mu: float

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        negative = t < 0
        companded = np.abs(t, out=t)
        companded *= companded.dtype.type(self.mu)
        np.log1p(companded, out=companded)
        half_levels = 1 << (self.bits - 1)
        companded *= companded.dtype.type(half_levels / math.log1p(self.mu))
        np.negative(companded, out=companded, where=negative)
        signed = np.empty(t.shape, np.int32)
        midrise(self.bits).encode(companded, signed)
        signed += half_levels
        np.copyto(out, signed, casting="unsafe")


def mulaw_levels(bits: int, mu: float) -> np.ndarray:
    """The N expanded levels in units of xmax, ascending (float64)."""
    half_levels = 1 << (bits - 1)
    y = (np.arange(-half_levels, half_levels, dtype=np.float64) + 0.5) / half_levels
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu


def design_mulaw(spec: QuantizerSpec) -> MulawDesign:
    """The mu-law design of ``spec`` (resolved, method ``mulaw``, ``mu`` > 0)."""
    levels = mulaw_levels(spec.bits, spec.mu)
    return MulawDesign(
        method=Method.MULAW,
        bits=spec.bits,
        support_edge=1.0,
        code_min=0,
        code_max=levels.size - 1,
        levels=levels.astype(np.float32),
        mu=float(spec.mu),
    )
