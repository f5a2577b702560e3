"""A codebook family's encoder as a table of breakpoints, found from the encoder itself.

The compiled kernels (``quantcore.quantizers.kernels``) cannot call a family's NumPy
``encode`` (mu-law's float32 ``log1p`` is a SIMD routine of NumPy's own, the minifloat cast is
a chain of float64 steps), but every family's code is a step function of ``|t|`` on each
side of zero. So the steps are located once per design and compute dtype by bisection on the
dtype's bit patterns, evaluating the family's own ``encode``: ``edges[k]`` is the smallest
magnitude whose code is ``codes[k + 1]``. A magnitude ``m`` then takes
``codes[#{edges ≤ m}]``, which is the reference encoder's answer for every representable
``m`` as long as the encoder is monotone on each side (one run per code); if a code comes back
in two runs the design gets no table and the NumPy encoder is used.

The side of ``t`` is ``t < 0`` when ``-0.0`` and ``+0.0`` take the same code, else the sign
bit (minifloats keep the sign of zero).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from quantcore.quantizers.base import Design

BUCKETS = (0x7F800000 >> 16) + 1  # through +inf
_CACHE_SIZE = 64
# Designs hold arrays (not hashable): tables are kept by the designs' field values.
_CACHE: dict[tuple[object, ...], CodeTable | None] = {}
_UINT: dict[np.dtype, np.dtype] = {
    np.dtype(np.float32): np.dtype(np.uint32), np.dtype(np.float64): np.dtype(np.uint64)
}


@dataclass(frozen=True, kw_only=True)
class CodeTable:
    """Breakpoints of one design in one dtype, both sides in one set of arrays.

    Side ``s`` (0: positive, 1: negative) takes ``codes[k]`` with ``k`` the index of the
    first edge of the bucket of ``m = |t|`` (``s·BUCKETS + b``, ``b`` the top 16 bits of
    ``float32(m)``, monotone in ``m``: every edge of a lower bucket is skipped) stepped on
    while ``edges[k] ≤ m``; the steps are few (a bucket spans 1/128 of a binade). Each side's
    edges end with a NaN, which no magnitude passes.

    ``lut`` holds per bucket that index (bits 32-62) and its edge (the low 32 bits, float32),
    so that the one step a bucket with at most one edge needs reads no other table; a bucket
    that holds more, or any bucket of a float64 table, has bit 63 set and a NaN there, and is
    stepped through in ``edges`` (``kernels._table``).
    """

    signbit: bool  # the negative side holds -0.0 (else only t < 0)
    edges: npt.NDArray[np.floating]
    codes: npt.NDArray[np.int64]
    lut: npt.NDArray[np.int64]


_NAN32 = int(np.array(np.nan, np.float32).view(np.uint32))
_STEP_ON = np.int64(-1) << np.int64(63)  # bit 63: the bucket is stepped through in ``edges``


def _merged(signbit: bool, sides: list[tuple[np.ndarray, np.ndarray]]) -> CodeTable:
    edges, codes, firsts, crowded = [], [], [], []
    start = 0
    every = np.arange(BUCKETS)
    for side_edges, side_codes in sides:
        buckets = side_edges.astype(np.float32).view(np.uint32) >> 16
        first = np.searchsorted(buckets, every, side="left")
        firsts.append(start + first)
        crowded.append(np.searchsorted(buckets, every, side="right") - first > 1)
        edges += [side_edges, np.full(1, np.nan, side_edges.dtype)]
        codes.append(side_codes)
        start += side_codes.size
    all_edges = np.concatenate(edges)
    index = np.concatenate(firsts).astype(np.int64)
    step_on = np.concatenate(crowded) | (all_edges.dtype != np.float32)
    edge_bits = all_edges[index].astype(np.float32).view(np.uint32).astype(np.int64)
    lut = (index << 32) | np.where(step_on, _NAN32, edge_bits)
    lut[step_on] |= _STEP_ON
    return CodeTable(signbit=signbit, edges=all_edges, codes=np.concatenate(codes), lut=lut)


def _codes(design: Design, t: np.ndarray) -> npt.NDArray[np.int64]:
    out = np.empty(t.shape, design.dtype)
    design.encode(t.copy(), out)
    return out.astype(np.int64)


def _side(
    design: Design, dtype: np.dtype, sign: float, start: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Edges and codes along magnitudes with bit patterns ``start .. +inf`` on one side."""
    utype = _UINT[dtype]
    top = int(np.array(np.inf, dtype).view(utype))

    def code_at(bits: np.ndarray) -> npt.NDArray[np.int64]:
        return _codes(design, np.asarray(bits, utype).view(dtype) * dtype.type(sign))

    lo = np.array([start], np.int64 if dtype.itemsize == 4 else np.uint64)
    hi = np.array([top], lo.dtype)
    c_lo, c_hi = code_at(lo), code_at(hi)
    found_at: list[np.ndarray] = []
    found_code: list[np.ndarray] = []
    keep = c_lo != c_hi
    lo, hi, c_lo, c_hi = lo[keep], hi[keep], c_lo[keep], c_hi[keep]
    while lo.size:
        mid = lo + (hi - lo) // 2
        c_mid = code_at(mid)
        left = c_mid != c_lo  # a change in (lo, mid]
        right = c_mid != c_hi  # a change in (mid, hi]
        lo = np.concatenate([lo[left], mid[right]])
        hi = np.concatenate([mid[left], hi[right]])
        c_lo = np.concatenate([c_lo[left], c_mid[right]])
        c_hi = np.concatenate([c_mid[left], c_hi[right]])
        done = hi - lo == 1
        found_at.append(hi[done])
        found_code.append(c_hi[done])
        lo, hi, c_lo, c_hi = lo[~done], hi[~done], c_lo[~done], c_hi[~done]
    at = np.concatenate([np.zeros(0, lo.dtype), *found_at])
    order = np.argsort(at, kind="stable")
    at = at[order]
    codes = np.concatenate([code_at(np.array([start], lo.dtype)),
                            np.concatenate([np.zeros(0, np.int64), *found_code])[order]])
    if np.unique(codes).size != codes.size:
        return None  # not monotone: a code in two runs
    return np.asarray(at, utype).view(dtype), codes


def _key(design: Design) -> tuple[object, ...]:
    parts: list[object] = [type(design).__name__]
    for f in fields(design):
        value = getattr(design, f.name)
        parts.append(value.tobytes() if isinstance(value, np.ndarray) else repr(value))
    return tuple(parts)


def _build(design: Design, dtype: np.dtype) -> CodeTable | None:
    zero = np.zeros(1, dtype)
    signbit = bool(_codes(design, -zero)[0] != _codes(design, zero)[0])
    pos = _side(design, dtype, 1.0, 0)
    neg = _side(design, dtype, -1.0, 0 if signbit else 1)
    if pos is None or neg is None:
        return None
    return _merged(signbit, [pos, neg])


def code_table(design: Design, dtype: np.dtype) -> CodeTable | None:
    """The breakpoints of ``design``'s codes for ``t`` of ``dtype`` (float32 or float64), or
    None where the encoder is not a step function of ``|t|`` on each side."""
    key = (*_key(design), np.dtype(dtype).str)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(design, np.dtype(dtype))
    return _CACHE[key]
