"""The vector decoder of stream ``QENT`` v2 (``rans_simd``'s round loop) for CPUs with AVX2
and without AVX-512: the same loop, its states refilled by a permutation of the next 8 words
(``rans_simd.refilled``) where AVX2 has no expanding load. LLVM splits each 512-bit vector
of the loop into two 256-bit registers, and its 64-bit multiply of a 16-bit frequency into
``vpmuludq``s. The codes, the words read and the checks are ``rans_simd``'s; ``rans_batch``
drives either through the same names.
"""

from __future__ import annotations

from numba import njit

from quantcore.coding.rans_simd import (
    PARAMS,
    compiled_features,
    finish,
    finish_nibbles,
    make_rounds,
)

__all__ = ["GROUP", "PARAMS", "available", "finish", "finish_nibbles", "rounds",
           "rounds_nibbles"]  # fmt: skip

GROUP = 4  # chunks advanced together: as many chains in flight as the AVX-512 loop keeps
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


def available() -> bool:
    """Whether the CPU numba compiles for has AVX2 (``rans_simd.compiled_features``; where it
    also has the AVX-512 of ``rans_simd.available``, that loop is used instead)."""
    return compiled_features().get("avx2", False)


_rounds = make_rounds(False, permuted=True)
_rounds_nibbles = make_rounds(True, permuted=True)


@_jit
def rounds(words, tables, lows, outs, states, pos, base, params, limit):
    """``rans_simd.rounds`` with the states refilled by permutation."""
    return _rounds(words, tables, lows, outs, states, pos, base, params, limit)  # type: ignore[operator]


@_jit
def rounds_nibbles(words, tables, lows, outs, states, pos, base, params, limit):
    """``rans_simd.rounds_nibbles`` with the states refilled by permutation."""
    return _rounds_nibbles(words, tables, lows, outs, states, pos, base, params, limit)  # type: ignore[operator]
