"""Trellis-coded quantization: the Viterbi path, and what it saves over scalar RDOQ."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from quantcore.coding import adaptive, trellis_coder
from quantcore.compress import trellis
from quantcore.compress.rdoq import RDOQ_MU, rdoq_codes


def _entropy_bits(codes: np.ndarray) -> float:
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() * codes.size)


def _sqnr(w: np.ndarray, w_hat: np.ndarray) -> float:
    return 10 * math.log10(float(w @ w) / float((w - w_hat) @ (w - w_hat)))


@pytest.mark.parametrize("version", [trellis.SMALL_MACHINE_VERSION, trellis.MACHINE_VERSION])
def test_without_rate_the_search_finds_the_closest_path(version: int) -> None:
    """Rate zero (first pass only): the path of least squared error, checked against every
    sequence of indices of a short input."""
    w = np.array([0.3, -1.7, 2.2, 0.9, -0.4, 3.1], np.float32)
    kernel = trellis._kernel()
    bits = np.zeros((2, 21))
    levels = np.zeros(w.size, np.int32)
    counts = np.zeros((2, 21), np.int64)
    machine = trellis_coder.machine(version)
    kernel.quantize_path(w, 1.0, 0.0, bits, 10, 8, *machine, kernel.edges_in(*machine),
                         1 << 16, levels, counts, kernel.is_for(*machine))  # fmt: skip
    best = min(
        (float(np.sum((w - trellis_coder.path_levels(ks, version)) ** 2)), ks)
        for ks in itertools.product(range(-3, 4), repeat=w.size)
    )
    assert float(np.sum((w - levels) ** 2)) <= best[0] + 1e-9
    np.testing.assert_array_equal(levels, trellis_coder.path_levels(best[1], version))


def _reference_path(
    x: np.ndarray, lam: float, bits: np.ndarray, offset: int, m_max: int, version: int
) -> tuple[list[int], int]:
    """The search in plain Python, as the kernel defines it: per weight and quantizer, the
    four indices around x and zero (levels within ``m_max``, bits defined), each parity's
    cheapest (first on ties); per state, the cheaper of its two edges in (the lower state
    first on ties); the path ending in the cheapest state (the lowest on ties)."""
    transitions, quantizers = trellis_coder.machine(version)
    states = len(quantizers)
    edges_in: list[list[tuple[int, int]]] = [[] for _ in range(states)]
    for s in range(states):
        for parity in range(2):
            edges_in[int(transitions[s, parity])].append((s, parity))

    def level(k: int, q1: int) -> int:
        return 2 * k if q1 == 0 else 2 * k - (k > 0) + (k < 0)

    def cheapest(xi: float, q1: int) -> dict[int, tuple[float, int]]:
        first = math.floor(xi / 2.0) - 1 if q1 == 0 else math.floor((xi + 1.0) / 2.0) - 1
        best: dict[int, tuple[float, int]] = {}
        for k in [first + j for j in range(4) if first + j != 0] + [0]:
            m = level(k, q1)
            if abs(m) > m_max or not 0 <= k + offset < bits.shape[1]:
                continue
            cost = (xi - m) * (xi - m) + lam * float(bits[q1, k + offset])
            if k % 2 not in best or cost < best[k % 2][0]:
                best[k % 2] = (cost, k)
        return best

    cost = [0.0 if s == 0 else math.inf for s in range(states)]
    back: list[list[tuple[int, int]]] = []
    for xi in x.astype(np.float64):
        options = [cheapest(float(xi), 0), cheapest(float(xi), 1)]
        new, step = [], []
        for t in range(states):
            tried = []
            for s, p in edges_in[t]:  # the lower state first: min keeps the first on ties
                option = options[int(quantizers[s])]
                if p in option:
                    tried.append((cost[s] + option[p][0], s, option[p][1]))
            low = min(tried, key=lambda c: c[0]) if tried else (math.inf, -1, 0)
            new.append(low[0])
            step.append((low[1], level(low[2], int(quantizers[low[1]])) if tried else 0))
        cost = new
        back.append(step)
    t = min(range(states), key=lambda s: cost[s])
    end = t
    levels = []
    for step in reversed(back):
        t, m = step[t]
        levels.append(m)
    return levels[::-1], end


@pytest.mark.parametrize(("version", "vector"), [
    (5, False), (trellis.SMALL_MACHINE_VERSION, False), (trellis.MACHINE_VERSION, False),
    (trellis.MACHINE_VERSION, True),
])  # fmt: skip
def test_the_kernel_finds_the_reference_path(version: int, vector: bool) -> None:
    """The compiled search, with the scalar step and with the vector ``step`` of its machine,
    against ``_reference_path`` on inputs with outliers beyond the range, tiny ranges, rates
    from none to heavy and many ties: the same levels and end state."""
    rng = np.random.default_rng(version)
    kernel = trellis._kernel()
    machine = trellis_coder.machine(version)
    assert kernel.is_for(*machine) == (version == trellis.MACHINE_VERSION)
    assert kernel.MACHINE_VERSION == trellis.MACHINE_VERSION  # the vector step is the main one's
    cases = [(0, 0.4, False), (1, 2.0, False), (3, 0.4, False), (7, 0.0, False),
             (31, 0.4, False), (7, 0.0, True), (7, 0.4, True), (3, 0.0, True),
             (1, 0.0, True)]  # fmt: skip
    for m_max, lam, ties in cases:
        offset = m_max // 2 + 2
        if ties:  # weights on quarter steps, every index at the same rate: costs tie often
            w = rng.integers(-4 * m_max, 4 * m_max + 1, 200).astype(np.float32) / 4
            bits = np.ones((2, 2 * offset + 1))
        else:
            w = rng.laplace(size=200).astype(np.float32) * np.float32(m_max / 3 + 0.5)
            w[rng.integers(0, w.size, 4)] *= 50
            seen = rng.integers(0, 30, (2, 2 * offset + 1)) * (
                rng.random((2, 2 * offset + 1)) < 0.8)  # fmt: skip
            bits = trellis._bits(seen)
        levels = np.zeros(w.size, np.int32)
        counts = np.zeros(bits.shape, np.int64)
        end = kernel.quantize_path(w, 1.0, lam, bits, offset, m_max, *machine,
                                   kernel.edges_in(*machine), w.size, levels, counts,
                                   vector)  # fmt: skip
        expected, last = _reference_path(w, lam, bits, offset, m_max, version)
        np.testing.assert_array_equal(levels, expected)
        assert end == last  # the state the path ends in


@pytest.mark.parametrize(("size", "version"), [
    (300_000, trellis.MACHINE_VERSION),
    (adaptive.TRELLIS_TINY_CODES, trellis.SMALL_MACHINE_VERSION),
])  # fmt: skip
def test_levels_are_on_a_path_and_within_range(size: int, version: int) -> None:
    """Tensors take the 32-state machine; tiny ones (v9's) the 8-state one."""
    w = np.random.default_rng(11).laplace(size=size).astype(np.float32)
    path = trellis.trellis_levels(w, 0.05, 63)
    assert np.abs(path.levels).max() <= 63
    codes = (path.levels + 63).astype(np.uint8)
    states = np.empty(codes.size, np.uint8)
    machine = trellis_coder.machine(version)
    assert trellis_coder.kernels().states_of(codes, -63, *machine, states) == codes.size
    assert path.counts.sum() == w.size


def test_fewer_bits_than_scalar_rdoq_at_the_same_sqnr() -> None:
    """At equal SQNR, TCQ's indices given their quantizer take fewer bits than scalar RDOQ
    codes (order-0), on a Laplacian: the dependent quantizer's granular gain."""
    w = np.random.default_rng(12).laplace(size=400_000)
    step_tcq = 0.1
    path = trellis.trellis_levels(w, step_tcq, 1000)
    sqnr_tcq = _sqnr(w, path.levels * step_tcq)
    bits_tcq = trellis.conditional_bits(path.counts)

    def scalar(step: float) -> tuple[float, float]:
        t = w / step
        codes = rdoq_codes(t, np.copysign(np.floor(np.abs(t) + 0.5), t), 0.0, -5000, 5000,
                           RDOQ_MU)  # fmt: skip
        return _sqnr(w, codes * step), _entropy_bits(codes)

    lo, hi = step_tcq, 4 * step_tcq  # scalar SQNR falls as its step grows
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if scalar(mid)[0] > sqnr_tcq else (lo, mid)
    sqnr_scalar, bits_scalar = scalar(lo)
    assert abs(sqnr_scalar - sqnr_tcq) < 0.01
    assert bits_tcq < 0.985 * bits_scalar


COMPARED_WEIGHTS = 300_000


def _machines_compared(seed: int, fewer: int, more: int) -> tuple[float, float, float]:
    """The SQNR gain (dB) of the machine of stream ``more`` over that of ``fewer`` at the same
    step (0.1) and λ on a Laplacian (about 4.6 bits a weight), and each one's bits."""
    w = np.random.default_rng(seed).laplace(size=COMPARED_WEIGHTS)
    step = 0.1
    small, large = (trellis.trellis_levels(w, step, 1000, machine_version=v) for v in (fewer, more))
    gain_db = _sqnr(w, large.levels * step) - _sqnr(w, small.levels * step)
    return gain_db, trellis.conditional_bits(small.counts), trellis.conditional_bits(large.counts)


def test_eight_states_reach_closer_levels_than_four_at_the_same_rate() -> None:
    """DeepCABAC's 8-state machine against VVC's 4 at the same step and λ, on a Laplacian:
    a higher SQNR for about the same bits (the search's granular gain grows with states)."""
    gain_db, bits_four, bits_eight = _machines_compared(13, 5, 7)
    assert gain_db > 0.05
    assert bits_eight < 1.005 * bits_four


def test_thirty_two_states_reach_closer_levels_than_eight_at_the_same_rate() -> None:
    """The 32-state machine against DeepCABAC's 8 at the same step and λ, on a Laplacian at
    about 4.6 bits a weight: a higher SQNR for about the same bits."""
    gain_db, bits_eight, bits_wide = _machines_compared(14, 7, 12)
    assert gain_db - 6.02 * (bits_wide - bits_eight) / COMPARED_WEIGHTS > 0.08
