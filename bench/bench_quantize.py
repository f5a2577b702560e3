"""Uniform quantization of a 50M-weight layer with all its statistics, against plain NumPy and
onnxruntime, single-threaded.

Ours: ``quantize_tensors`` on one float32 Laplacian tensor (layer granularity, support
``jayant``, midrise), which computes mean/std, min/max, the codes, the dequantized weights
(exactly as the ONNX graph decodes them), SQNR, the share within the support, the levels used
and the code entropy.

Baselines, measured in the same run on the same tensor:

- ``numpy``: ``np.clip(np.round(w / s), lo, hi) * s`` with a precomputed scale, no statistics;
- ``onnxruntime``: ``onnxruntime.quantization.quant_utils.quantize_data(w, INT8,
  symmetric=True)`` (min/max scale and int8 codes; no dequantization, no statistics).

Throughput is weights per second of wall-clock time (best of ``--repeats``); ``base/ours`` is
the baseline's time over ours (> 1: ours is faster although it does more). CPU time is
printed beside it: on a shared machine it shows how much of the wall time was waiting.
Memory is the peak traced allocation during the call (NumPy reports its buffers to
tracemalloc), as a multiple of the tensor's bytes; for ours the outputs alone (int8 codes
and float32 dequantized weights) are 1.25×, the rest is temporaries.

Run: ``python -m bench.bench_quantize [--n 50000000] [--bits 8] [--repeats 2]
[--method uniform]`` (other methods: the same measurement for that family).
Writes ``bench/results/bench_quantize.json``.
"""

from __future__ import annotations

import os

# One core: BLAS (np.dot) must not spread over the machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from onnx import TensorProto  # noqa: E402
from onnxruntime.quantization.quant_utils import quantize_data  # noqa: E402

from quantcore.layerwise import TensorRequest, quantize_tensors  # noqa: E402
from quantcore.spec import Granularity, Method, QuantizerSpec, Support  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_quantize.json"


@dataclass(frozen=True, kw_only=True)
class Row:
    case: str
    seconds: float
    cpu_seconds: float
    mweights_per_s: float
    ratio_vs_ours: float
    peak_memory_x: float
    note: str


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU time of ``repeats`` calls (CPU time shows contention)."""
    best = math.inf
    best_cpu = math.inf
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        del result
    return best, best_cpu


def peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        result = fn()
        del result
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", choices=[m.value for m in Method], default="uniform",
                        help="family measured as 'ours' (the target is set for uniform)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    w = rng.laplace(0.0, 0.05 / math.sqrt(2), args.n).astype(np.float32)
    method = Method(args.method)
    spec = QuantizerSpec(method=method, bits=args.bits, support=Support.JAYANT).resolved()
    if method is Method.FLOAT:  # E4M3 (bits ignored)
        spec = QuantizerSpec(method=method, support=Support.MAX_ABS).resolved()
    request = TensorRequest(name="layer", weights=w, quantizer=spec)

    def ours() -> Any:
        return quantize_tensors([request], Granularity.LAYER)

    (result,) = ours()  # warm-up, and the figures to print
    step = float(np.max(result.quantized.decoder.scale))
    half = 1 << (spec.bits - 1)

    def numpy_round_clip() -> Any:
        return np.clip(np.round(w / step), -half, half - 1) * step

    def ort_quantize_data() -> Any:
        qtype = TensorProto.INT8 if spec.bits <= 8 else TensorProto.INT16
        return quantize_data(w, qtype, True)

    cases = [("ours (quantize_tensors + statistics)", ours, "codes, dequantized, all stats"),
             ("numpy round-and-clip", numpy_round_clip, "dequantized only, no stats"),
             ("onnxruntime quantize_data", ort_quantize_data, "codes only, no stats")]
    measured = {name: timed(fn, args.repeats) for name, fn, _ in cases}
    timings = {name: wall for name, (wall, _) in measured.items()}
    memory = {name: peak_bytes(fn) for name, fn, _ in cases}
    ours_s = timings[cases[0][0]]
    rows = [
        Row(case=name, seconds=timings[name], cpu_seconds=measured[name][1],
            mweights_per_s=args.n / timings[name] / 1e6,
            ratio_vs_ours=timings[name] / ours_s, peak_memory_x=memory[name] / w.nbytes,
            note=note)
        for name, _, note in cases
    ]
    rep = result.report
    theory = "n/a" if rep.sqnr_theory_db is None else f"{rep.sqnr_theory_db:.3f}"
    outputs = (result.quantized.codes.nbytes + result.quantized.dequantized.nbytes) / w.nbytes
    print(f"{args.n:,} float32 Laplacian weights, {spec.bits}-bit {method.value} "
          f"({spec.rounding.value if method is Method.UNIFORM else 'codebook'}), "
          f"{rep.support} support, one thread")
    print(f"{'case':38s} {'wall s':>7s} {'cpu s':>7s} {'Mw/s':>8s} {'base/ours':>9s} "
          f"{'peak mem':>9s}")
    for r in rows:
        print(f"{r.case:38s} {r.seconds:7.3f} {r.cpu_seconds:7.3f} {r.mweights_per_s:8.1f} "
              f"{r.ratio_vs_ours:9.2f} {r.peak_memory_x:8.2f}x")
    print(f"ours: outputs {outputs:.2f}x of the tensor, temporaries "
          f"{rows[0].peak_memory_x - outputs:.2f}x; SQNR {rep.sqnr_db:.3f} dB "
          f"(theory {theory}), within support {rep.within_support_pct:.3f}%, "
          f"{rep.levels_used} levels, entropy {rep.entropy_bits:.3f} bits")
    out = RESULTS if method is Method.UNIFORM else RESULTS.with_stem(f"{RESULTS.stem}_{method}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "n": args.n, "bits": spec.bits, "method": method.value, "threads": 1,
        "rows": [asdict(r) for r in rows],
        "outputs_x": outputs, "temporaries_x": rows[0].peak_memory_x - outputs,
        "report": rep.to_dict(),
    }, indent=2))


if __name__ == "__main__":
    main()
