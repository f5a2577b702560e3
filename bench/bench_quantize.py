"""Quantization of one large tensor with all its statistics, per granularity and family, against
the NumPy reference path, plain NumPy, onnxruntime and the machine's memory bandwidth.

Ours: ``quantize_tensors`` on one float32 Laplacian tensor (rows of 4096 weights), which
computes mean/std (layer, channel), the codes, the dequantized weights (exactly as the ONNX
graph decodes them), SQNR, the share within the support, the levels used and the code
entropy; per group also each block's clip, float16 scale and zero point with block sums kept
(groups of 32 at 4 bits, 128 at 8 bits: the ``auto`` default's sizes). Cases: uniform at 4 and
8 bits per layer (Jayant support), channel (Jayant) and group (whole range), the channels and
groups both along the rows (contiguous) and across them (``across rows``: channels and blocks
down the columns, a MatMul weight's layout, whose output channels are its second axis and
whose blocks run along its input axis K, the first), and mu-law, exponential (log) and E4M3
minifloat per layer, per channel along and across the rows, and in groups of 32 (whole range).

Baselines, same run, same tensor:

- ``reference``: the same call with the compiled kernels switched off (the NumPy path the
  kernels replace and are tested bit for bit against), timed on ``--ref-n`` weights;
- ``numpy``: ``np.clip(np.round(w / s), lo, hi) * s`` with a precomputed scale, no statistics;
- ``onnxruntime``: ``quantize_data(w, INT8, symmetric=True)`` (codes only, no statistics);
- ``bandwidth``: read the float32 tensor and write int8 (a trivial compiled loop, and
  ``np.copyto``): the bound for any one-pass quantizer on this machine.

The process sets the C allocator as the CLI and the worker do (``quantcore.allocator``): a
call's fresh arrays (codes and dequantized weights, 5 bytes a weight) then reuse the pages
the previous call freed instead of being faulted in page by page.

Throughput is weights per second of wall time and per CPU second (``Mw/cpu-s``: the per-core
figure; the group path runs its slabs on 2 threads, the others on one). On a machine shared
with other work the wall figures move; the ratios of one run are what to compare. The first
call of each compiled kernel in a fresh cache is timed separately (``compile s``).

Run: ``python -m bench.bench_quantize [--n 50000000] [--ref-n 4000000] [--repeats 2]``.
Writes ``bench/results/bench_quantize.json``.
"""

from __future__ import annotations

import os

# One BLAS thread: np.dot must not spread over the machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402
from onnx import TensorProto  # noqa: E402
from onnxruntime.quantization.quant_utils import quantize_data  # noqa: E402

from bench.common import Column, laplacian, print_table, timed, write_results  # noqa: E402
from quantcore.allocator import keep_freed_memory  # noqa: E402
from quantcore.compress import groups, normalize  # noqa: E402
from quantcore.compress.layerwise import quantize_tensors  # noqa: E402
from quantcore.compress.results import TensorRequest  # noqa: E402
from quantcore.quantizers import stream  # noqa: E402
from quantcore.spec import Granularity, Method, QuantizerSpec, Support  # noqa: E402

ROW = 4096


@dataclass(frozen=True, kw_only=True)
class Row:
    case: str
    seconds: float
    cpu_seconds: float
    mweights_per_s: float
    mweights_per_cpu_s: float
    speedup_vs_reference: str  # reference CPU time over ours, per weight ("-": none)
    sqnr_db: float | None
    note: str


COLUMNS = (
    Column(header="case", field="case", width=34, left=True),
    Column(header="wall s", field="seconds", width=7, spec=".3f"),
    Column(header="cpu s", field="cpu_seconds", width=7, spec=".3f"),
    Column(header="Mw/s", field="mweights_per_s", width=7, spec=".1f"),
    Column(header="Mw/cpu-s", field="mweights_per_cpu_s", width=8, spec=".1f"),
    Column(header="x ref", field="speedup_vs_reference", width=6),
    Column(header="note", field="note", width=0, left=True),
)


@njit(nogil=True, cache=True)
def _read_f32_write_i8(src, dst):
    for i in range(src.size):
        dst[i] = np.int8(src[i])


def _request(w: np.ndarray, spec: QuantizerSpec, block_axis: int) -> TensorRequest:
    return TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=1 - block_axis,
                         block_axis=block_axis)  # fmt: skip


def _ours(
    w: np.ndarray, spec: QuantizerSpec, gran: Granularity, size: int, block_axis: int = 1
) -> Callable[[], Any]:
    req = _request(w, spec, block_axis)
    return lambda: quantize_tensors([req], gran, group_size=size, zero_point=True)


def _reference(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        stream.USE_KERNELS = groups.USE_KERNELS = normalize.USE_KERNELS = False
        try:
            return fn()
        finally:
            stream.USE_KERNELS = groups.USE_KERNELS = normalize.USE_KERNELS = True
    return run


def _cases() -> list[tuple[str, QuantizerSpec, Granularity, int, int]]:
    """(name, spec, granularity, group size, block axis)."""
    cases = []
    for bits, size in ((4, 32), (8, 128)):
        jayant = QuantizerSpec(bits=bits, support=Support.JAYANT)
        whole = QuantizerSpec(bits=bits, support=Support.MAX_ABS)
        cases += [(f"uniform {bits}b layer", jayant, Granularity.LAYER, size, 1),
                  (f"uniform {bits}b channel", jayant, Granularity.CHANNEL, size, 1),
                  (f"uniform {bits}b channel across rows", jayant, Granularity.CHANNEL, size,
                   0),
                  (f"uniform {bits}b group {size}", whole, Granularity.GROUP, size, 1),
                  (f"uniform {bits}b group {size} across rows", whole, Granularity.GROUP,
                   size, 0)]  # fmt: skip
    for name, spec in (("mu-law 8b", QuantizerSpec(method=Method.MULAW, bits=8)),
                       ("log 4b", QuantizerSpec(method=Method.LOG, bits=4)),
                       ("E4M3 minifloat", QuantizerSpec(method=Method.FLOAT))):  # fmt: skip
        cases += [(f"{name} layer", spec, Granularity.LAYER, 32, 1),
                  (f"{name} channel", spec, Granularity.CHANNEL, 32, 1),
                  (f"{name} channel across rows", spec, Granularity.CHANNEL, 32, 0),
                  (f"{name} group 32", spec, Granularity.GROUP, 32, 1)]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000_000)
    parser.add_argument("--ref-n", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    allocator_set = keep_freed_memory()  # before the group path starts its threads
    n = args.n - args.n % ROW
    w = laplacian(n, std=0.05).reshape(-1, ROW)
    w_ref = w[: max(1, args.ref_n // ROW)]
    rows: list[Row] = []
    compile_s: dict[str, float] = {}

    def add(case: str, fn: Callable[[], Any], count: int, ref_cpu: float | None, note: str,
            sqnr: float | None = None) -> None:
        t = timed(fn, args.repeats)
        cpu = max(t.cpu_seconds, 1e-9)
        rows.append(Row(case=case, seconds=t.seconds, cpu_seconds=t.cpu_seconds,
                        mweights_per_s=count / t.seconds / 1e6,
                        mweights_per_cpu_s=count / cpu / 1e6,
                        speedup_vs_reference="-" if ref_cpu is None else
                        f"{ref_cpu / (cpu / count):.1f}", sqnr_db=sqnr, note=note))  # fmt: skip

    for case, spec, gran, size, axis in _cases():
        ours = _ours(w, spec, gran, size, axis)
        start = time.perf_counter()
        _ours(w[:8], spec, gran, size, axis)()  # the first call compiles or loads the kernels
        compile_s[case] = time.perf_counter() - start
        ref = timed(_reference(_ours(w_ref, spec, gran, size, axis)), args.repeats)
        ref_cpu = ref.cpu_seconds / w_ref.size
        (result,) = ours()
        add(case, ours, w.size, ref_cpu, f"reference {w_ref.size / ref.cpu_seconds / 1e6:.1f} "
            f"Mw/cpu-s (on {w_ref.size / 1e6:.0f}M)", result.report.sqnr_db)  # fmt: skip

    step = float(np.abs(w).max()) / 127
    add("numpy round-and-clip (8b)", lambda: np.clip(np.round(w / step), -128, 127) * step,
        w.size, None, "dequantized only, no statistics")
    add("onnxruntime quantize_data (int8)", lambda: quantize_data(w, TensorProto.INT8, True),
        w.size, None, "codes only, no statistics")
    out = np.empty(w.size, np.int8)
    flat = w.reshape(-1)
    _read_f32_write_i8(flat[:8], out[:8])
    add("bandwidth: f32 read, i8 write", lambda: _read_f32_write_i8(flat, out), w.size, None,
        "compiled loop")
    add("bandwidth: np.copyto f32 -> i8", lambda: np.copyto(out, flat, casting="unsafe"),
        w.size, None, "NumPy cast")

    print(f"{w.size:,} float32 Laplacian weights ({w.shape[0]} rows of {ROW}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; allocator as the service sets "
          f"it: {allocator_set}")
    print_table(rows, COLUMNS)
    print("first call (compile, or load from the on-disk cache): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in compile_s.items()))
    write_results("bench_quantize", {
        "n": w.size, "ref_n": w_ref.size, "load_average": os.getloadavg()[0],
        "service_allocator": allocator_set,
        "rows": [asdict(r) for r in rows], "first_call_seconds": compile_s,
    })


if __name__ == "__main__":
    main()
