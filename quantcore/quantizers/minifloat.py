"""Minifloats: sign, E exponent bits, M mantissa bits, subnormals (seed 004 eq. 3).

Encodings (``minifloat_format``), chosen to agree with ``ml_dtypes``:

- ``IEEE``: IEEE 754 style, the all-ones exponent holds inf and NaN (float16 = E5M10,
  bfloat16 = E8M7, float8_e5m2, float8_e3m4);
- ``FN``: E4M3 only, the OCP FP8 E4M3FN encoding: no inf, only ``S.1111.111`` is NaN, finite
  max 448;
- ``FINITE``: formats of at most 6 bits and every format with E = 1 (OCP MX float6_e2m3fn,
  float6_e3m2fn, float4_e2m1fn): every pattern is a finite number.

Bias ``2^(E-1) - 1``; subnormals below ``2^(1 - bias)``.

``round_to_minifloat`` is a pure cast with round-to-nearest-even: with ``e`` the binade of
``|x|`` (not below the subnormal binade) the quantum is ``2^(e - M)`` and the result
``rint(|x|/2^(e-M))·2^(e-M)``, exact in float64 for float32 and float64 inputs (one rounding).
A result above the largest finite value overflows: with ``saturate`` it becomes ±max finite,
otherwise inf (IEEE), NaN (FN) or ±max (FINITE, which has nothing else), as ``ml_dtypes``
casts do. NaN stays NaN; ±0 keep their sign.

The quantizer scales weights so that xmax maps to the largest finite value, casts with
saturation, and emits the bit patterns as codes (NaN and inf patterns never occur). Its
codebook holds the value of all ``2^bits`` patterns times ``2^-emax`` (an exact power-of-two
rescale that keeps the table and the decoder's scale in the normal float32 range even for
E = 8, where max_finite·xmax would overflow and xmax/max_finite be subnormal), with 0 in place
of the non-finite patterns so that the table stays finite. Hence ``support_edge =
max_finite·2^-emax`` and the encoder casts ``t·2^emax`` (exact in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidSpecError
from quantcore.quantizers.base import Design
from quantcore.spec import Method, QuantizerSpec


class Encoding(StrEnum):
    IEEE = "ieee"
    FN = "fn"
    FINITE = "finite"


@dataclass(frozen=True, kw_only=True)
class MinifloatFormat:
    exponent_bits: int
    mantissa_bits: int
    encoding: Encoding

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def min_exponent(self) -> int:
        """Exponent of the smallest normal binade (also the subnormals' scale)."""
        return 1 - self.bias

    @property
    def max_exponent(self) -> int:
        top_field = (1 << self.exponent_bits) - 1
        if self.encoding is Encoding.IEEE:
            top_field -= 1
        return top_field - self.bias

    @property
    def max_finite(self) -> float:
        mantissa = 2.0 - 2.0 ** -self.mantissa_bits
        if self.encoding is Encoding.FN:
            mantissa -= 2.0 ** -self.mantissa_bits  # S.1111.111 is NaN
        return math.ldexp(mantissa, self.max_exponent)


def minifloat_format(exponent_bits: int, mantissa_bits: int) -> MinifloatFormat:
    """The format of sign + E + M bits, with the encoding rule of the module docstring."""
    if not 1 <= exponent_bits <= 8:
        raise InvalidSpecError(f"{exponent_bits=} must be between 1 and 8")
    if not 0 <= mantissa_bits <= 10:
        raise InvalidSpecError(f"{mantissa_bits=} must be between 0 and 10")
    if exponent_bits == 1 or 1 + exponent_bits + mantissa_bits <= 6:
        encoding = Encoding.FINITE
    elif (exponent_bits, mantissa_bits) == (4, 3):
        encoding = Encoding.FN
    else:
        encoding = Encoding.IEEE
    return MinifloatFormat(
        exponent_bits=exponent_bits, mantissa_bits=mantissa_bits, encoding=encoding
    )


def round_to_minifloat(
    x: npt.ArrayLike, exponent_bits: int, mantissa_bits: int, *, saturate: bool
) -> npt.NDArray[np.float32]:
    """``x`` rounded to the nearest minifloat, ties to even; float32 (exact for E ≤ 8, M ≤ 10)."""
    fmt = minifloat_format(exponent_bits, mantissa_bits)
    values = np.asarray(x, np.float64)
    magnitude = _round_magnitude(np.abs(values), fmt)
    over = magnitude > fmt.max_finite
    if saturate or fmt.encoding is Encoding.FINITE:
        overflow = fmt.max_finite
    else:
        overflow = math.inf if fmt.encoding is Encoding.IEEE else math.nan
    magnitude = np.where(over, overflow, magnitude)
    return np.copysign(magnitude, values).astype(np.float32)


def _round_magnitude(magnitude: np.ndarray, fmt: MinifloatFormat) -> np.ndarray:
    """RNE of non-negative float64 ``magnitude`` onto the format's grid, ignoring overflow."""
    _, exponent = np.frexp(magnitude)
    # frexp gives |x| = m·2^e with m in [0.5, 1): the binade is e - 1.
    binade = np.maximum(exponent - 1, fmt.min_exponent)
    quantum = np.ldexp(1.0, binade - fmt.mantissa_bits)
    with np.errstate(invalid="ignore"):
        return np.rint(magnitude / quantum) * quantum


def minifloat_values(fmt: MinifloatFormat) -> npt.NDArray[np.float64]:
    """The value of every bit pattern ``0 .. 2^bits - 1`` (inf and NaN where the format has any)."""
    e_bits, m_bits = fmt.exponent_bits, fmt.mantissa_bits
    patterns = np.arange(1 << fmt.bits, dtype=np.int64)
    sign = np.where(patterns >> (e_bits + m_bits) & 1, -1.0, 1.0)
    field = (patterns >> m_bits) & ((1 << e_bits) - 1)
    mantissa = (patterns & ((1 << m_bits) - 1)).astype(np.float64)
    normal = np.ldexp(1.0 + mantissa / (1 << m_bits), field - fmt.bias)
    subnormal = np.ldexp(mantissa, fmt.min_exponent - m_bits)
    values = sign * np.where(field == 0, subnormal, normal)
    top = field == (1 << e_bits) - 1
    if fmt.encoding is Encoding.IEEE:
        values[top & (mantissa == 0)] = sign[top & (mantissa == 0)] * math.inf
        values[top & (mantissa != 0)] = math.nan
    elif fmt.encoding is Encoding.FN:
        values[top & (mantissa == (1 << m_bits) - 1)] = math.nan
    return values


def minifloat_patterns(values: np.ndarray, fmt: MinifloatFormat) -> npt.NDArray[np.int64]:
    """Bit patterns of finite ``values`` that lie on the format's grid (e.g. from the cast)."""
    v = np.asarray(values, np.float64)
    magnitude = np.abs(v)
    _, exponent = np.frexp(magnitude)
    binade = np.maximum(exponent - 1, fmt.min_exponent)
    normal = magnitude >= math.ldexp(1.0, fmt.min_exponent)
    field = np.where(normal, binade + fmt.bias, 0)
    significand = np.ldexp(magnitude, fmt.mantissa_bits - binade)
    mantissa = np.where(normal, significand - (1 << fmt.mantissa_bits), significand)
    sign = np.signbit(v).astype(np.int64)
    return (
        (sign << (fmt.exponent_bits + fmt.mantissa_bits))
        | (field.astype(np.int64) << fmt.mantissa_bits)
        | mantissa.astype(np.int64)
    )


@dataclass(frozen=True, kw_only=True)
class MinifloatDesign(Design):
    format: MinifloatFormat

    def encode(self, t: np.ndarray, out: np.ndarray) -> None:
        fmt = self.format
        scaled = np.ldexp(np.asarray(t, np.float64), fmt.max_exponent)
        rounded = round_to_minifloat(scaled, fmt.exponent_bits, fmt.mantissa_bits, saturate=True)
        np.copyto(out, minifloat_patterns(rounded, fmt), casting="unsafe")


def design_minifloat(spec: QuantizerSpec) -> MinifloatDesign:
    """The minifloat design of ``spec`` (resolved, method ``float``)."""
    fmt = minifloat_format(spec.exponent_bits, spec.mantissa_bits)
    values = minifloat_values(fmt)
    levels = np.ldexp(np.where(np.isfinite(values), values, 0.0), -fmt.max_exponent)
    notes: tuple[str, ...] = ()
    if fmt.encoding is not Encoding.FINITE:
        notes = (f"{fmt.encoding.value} encoding: inf/NaN patterns never emitted",)
    return MinifloatDesign(
        method=Method.FLOAT,
        bits=fmt.bits,
        support_edge=math.ldexp(fmt.max_finite, -fmt.max_exponent),
        code_min=0,
        code_max=(1 << fmt.bits) - 1,
        levels=levels.astype(np.float32),
        format=fmt,
        notes=notes,
    )
