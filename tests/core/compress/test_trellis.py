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
    kernel.quantize_path(w, 1.0, 0.0, bits, 10, 8, *machine, 1 << 16, levels, counts)
    best = min(
        (float(np.sum((w - trellis_coder.path_levels(ks, version)) ** 2)), ks)
        for ks in itertools.product(range(-3, 4), repeat=w.size)
    )
    assert float(np.sum((w - levels) ** 2)) <= best[0] + 1e-9
    np.testing.assert_array_equal(levels, trellis_coder.path_levels(best[1], version))


@pytest.mark.parametrize(("size", "version"), [
    (300_000, trellis.MACHINE_VERSION), (adaptive.TINY_CODES, trellis.SMALL_MACHINE_VERSION),
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
