"""What every quantizer family shares: a ``Design`` that encodes weights given in its unit.

A family never sees raw weights. The caller (``quantcore.quantizers.stream``) maps each weight
to ``t = (w - centre) / (scale · unit)``, where ``centre``/``scale`` is the normalisation (mean
and std, see ``quantcore.compress.normalize``) and ``unit = xmax / support_edge`` is the
family's own step: Δ for the uniform and dead-zone families, xmax for mu-law and the exponential
family, ``xmax / max_finite`` for minifloats. In that unit the design is independent of xmax, so
one design serves every channel of a tensor and the normalisation folds into the decoder's
``scale``/``offset`` (``quantcore.quantizers.codes``).

A design reconstructs code ``c`` as ``levels[c]·unit`` (codebook families) or
``(c + half)·unit`` (affine families, ``levels is None``).

Degenerate inputs never reach a family in a form it must special-case: NaN/Inf and empty tensors
are refused by ``quantcore.compress.normalize``; a constant tensor (or a single weight) arrives
as ``t = 0`` with a zero decoder scale, so every weight decodes exactly to its value; float16
and bfloat16 weights arrive as float32, float64 ones stay float64 (``±inf`` from a far overload
in float32 is legal: every family maps it to its outermost level).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcore.spec import Method

FloatArray = npt.NDArray[np.float32]


def gain_of(step: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    """``1/step`` in ``dtype`` (float64 values), 0 where ``step`` is 0 or below ``1/max(dtype)``.

    A channel of denormal weights has a step whose reciprocal overflows float32: an infinite
    gain would send its zeros to NaN and the rest to the outermost levels. With gain 0 it maps
    to ``t = 0`` like a constant one, and decodes within its own (denormal) magnitude.
    """
    steps = np.asarray(step, np.float64)
    floor = 1.0 / float(np.finfo(dtype).max)
    keep = steps > floor
    return np.where(keep, 1.0 / np.where(keep, steps, 1.0), 0.0)


def code_dtype(lo: int, hi: int) -> np.dtype:
    """The smallest 8- or 16-bit integer type holding every code in ``[lo, hi]``."""
    for dtype in (np.int8, np.uint8, np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


@dataclass(frozen=True, kw_only=True)
class Design(ABC):
    """A quantizer of one family, designed in units of ``unit = xmax / support_edge``.

    ``support_edge`` is xmax expressed in the unit (N/2 for midrise, so that Δ = 2·xmax/N).
    ``encode(t, out)`` writes the codes of ``t`` into ``out`` (same shape, dtype
    ``self.dtype``); it may overwrite ``t``, which is scratch. Codes lie in
    ``[code_min, code_max]``.
    """

    method: Method
    bits: int
    support_edge: float
    code_min: int
    code_max: int
    levels: FloatArray | None = None
    half: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def dtype(self) -> np.dtype:
        return code_dtype(self.code_min, self.code_max)

    def unit(self, xmax: float | np.ndarray) -> float | np.ndarray:
        """The family's unit in normalised weights for threshold ``xmax``: ``xmax/support_edge``."""
        return xmax / self.support_edge

    def values(self, codes: np.ndarray) -> npt.NDArray[np.float64]:
        """Exact reconstruction of ``codes`` in units (float64), for tests and design loops."""
        if self.levels is None:
            return codes.astype(np.float64) + self.half
        return self.levels.astype(np.float64)[codes]

    @abstractmethod
    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        """Write the codes of ``t`` (weights in units, float32 or float64) into ``out``."""
