"""``prefetch_kernel``: the hint compiles to the CPU's prefetch instruction, reads nothing into
the computation and does not fault past an array's end (the across-rows kernel prefetches rows
ahead of the one it reads, up to the weight's last row)."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from quantcore.jit import njit
from quantcore.quantizers.prefetch_kernel import prefetch


@njit(cache=False)
def _sum_ahead(a, ahead):  # type: ignore[no-untyped-def]
    total = 0.0
    for i in range(a.size):
        prefetch(a, np.uintp(i + ahead))
        total += a[i]
    return total


@pytest.mark.parametrize("ahead", [0, 16, 1 << 20])
def test_a_prefetch_changes_no_result_even_far_past_the_end(ahead: int) -> None:
    a = np.random.default_rng(3).normal(size=1000).astype(np.float32)
    want = 0.0
    for value in a:
        want += float(value)
    assert _sum_ahead(a, ahead) == want


def test_the_hint_is_the_cpus_prefetch_instruction() -> None:
    _sum_ahead(np.zeros(4, np.float32), 1)
    assembly = next(iter(_sum_ahead.inspect_asm().values()))
    if platform.machine().lower() in ("aarch64", "arm64"):
        assert "prfm\tpldl1keep" in assembly  # read, kept in every level
    else:
        assert "prefetcht0" in assembly  # read, into every level of the cache
        assert "prefetchw" not in assembly
