"""Support thresholds on large tensors and closed-form SQNR curves, against plain NumPy/SciPy.

Support (50M normalised Laplacian weights, float32, seeded):

- ``max_abs``: ``support_threshold`` (min and max, no copy) against ``np.abs(w).max()``;
- ``percentile`` 99.9: ours (one |w| buffer partitioned in place) against
  ``np.percentile(np.abs(w), 99.9)``; both results must be equal;
- ``jayant`` per channel: 10 000 calls (cached per N) against solving the minimisation
  afresh each time (``mse_optimal_xmax.__wrapped__``).

Theory (N = 65536, a 200-point xmax curve, σ = 1): ``laplacian_uniform_sqnr_db`` against the
cell-by-cell sum of seed 001 eq. 8-12 in NumPy (32768 cells per point), and the relative
error of that expanded sum, which cancels at high N, against our value.

Per-channel and per-group rules (``--rows`` × 4096 Laplacian weights; uniform 4 bits, and
log 4 bits per channel and per layer and mu-law 8 bits in groups of 32 with ``mse``): the whole
``quantize_tensors`` call with support ``mse`` or ``percentile`` 99.9 against the same call with
``max_abs`` (the target: at most 3× its time), and against the reference search of the same
rule (per channel: one channel at a time, ~55 ``quantize`` calls each; per layer: those calls
on the layer's sample; per group: the NumPy path), timed on ``--ref-rows`` rows and scaled
(per layer, on all of them). Results are the same as the reference's (the
tests compare them bit for bit). Times here are CPU seconds: the machine may be shared.

Time ratios are baseline / ours (> 1: ours is faster); memory is peak traced allocation.
Run: ``python -m bench.bench_support [--n 50000000] [--rows 2048] [--ref-rows 32]
[--repeats 2]``.
Writes ``bench/results/bench_support.json``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.common import Column, laplacian, peak_bytes, print_table, timed, write_results
from quantcore.compress import channel_support, groups
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.design.support import support_threshold
from quantcore.design.theory import laplacian_uniform_distortion, mse_optimal_xmax
from quantcore.spec import Granularity, Method, QuantizerSpec, Support


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


COLUMNS = (
    Column(header="case", field="case", width=30, left=True),
    Column(header="ours s", field="ours_s", width=9, spec=".4f"),
    Column(header="base s", field="baseline_s", width=9, spec=".4f"),
    Column(header="speedup", field="speedup", width=8, spec=".1f"),
    Column(header="ours MB", field="ours_peak_mb", width=8, spec=".1f"),
    Column(header="base MB", field="baseline_peak_mb", width=8, spec=".1f"),
    Column(header="baseline", field="baseline", width=32, left=True),
    Column(header="note", field="note", width=0, left=True),
)


def row(case: str, baseline: str, ours: Callable[[], Any], base: Callable[[], Any],
        repeats: int, note: str = "") -> tuple[Row, Any, Any]:
    a, b = timed(ours, repeats), timed(base, repeats)
    return Row(
        case=case, baseline=baseline, ours_s=a.seconds, baseline_s=b.seconds,
        speedup=b.seconds / a.seconds, ours_peak_mb=peak_bytes(ours) / 1e6,
        baseline_peak_mb=peak_bytes(base) / 1e6, note=note,
    ), a.result, b.result


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


@dataclass(frozen=True, kw_only=True)
class RuleRow:
    case: str
    cpu_s: float
    vs_max_abs: float  # our CPU time over the max_abs job's
    reference_cpu_s: float  # the reference search, scaled to the same rows
    speedup: float
    note: str


RULE_COLUMNS = (
    Column(header="case", field="case", width=26, left=True),
    Column(header="cpu s", field="cpu_s", width=8, spec=".3f"),
    Column(header="x max_abs", field="vs_max_abs", width=9, spec=".2f"),
    Column(header="ref cpu s", field="reference_cpu_s", width=10, spec=".2f"),
    Column(header="speedup", field="speedup", width=8, spec=".1f"),
    Column(header="note", field="note", width=0, left=True),
)


# (granularity, method, bits, the rules measured against max_abs)
RULE_CASES = (
    (Granularity.CHANNEL, Method.UNIFORM, 4, (Support.MSE, Support.PERCENTILE)),
    (Granularity.GROUP, Method.UNIFORM, 4, (Support.MSE, Support.PERCENTILE)),
    (Granularity.CHANNEL, Method.LOG, 4, (Support.MSE,)),
    (Granularity.LAYER, Method.LOG, 4, (Support.MSE,)),
    (Granularity.GROUP, Method.MULAW, 8, (Support.MSE,)),
)


def _job(w: np.ndarray, gran: Granularity, method: Method, bits: int,
         support: Support) -> Callable[[], Any]:  # fmt: skip
    value = 99.9 if support is Support.PERCENTILE else None
    spec = QuantizerSpec(method=method, bits=bits, support=support, support_value=value)
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0, block_axis=1)
    return lambda: quantize_tensors([req], gran, group_size=32)


def _reference(gran: Granularity, fn: Callable[[], Any]) -> Callable[[], Any]:
    # The channel and layer searches' reference measures one point at a time.
    row_search = gran in (Granularity.CHANNEL, Granularity.LAYER)
    module: Any = channel_support if row_search else groups
    flag = "ROW_SEARCH" if row_search else "USE_KERNELS"

    def run() -> Any:
        setattr(module, flag, False)
        try:
            return fn()
        finally:
            setattr(module, flag, True)
    return run


def rule_rows(rows: int, ref_rows: int, repeats: int) -> list[RuleRow]:
    w = (laplacian(rows * 4096, std=0.05)).reshape(rows, 4096)
    w_ref = w[:ref_rows]
    out = []
    for gran, method, bits, rules in RULE_CASES:
        family = "" if method is Method.UNIFORM else f" {method.value}"
        for support in rules:
            _job(w[:2], gran, method, bits, support)()  # compile or load the kernels
        base = timed(_job(w, gran, method, bits, Support.MAX_ABS), repeats).cpu_seconds
        out.append(RuleRow(case=f"{gran.value}{family} max_abs", cpu_s=base, vs_max_abs=1.0,
                           reference_cpu_s=float("nan"), speedup=float("nan"),
                           note=f"{rows} x 4096, {bits} bits"))  # fmt: skip
        for support in rules:
            ours = timed(_job(w, gran, method, bits, support), repeats).cpu_seconds
            # A layer's search reads a bounded sample: its reference runs on the whole weight.
            part = w if gran is Granularity.LAYER else w_ref
            reference = _reference(gran, _job(part, gran, method, bits, support))
            ref = timed(reference, 1).cpu_seconds * rows / part.shape[0]
            note = "" if part is w else f"reference timed on {ref_rows} rows, scaled"
            out.append(RuleRow(case=f"{gran.value}{family} {support.value}", cpu_s=ours,
                               vs_max_abs=ours / base, reference_cpu_s=ref, speedup=ref / ours,
                               note=note))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--ref-rows", type=int, default=32)
    args = parser.parse_args(argv)

    w = laplacian(args.n)
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
    uncached = mse_optimal_xmax.__wrapped__
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

    print_table(rows, COLUMNS)
    rules = rule_rows(args.rows, args.ref_rows, args.repeats)
    print()
    print_table(rules, RULE_COLUMNS)
    write_results("bench_support", {
        "benchmark": "bench_support",
        "n_weights": args.n,
        "rows": [asdict(r) for r in rows],
        "rule_rows": [asdict(r) for r in rules],
    })

if __name__ == "__main__":
    main()
