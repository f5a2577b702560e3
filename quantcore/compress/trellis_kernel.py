"""The Viterbi search of trellis-coded quantization, compiled (``quantcore.compress.trellis``).

Two scalar quantizers on the integer grid: ``Q0`` has the even levels ``m = 2k``, ``Q1`` the
odd ones and zero, ``m = 2k - sgn(k)``. A state machine driven by the parity of each index
``k`` picks the quantizer of the next weight (``quantcore.coding.trellis_kernels``: VVC's 4
states or DeepCABAC's 8, passed as ``transitions`` and ``quantizers``). Each quantizer alone
has a step of 2, but the path through the states reaches every integer, so the search finds
levels almost as close as a step-1 quantizer's with indices of a step-2 quantizer's size;
more states, closer paths.

A step of the search takes, for every state, the cheaper of its two edges in: the cost of
the state each comes from plus the cost of the index it takes (one of four: a quantizer's
cheapest of each parity), the lower state first on ties. Through the machine's tables that
is four lookups a state, scalar: about a third of the search's time at 32 states. For the
search's main machine (stream ``MACHINE_VERSION``'s) ``step`` has the tables as constants
of the code: the 32 costs one vector, each edge's source a constant shuffle of it, each
edge's index cost a constant shuffle of the four, the choice one compare and one select, its
32 bits the compare's mask. The same operations (one addition each, an ordered less-than),
so the same costs and choices; generic vector IR, which LLVM lowers to the CPU's permutes
(AVX-512, AVX2 or SSE alike). It lives in this file so that numba's cache of the kernels
that inline it goes stale with it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from quantcore.coding import trellis_coder

# A level's index and an index's level are the package coder's (one definition for both).
from quantcore.coding.trellis_kernels import _index as index
from quantcore.coding.trellis_kernels import _level as level
from quantcore.jit import intrinsic, njit, types

_INF = 1e300
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
_I32, _I64, _F64 = ir.IntType(32), ir.IntType(64), ir.DoubleType()
# The machine ``step`` is built for: ``trellis.MACHINE_VERSION``'s (not imported from there,
# which imports this module; ``is_for`` checks the tables, so a mismatch only costs speed).
MACHINE_VERSION = 12


def edges_in(transitions: np.ndarray, quantizers: np.ndarray) -> np.ndarray:
    """Each state's two edges in, the lower state first (it wins a tie, as it would pushed):
    rows ``from0, from1`` the state each comes from, rows ``edge0, edge1`` its index-cost
    slot (``2 · quantizer + parity``); (4, states) uint64, which the search's lookups take
    without numba's test for a negative index (12% of its time). The one definition of the
    edges: ``viterbi_block`` reads them, ``step`` has them as constants."""
    states = len(quantizers)
    edges = np.zeros((4, states), np.uint64)
    seen = [0] * states
    for s in range(states):
        for parity in range(2):
            t = int(transitions[s, parity])
            second = seen[t] > 0
            edges[int(second), t] = s
            edges[2 + int(second), t] = 2 * int(quantizers[s]) + parity
            seen[t] += 1
    return edges


FROM0, FROM1, EDGE0, EDGE1 = (
    [int(v) for v in row] for row in edges_in(*trellis_coder.machine(MACHINE_VERSION))
)
STATES = len(FROM0)


def is_for(transitions: np.ndarray, quantizers: np.ndarray) -> bool:
    """Whether ``step`` is the step of this machine."""
    ours = trellis_coder.machine(MACHINE_VERSION)
    return bool(np.array_equal(transitions, ours[0]) and np.array_equal(quantizers, ours[1]))


def _shuffle(values: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(values)), [ir.Constant(_I32, v) for v in values])


@intrinsic
def step(typingctx, cost, new, best_cost):
    """``new[t]`` = the cheaper of state ``t``'s two edges in, from ``cost`` (the states'
    costs, ``STATES`` float64) and ``best_cost`` (the four index costs); returns the bits of
    the states whose second edge won."""
    sig = types.uint64(cost, new, best_cost)

    def codegen(context, builder, signature, args):
        costs, news, bests = (context.make_array(t)(context, builder, v)
                              for t, v in zip(signature.args, args, strict=True))  # fmt: skip
        vector, four = ir.VectorType(_F64, STATES), ir.VectorType(_F64, 4)
        c = builder.load(builder.bitcast(costs.data, vector.as_pointer()), align=8)
        b = builder.load(builder.bitcast(bests.data, four.as_pointer()), align=8)
        any_c, any_b = ir.Constant(vector, ir.Undefined), ir.Constant(four, ir.Undefined)
        c0 = builder.fadd(builder.shuffle_vector(c, any_c, _shuffle(FROM0)),
                          builder.shuffle_vector(b, any_b, _shuffle(EDGE0)))  # fmt: skip
        c1 = builder.fadd(builder.shuffle_vector(c, any_c, _shuffle(FROM1)),
                          builder.shuffle_vector(b, any_b, _shuffle(EDGE1)))  # fmt: skip
        second = builder.fcmp_ordered("<", c1, c0)
        builder.store(builder.select(second, c1, c0),
                      builder.bitcast(news.data, vector.as_pointer()), align=8)  # fmt: skip
        return builder.zext(builder.bitcast(second, ir.IntType(STATES)), _I64)

    return sig, codegen


@njit(inline="always")
def _first(xi, q1):
    """The lowest of the four indices around ``xi`` that quantizer ``q1`` tries."""
    if q1 == 0:
        return np.int64(np.floor(xi / 2.0)) - 1
    return np.int64(np.floor((xi + 1.0) / 2.0)) - 1


@njit(inline="always")
def _cheapest(xi, q1, lam, bits, offset, m_max, best_cost, best_j):
    """Quantizer ``q1``'s cheapest index of each parity for ``xi`` (squared error plus ``lam``
    times its bits) into ``best_cost[2 q1 + parity]``, and which candidate it is into
    ``best_j`` (0-3: ``_first + j``; 4: zero), the first on ties (cost ``_INF`` where no
    index of a parity is allowed)."""
    best_cost[2 * q1] = _INF
    best_cost[2 * q1 + 1] = _INF
    first = _first(xi, q1)
    # Four indices around x, and zero (the cheapest index, often worth its error).
    for j in range(5):
        k = first + j if j < 4 else np.int64(0)
        if j < 4 and k == 0:
            continue  # zero is candidate 4
        m = level(k, q1)
        if m > m_max or m < -m_max:
            continue
        col = k + offset
        if col < 0 or col >= bits.shape[1]:
            continue
        d = xi - m
        c = d * d + lam * bits[q1, col]
        slot = 2 * q1 + (k & 1)
        if c < best_cost[slot]:
            best_cost[slot] = c
            best_j[slot] = j


@_jit
def viterbi_block(w, inv, start, lam, bits, offset, m_max, edges, levels, back, picks, vector):
    """Levels (integers, into ``levels``) of ``w · inv`` (in units of the step) minimising the
    squared error plus ``lam`` times the bits of each index (``bits[q, k + offset]``), the
    path starting in state ``start`` and ending in the cheapest state, which is returned.
    ``|level| <= m_max``. ``edges``: the machine's ``edges_in`` (at most 64 states, each with
    two edges in: ``trellis.trellis_levels`` checks). ``back``: (len(x),) uint64 and
    ``picks``: (len(x), 4) uint8 scratch. ``vector``: the machine is the main one
    (``is_for``), whose ``step`` then runs in place of the scalar loop."""
    n = w.size
    states = edges.shape[1]
    cost = np.full(states, _INF)
    cost[start] = 0.0
    new = np.empty(states)
    # A candidate's error and rate depend on its quantizer, not on the state, and a state's
    # two edges are its index's parities: each quantizer's cheapest index of each parity is
    # found once a weight, and a state weighs its two edges in. Which of the two won is one
    # bit a state (``back``), and which candidate each slot took (``picks``): the backtrack
    # rebuilds the index from it (searching again, it took a third of the time).
    best_cost = np.empty(4)  # [2 · quantizer + parity]
    best_j = np.zeros(4, np.int64)
    from0, from1, edge0, edge1 = edges[0], edges[1], edges[2], edges[3]
    for i in range(n):
        xi = np.float64(w[i]) * inv
        _cheapest(xi, 0, lam, bits, offset, m_max, best_cost, best_j)
        _cheapest(xi, 1, lam, bits, offset, m_max, best_cost, best_j)
        for slot in range(4):
            picks[i, slot] = best_j[slot]
        # The cheaper of each state's two edges in, without a branch (a coin toss to the
        # predictor).
        chosen = np.uint64(0)
        if vector:
            chosen = step(cost, new, best_cost)  # type: ignore[call-arg]
        else:
            for t in range(states):
                c0 = cost[from0[t]] + best_cost[edge0[t]]
                c1 = cost[from1[t]] + best_cost[edge1[t]]
                second = c1 < c0
                new[t] = c1 if second else c0
                chosen |= np.uint64(second) << np.uint64(t)
        back[i] = chosen
        cost, new = new, cost
    end = 0
    for t in range(1, states):
        if cost[t] < cost[end]:
            end = t
    state = np.int64(end)
    for i in range(n - 1, -1, -1):
        second = (back[i] >> np.uint64(state)) & np.uint64(1)
        edge = np.int64(edge1[state] if second else edge0[state])
        q1 = edge >> 1
        j = picks[i, edge]
        k = _first(np.float64(w[i]) * inv, q1) + j if j < 4 else np.int64(0)
        levels[i] = level(k, q1)
        state = np.int64(from1[state] if second else from0[state])
    return end


@_jit
def quantize_path(w, inv, lam, bits, offset, m_max, transitions, quantizers, edges, block,
                  levels, counts, vector):  # fmt: skip
    """``viterbi_block`` over ``w`` a ``block`` at a time, each block starting in the state
    the previous one ended in (one continuous path); ``counts[q, k + offset]`` gets each
    index's count in its quantizer. Returns the state after the last weight. ``edges`` and
    ``vector``: as for ``viterbi_block``, of the machine of ``transitions`` and
    ``quantizers``."""
    n = w.size
    back = np.empty(min(block, n), np.uint64)
    picks = np.empty((min(block, n), 4), np.uint8)
    state = 0
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        viterbi_block(w[lo:hi], inv, state, lam, bits, offset, m_max, edges, levels[lo:hi],
                      back[: hi - lo], picks[: hi - lo], vector)  # fmt: skip
        for i in range(lo, hi):
            q1 = quantizers[state]
            k = index(levels[i], q1)
            counts[q1, k + offset] += 1
            state = transitions[state, k & 1]
    return state
