"""``block_kernels._kth_largest``: the rank that keeping a block's sum moves codes up to."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.quantizers.block_kernels import _kth_largest


def _reference(score: np.ndarray, k: int) -> float:
    return float(np.sort(score)[::-1][k - 1])


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    residuals = (rng.random(128) - 0.5).astype(np.float32)
    no_room = residuals.copy()
    no_room[rng.random(128) < 0.9] = -np.inf  # most codes at the clip bound
    clipped = residuals.copy()
    clipped[:40] = rng.normal(-30.0, 10.0, 40)  # clipped codes: far below the rest
    ties = np.round(residuals * 4) / 4  # many equal scores across the edge
    return [residuals, no_room, clipped, ties.astype(np.float32),
            np.full(32, -np.inf, np.float32), np.full(7, 0.25, np.float32),
            residuals[:32], ties[:32].astype(np.float32)]  # fmt: skip


@pytest.mark.parametrize("score", _cases())
def test_kth_largest_is_the_kth_of_the_sorted_scores(score: np.ndarray) -> None:
    # Small k ranks the few scores past a threshold against each other; larger k (or a
    # threshold lowered until k pass) sorts them in: both against the sorted scores.
    top = np.empty(2 * score.size, np.float32)
    for k in range(1, score.size + 1):
        assert _kth_largest(score, score.size, k, top) == _reference(score, k), k
