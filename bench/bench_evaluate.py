"""Evaluation throughput against a plain onnxruntime inference loop over the same data.

Models: an MNIST-sized MLP (784-1024-1024-10, Gemm + ReLU, ``tests.models.mlp``) and its
quantized ``model.onnx`` from the pipeline (4-bit uniform per layer: integer codes through
``DequantizeLinear``). Data: 20,000 float32 samples with labels in an uncompressed ``.npz``
(63 MB).

- baseline: the set loaded in memory once, then a loop of ``session.run`` of both models on
  each batch of 256 samples, outputs discarded;
- ours: ``quantcore.evaluate.evaluate`` on the same two models and batches: the set streamed
  from the ``.npz``, top-1/top-5, agreement and output SQNR accumulated;
- ``check_dataset`` (one pass over the set before any work) is timed on its own;
- a sweep's evaluations: ``SWEEP_POINTS`` evaluations of the same pair, running the float model
  each time against keeping its outputs in a ``ReferenceCache`` (what sweeps and searches do;
  the float outputs here take 0.8 MB).

Overhead = ours / baseline − 1 (target: under 10%). Each case runs ``--repeats`` times, the
two alternating, and the fastest is kept (the machine is shared). Single-threaded onnxruntime
sessions in both, so that the ratio measures our code rather than thread scheduling.

Run: ``python -m bench.bench_evaluate [--samples 20000] [--repeats 5]``.
Writes ``bench/results/bench_evaluate.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.common import write_results
from quantcore.compress.pipeline import build_onnx, load_model, quantize_model
from quantcore.evaluate import check_dataset, evaluate
from quantcore.evaluate.runner import ReferenceCache
from quantcore.formats.onnx_writer import serialize
from quantcore.spec import QuantSpec
from tests.models import mlp

SIZES = (784, 1024, 1024, 10)
BATCH = 256
SWEEP_POINTS = 5


def _single_thread_session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _quantized(model: onnx.ModelProto, folder: Path) -> bytes:
    path = folder / "float.onnx"
    onnx.save(model, path)
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 4}))
    return serialize(build_onnx(qmodel).proto)


def _baseline(fp: bytes, q: bytes, x: np.ndarray) -> float:
    a, b = _single_thread_session(fp), _single_thread_session(q)
    start = time.perf_counter()
    for i in range(0, len(x), BATCH):
        feeds = {"x": x[i : i + BATCH]}
        a.run(None, feeds)
        b.run(None, feeds)
    return time.perf_counter() - start


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = mlp(SIZES, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        fp, q = model.SerializeToString(), _quantized(model, Path(tmp))
        path = Path(tmp) / "eval.npz"
        np.savez(path, x=x, labels=labels)

        evalset = check_dataset(model, path)

        def ours() -> float:
            start = time.perf_counter()
            evaluate(fp, q, evalset, batch_size=BATCH, threads=1)
            return time.perf_counter() - start

        def check() -> float:
            start = time.perf_counter()
            check_dataset(model, path)
            return time.perf_counter() - start

        def plain() -> float:
            return _baseline(fp, q, np.load(path)["x"])

        def sweep(points: int, cached: bool) -> float:
            cache = ReferenceCache() if cached else None
            start = time.perf_counter()
            for _ in range(points):
                evaluate(fp, q, evalset, batch_size=BATCH, threads=1, reference=cache)
            return time.perf_counter() - start

        check_s = _best(check, args.repeats)
        sweep_plain_s = sweep(SWEEP_POINTS, cached=False)
        sweep_cached_s = sweep(SWEEP_POINTS, cached=True)
        # Alternate the two cases so that load from other processes hits both alike.
        base_times, ours_times = [], []
        for _ in range(args.repeats):
            base_times.append(plain())
            ours_times.append(ours())
        base_s, ours_s = min(base_times), min(ours_times)
    ours_total = ours_s + check_s
    result = {
        "samples": args.samples,
        "model": "mlp " + "-".join(map(str, SIZES)),
        "batch": BATCH,
        "baseline_plain_ort_s": base_s,
        "ours_evaluate_s": ours_s,
        "ours_check_dataset_s": check_s,
        "baseline_samples_per_s": args.samples / base_s,
        "ours_samples_per_s": args.samples / ours_s,
        "overhead_pct": 100.0 * (ours_s / base_s - 1.0),
        "overhead_with_check_pct": 100.0 * (ours_total / base_s - 1.0),
        "sweep_points": SWEEP_POINTS,
        "sweep_without_cache_s": sweep_plain_s,
        "sweep_with_reference_cache_s": sweep_cached_s,
        "sweep_speedup": sweep_plain_s / sweep_cached_s,
    }
    print(f"{'case':<34}{'seconds':>10}{'samples/s':>12}")
    print(f"{'plain onnxruntime loop (baseline)':<34}{base_s:>10.3f}{args.samples / base_s:>12.0f}")
    print(f"{'evaluate (streamed, metrics)':<34}{ours_s:>10.3f}{args.samples / ours_s:>12.0f}")
    print(f"{'check_dataset (one pass)':<34}{check_s:>10.3f}")
    print(
        f"overhead: {result['overhead_pct']:.1f}% (with the check: "
        f"{result['overhead_with_check_pct']:.1f}%), target < 10%"
    )
    print(
        f"{SWEEP_POINTS} evaluations as in a sweep: {sweep_plain_s:.2f} s running the float "
        f"model each time, {sweep_cached_s:.2f} s with the reference cache "
        f"({result['sweep_speedup']:.2f}x)"
    )
    write_results("bench_evaluate", result)


if __name__ == "__main__":
    main()
