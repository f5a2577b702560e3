"""Uniform quantizers: midrise (seed 001 eq. 3 and 17) and midtread.

Midrise, N = 2**bits levels ``(2i-1)·xmax/N``: step Δ = 2·xmax/N (``support_edge = N/2``).
With ``t = x/Δ`` the code is ``q = floor(t)`` for ``t ≥ 0`` and ``q = ceil(t) - 1`` for
``t < 0``, clipped to ``[-N/2, N/2-1]``, and the level is ``(q + ½)·Δ``. That is eq. 3,
``sgn(x)·(floor(|x|/Δ) + ½)·Δ``: a magnitude exactly on a cell edge (``|x| = kΔ``) goes to
the outer cell, on both sides, and ``x = 0`` (also ``-0.0``) goes to ``+Δ/2``. The overload
region ``|x| > xmax`` maps to the outermost level ``±(N-1)·xmax/N``.

Midtread, N-1 levels ``qΔ`` with ``q`` in ``[-(N/2-1), N/2-1]`` (zero exact, one code of the
N unused): ``Δ = xmax/(N/2 - ½) = 2·xmax/(N-1)``, so the outermost cell edge
``(N/2-1)·Δ + Δ/2`` is xmax. Codes follow the dead-zone rule with σ = ½ (seed 004 table 4,
ties outward): ``|x| < Δ/2`` gives 0, else ``sgn(x)·min(floor(|x|/Δ - ½) + 1, N/2-1)``,
which is rounding half away from zero. It needs bits ≥ 2 (``QuantizerSpec`` checks).

Both are affine: ``w = float32(q)·scale + offset`` decodes them (``half`` = ½ resp. 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantcore.quantizers.base import Design
from quantcore.quantizers.deadzone import deadzone_codes
from quantcore.spec import Method, QuantizerSpec, Rounding


@dataclass(frozen=True, kw_only=True)
class MidriseDesign(Design):
    """N = 2**bits levels ``(q + ½)Δ``, codes ``q`` in ``[-N/2, N/2-1]`` (signed)."""

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        # t < 0 before clipping: with bits = 1 the clip bounds are ±0 and would lose the sign.
        negative = t < 0
        limit = t.dtype.type(self.code_max)
        np.clip(t, -limit, limit, out=t)
        # The cast truncates toward zero: floor for t ≥ 0, ceil for t < 0, then ceil - 1.
        np.copyto(out, t, casting="unsafe")
        np.subtract(out, negative, out=out, casting="unsafe")


@dataclass(frozen=True, kw_only=True)
class MidtreadDesign(Design):
    """N-1 levels ``qΔ``, codes ``q`` in ``[-(N/2-1), N/2-1]`` (signed), zero exact."""

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        deadzone_codes(t, out, ratio=0.5, max_index=self.code_max)


def midrise(bits: int) -> MidriseDesign:
    half_levels = 1 << (bits - 1)
    return MidriseDesign(
        method=Method.UNIFORM,
        bits=bits,
        support_edge=float(half_levels),
        code_min=-half_levels,
        code_max=half_levels - 1,
        half=0.5,
    )


def midtread(bits: int) -> MidtreadDesign:
    top = (1 << (bits - 1)) - 1
    return MidtreadDesign(
        method=Method.UNIFORM,
        bits=bits,
        support_edge=top + 0.5,
        code_min=-top,
        code_max=top,
        half=0.0,
    )


def design_uniform(spec: QuantizerSpec) -> Design:
    """The midrise or midtread design of ``spec`` (resolved, method ``uniform``)."""
    if spec.rounding is Rounding.MIDTREAD:
        return midtread(spec.bits)
    return midrise(spec.bits)
