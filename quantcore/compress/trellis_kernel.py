"""The Viterbi search of trellis-coded quantization, compiled (``quantcore.compress.trellis``).

Two scalar quantizers on the integer grid: ``Q0`` has the even levels ``m = 2k``, ``Q1`` the
odd ones and zero, ``m = 2k - sgn(k)``. A state machine driven by the parity of each index
``k`` picks the quantizer of the next weight (``quantcore.coding.trellis_kernels``: VVC's 4
states or DeepCABAC's 8, passed as ``transitions`` and ``quantizers``). Each quantizer alone
has a step of 2, but the path through the states reaches every integer, so the search finds
levels almost as close as a step-1 quantizer's with indices of a step-2 quantizer's size;
more states, closer paths.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# A level's index and an index's level are the package coder's (one definition for both).
from quantcore.coding.trellis_kernels import _index as index
from quantcore.coding.trellis_kernels import _level as level

_INF = 1e300
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@_jit
def viterbi_block(w, inv, start, lam, bits, offset, m_max, transitions, quantizers, levels, back_k,
                  back_s):  # fmt: skip
    """Levels (integers, into ``levels``) of ``w · inv`` (in units of the step) minimising the
    squared error plus ``lam`` times the bits of each index (``bits[q, k + offset]``), the
    path starting in state ``start`` and ending in the cheapest state, which is returned.
    ``|level| <= m_max``. ``back_k``/``back_s``: (len(x), states) scratch."""
    n = w.size
    states = transitions.shape[0]
    cost = np.full(states, _INF)
    cost[start] = 0.0
    new = np.empty(states)
    width = bits.shape[1]
    for i in range(n):
        for t in range(states):
            new[t] = _INF
        xi = np.float64(w[i]) * inv
        for s in range(states):
            base_cost = cost[s]
            if base_cost >= _INF:
                continue
            q1 = quantizers[s]
            if q1 == 0:
                first = np.int64(np.floor(xi / 2.0)) - 1
            else:
                first = np.int64(np.floor((xi + 1.0) / 2.0)) - 1
            # Four indices around x, and zero (the cheapest index, often worth its error).
            for j in range(5):
                k = first + j if j < 4 else np.int64(0)
                if j < 4 and k == 0:
                    continue  # zero is candidate 4
                m = level(k, q1)
                if m > m_max or m < -m_max:
                    continue
                col = k + offset
                if col < 0 or col >= width:
                    continue
                d = xi - m
                c = base_cost + d * d + lam * bits[q1, col]
                t = transitions[s, k & 1]
                if c < new[t]:
                    new[t] = c
                    back_k[i, t] = k
                    back_s[i, t] = s
        for t in range(states):
            cost[t] = new[t]
    end = 0
    for t in range(1, states):
        if cost[t] < cost[end]:
            end = t
    s = end
    for i in range(n - 1, -1, -1):
        k = back_k[i, s]
        prev = back_s[i, s]
        levels[i] = level(k, quantizers[prev])
        s = prev
    return end


@_jit
def quantize_path(w, inv, lam, bits, offset, m_max, transitions, quantizers, block, levels,
                  counts):  # fmt: skip
    """``viterbi_block`` over ``w`` a ``block`` at a time, each block starting in the state
    the previous one ended in (one continuous path); ``counts[q, k + offset]`` gets each
    index's count in its quantizer. Returns the state after the last weight."""
    n = w.size
    states = transitions.shape[0]
    back_k = np.empty((min(block, n), states), np.int64)
    back_s = np.empty((min(block, n), states), np.int8)
    state = 0
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        viterbi_block(w[lo:hi], inv, state, lam, bits, offset, m_max, transitions, quantizers,
                      levels[lo:hi], back_k[: hi - lo], back_s[: hi - lo])  # fmt: skip
        for i in range(lo, hi):
            q1 = quantizers[state]
            k = index(levels[i], q1)
            counts[q1, k + offset] += 1
            state = transitions[state, k & 1]
    return state
