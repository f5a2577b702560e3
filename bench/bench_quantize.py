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
from dataclasses import asdict, dataclass, replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from onnx import TensorProto  # noqa: E402
from onnxruntime.quantization.quant_utils import quantize_data  # noqa: E402

from bench.common import (  # noqa: E402
    Column,
    laplacian,
    peak_bytes,
    print_table,
    timed,
    write_results,
)
from quantcore.compress.layerwise import quantize_tensors  # noqa: E402
from quantcore.compress.results import TensorRequest  # noqa: E402
from quantcore.spec import Granularity, Method, QuantizerSpec, Support  # noqa: E402


@dataclass(frozen=True, kw_only=True)
class Row:
    case: str
    seconds: float
    cpu_seconds: float
    mweights_per_s: float
    ratio_vs_ours: float
    peak_memory_x: float
    note: str


COLUMNS = (
    Column(header="case", field="case", width=38, left=True),
    Column(header="wall s", field="seconds", width=7, spec=".3f"),
    Column(header="cpu s", field="cpu_seconds", width=7, spec=".3f"),
    Column(header="Mw/s", field="mweights_per_s", width=8, spec=".1f"),
    Column(header="base/ours", field="ratio_vs_ours", width=9, spec=".2f"),
    Column(header="peak mem x", field="peak_memory_x", width=10, spec=".2f"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", choices=[m.value for m in Method], default="uniform",
                        help="family measured as 'ours' (the target is set for uniform)")
    args = parser.parse_args()

    w = laplacian(args.n, std=0.05)
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
    measured = {}
    for name, fn, _ in cases:
        # Only the times are kept: a case's result is dropped before the next case runs.
        measured[name] = replace(timed(fn, args.repeats), result=None)
    memory = {name: peak_bytes(fn) for name, fn, _ in cases}
    ours_s = measured[cases[0][0]].seconds
    rows = [
        Row(case=name, seconds=measured[name].seconds, cpu_seconds=measured[name].cpu_seconds,
            mweights_per_s=args.n / measured[name].seconds / 1e6,
            ratio_vs_ours=measured[name].seconds / ours_s, peak_memory_x=memory[name] / w.nbytes,
            note=note)
        for name, _, note in cases
    ]
    rep = result.report
    theory = "n/a" if rep.sqnr_theory_db is None else f"{rep.sqnr_theory_db:.3f}"
    outputs = (result.quantized.codes.nbytes + result.quantized.dequantized.nbytes) / w.nbytes
    print(f"{args.n:,} float32 Laplacian weights, {spec.bits}-bit {method.value} "
          f"({spec.rounding.value if method is Method.UNIFORM else 'codebook'}), "
          f"{rep.support} support, one thread")
    print_table(rows, COLUMNS)
    print(f"ours: outputs {outputs:.2f}x of the tensor, temporaries "
          f"{rows[0].peak_memory_x - outputs:.2f}x; SQNR {rep.sqnr_db:.3f} dB "
          f"(theory {theory}), within support {rep.within_support_pct:.3f}%, "
          f"{rep.levels_used} levels, entropy {rep.entropy_bits:.3f} bits")
    name = "bench_quantize" if method is Method.UNIFORM else f"bench_quantize_{method}"
    write_results(name, {
        "n": args.n, "bits": spec.bits, "method": method.value, "threads": 1,
        "rows": [asdict(r) for r in rows],
        "outputs_x": outputs, "temporaries_x": rows[0].peak_memory_x - outputs,
        "report": rep.to_dict(),
    })


if __name__ == "__main__":
    main()
