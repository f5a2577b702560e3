"""``Accumulator.needed_rows``: a layer's ``H`` is summed only once GPTQ could use it, and then
to the very bits of summing it batch by batch."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.compress.hessian import MIN_ROWS_PER_INPUT, Accumulator, Geometry

K = 48


def _batches(count: int, rows: int, groups: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [(rng.standard_normal((rows, groups * K)) + 0.5).astype(np.float32)
            for _ in range(count)]  # fmt: skip


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("batches", [1, 3, 7])  # the count reached late, midway, early
def test_sums_deferred_until_enough_rows_are_the_sums_of_every_batch(
    groups: int, batches: int
) -> None:
    geometry = Geometry(op="MatMul", rows=8 * groups, k=K, groups=groups)
    needed = MIN_ROWS_PER_INPUT * K  # 96 rows; each batch brings 40 (two halves of 20)
    eager = Accumulator(geometry=geometry, max_rows=10**6)
    deferred = Accumulator(geometry=geometry, max_rows=10**6, needed_rows=needed)
    for x in _batches(batches, 40, groups):
        eager.add(x)
        deferred.add(x)
    got, want = deferred.stats, eager.stats
    assert (got.count, got.half_count, got.seen) == (want.count, want.half_count, want.seen)
    assert got.total.tobytes() == want.total.tobytes()
    if want.count >= needed:  # summed, in the order the batches came: the same bits
        assert got.half is not None and want.half is not None
        assert got.hessian.tobytes() == want.hessian.tobytes()
        assert got.half.tobytes() == want.half.tobytes()
        assert np.any(got.hessian)
    else:  # GPTQ rounds such a layer plainly: no product was taken
        assert batches == 1 and not np.any(got.hessian)


def test_rows_kept_while_waiting_are_copies_of_the_batch() -> None:
    """A batch of one sample is not split into halves, so its rows view the batch, and
    onnxruntime may hand the next batch in the same buffer: a kept view would change."""
    geometry = Geometry(op="MatMul", rows=8, k=K)
    eager = Accumulator(geometry=geometry, max_rows=10**6)
    deferred = Accumulator(geometry=geometry, max_rows=10**6, needed_rows=MIN_ROWS_PER_INPUT * K)
    buffer = np.empty((1, 40, K), np.float32)  # one sample of 40 rows a batch
    for x in _batches(4, 40):
        buffer[0] = x
        eager.add(buffer)
        deferred.add(buffer)
        buffer[:] = np.nan  # what a reused buffer would hold by the next batch
    assert eager.stats.count == 160 and np.any(eager.stats.hessian)
    assert deferred.stats.hessian.tobytes() == eager.stats.hessian.tobytes()
