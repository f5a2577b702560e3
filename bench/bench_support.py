"""Support thresholds on large tensors and closed-form SQNR curves, against plain NumPy/SciPy.

Support (50M normalised Laplacian weights, float32, seeded):

- ``max_abs``: ``support_threshold`` (min and max, no copy) against ``np.abs(w).max()``;
- ``percentile`` 99.9: ours (one |w| buffer partitioned in place) against
  ``np.percentile(np.abs(w), 99.9)``; both results must be equal;
- ``jayant`` per channel: 10 000 calls (cached per N) against solving the minimisation
  afresh each time (``jayant_xmax.__wrapped__``).

Theory (N = 65536, a 200-point xmax curve, σ = 1): ``laplacian_uniform_sqnr_db`` against the
cell-by-cell sum of seed 001 eq. 8-12 in NumPy (32768 cells per point), and the relative
error of that expanded sum, which cancels at high N, against our value.

Time ratios are baseline / ours (> 1: ours is faster); memory is peak traced allocation.
Run: ``python -m bench.bench_support [--n 50000000] [--repeats 2]``.
Writes ``bench/results/bench_support.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.support import support_threshold
from quantcore.theory import jayant_xmax, laplacian_uniform_distortion

RESULTS = Path(__file__).parent / "results" / "bench_support.json"


@dataclass(frozen=True, kw_only=True)
class Row:
    case: str
    baseline: str
    ours_s: float
    baseline_s: float
    speedup: float
    ours_peak_mb: float
    baseline_peak_mb: float
    note: str


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best = math.inf
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def row(case: str, baseline: str, ours: Callable[[], Any], base: Callable[[], Any],
        repeats: int, note: str = "") -> tuple[Row, Any, Any]:
    a, t_ours = timed(ours, repeats)
    b, t_base = timed(base, repeats)
    return Row(
        case=case, baseline=baseline, ours_s=t_ours, baseline_s=t_base,
        speedup=t_base / t_ours, ours_peak_mb=peak_mb(ours), baseline_peak_mb=peak_mb(base),
        note=note,
    ), a, b


def expanded_eq_8_12(xmax: np.ndarray, levels: int) -> np.ndarray:
    """Seed 001 eq. 9 with eq. 10-12 summed cell by cell (σ = 1), as the paper writes it."""
    a = math.sqrt(2.0)
    half = levels // 2
    out = np.empty_like(xmax)
    for j, x in enumerate(xmax):
        step = 2 * x / levels
        edges = step * np.arange(half + 1)
        lower, upper = edges[:-1], edges[1:]
        upper_e = np.append(upper[:-1], np.inf)
        y = (np.arange(half) + 0.5) * step
        e_lo, e_hi = np.exp(-a * lower), np.exp(-a * upper_e)
        first = 0.5 * ((lower + 1 / a) * e_lo - np.where(np.isinf(upper_e), 0.0,
                                                         (upper + 1 / a) * e_hi))
        mass = 0.5 * (e_lo - e_hi)
        out[j] = 1.0 - 4.0 * np.dot(y, first) + 2.0 * np.dot(y * y, mass)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    w = rng.laplace(scale=1 / math.sqrt(2), size=args.n).astype(np.float32)
    rows: list[Row] = []

    r, ours, base = row(
        "max_abs", "np.abs(w).max()",
        lambda: support_threshold("max_abs", levels=256, normalized=w),
        lambda: float(np.abs(w).max()), args.repeats,
    )
    if ours != base:
        raise RuntimeError(f"max_abs differs: {ours} != {base}")
    rows.append(r)

    r, ours, base = row(
        "percentile 99.9", "np.percentile(np.abs(w), 99.9)",
        lambda: support_threshold("percentile", levels=256, normalized=w, value=99.9),
        lambda: float(np.percentile(np.abs(w), 99.9)), args.repeats,
        note="results equal",
    )
    if abs(ours - base) > 1e-6 * base:
        raise RuntimeError(f"percentile differs: {ours} != {base}")
    rows.append(r)

    calls = 10_000
    uncached = jayant_xmax.__wrapped__
    r, _, _ = row(
        f"jayant x{calls} channels", "minimisation per call",
        lambda: [support_threshold("jayant", levels=16, normalized=w[:1]) for _ in range(calls)],
        lambda: [uncached(16) for _ in range(calls // 100)], 1,
        note=f"baseline timed on {calls // 100} calls, scaled x100",
    )
    rows.append(Row(**{**asdict(r), "baseline_s": r.baseline_s * 100,
                       "speedup": r.baseline_s * 100 / r.ours_s}))

    xmax = np.linspace(1.0, 20.0, 200)
    levels = 1 << 16
    r, ours, base = row(
        "SQNR curve N=65536, 200 pts", "eq. 8-12 summed per cell",
        lambda: laplacian_uniform_distortion(xmax, levels),
        lambda: expanded_eq_8_12(xmax, levels), 1,
    )
    rel = float(np.max(np.abs(base - ours) / ours))
    rows.append(Row(**{**asdict(r), "note": f"expanded form's max rel. error {rel:.1e}"}))

    print(f"{'case':<30} {'ours s':>9} {'base s':>9} {'speedup':>8} {'ours MB':>8} "
          f"{'base MB':>8}  baseline / note")
    for r in rows:
        print(f"{r.case:<30} {r.ours_s:9.4f} {r.baseline_s:9.4f} {r.speedup:8.1f} "
              f"{r.ours_peak_mb:8.1f} {r.baseline_peak_mb:8.1f}  {r.baseline}; {r.note}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "bench_support",
        "n_weights": args.n,
        "rows": [asdict(r) for r in rows],
    }, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
