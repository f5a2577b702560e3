"""Whole-model benchmark: read, quantize and write both artifacts of a 50 M-parameter ONNX model.

Baseline: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights) on the same model in the
same run. Each case runs in a child process, which reports its wall time (from reading the
model to the last artifact written) and its peak resident memory (``VmHWM``), alongside the
memory after imports, before the model is touched. Targets: time no more than the baseline's;
peak memory at most three times the model's size.

    python -m bench.bench_model [--params 50000000] [--repeat 1]

Prints a table and writes ``bench/results/bench_model.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
BITS = (3, 4, 8)


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(case: str, model: Path, out: Path) -> dict[str, Any]:
    """One case, in this (child) process."""
    import numpy  # noqa: F401  - imports count in the baseline memory, not in the case
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    if case == "ort_dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        base = _vm_kib("VmRSS")
        start = time.perf_counter()
        quantize_dynamic(str(model), str(out / "model.onnx"), weight_type=QuantType.QInt8)
    else:
        from quantcore.compress.artifacts import write_artifacts
        from quantcore.compress.pipeline import (
            build_onnx,
            load_model,
            quantize_model,
        )
        from quantcore.spec import QuantSpec

        bits = int(case.removeprefix("quantserve_"))
        spec = QuantSpec.from_dict({"bits": bits, "granularity": "layer"})
        base = _vm_kib("VmRSS")
        start = time.perf_counter()
        source = load_model(model)
        qmodel = quantize_model(source, spec)
        written = build_onnx(qmodel)
        source.close()  # as a quantize job does before writing
        write_artifacts(qmodel, out, written)
    seconds = time.perf_counter() - start
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    return {"seconds": seconds, "peak_kib": _vm_kib("VmHWM"), "base_kib": base, "sizes": sizes}


def run_case(case: str, model: Path, work: Path) -> dict[str, Any]:
    out = work / case
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_model", "--child", case, str(model), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=50_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("CASE", "MODEL", "OUT"))
    args = parser.parse_args()
    if args.child:
        case, model, out = args.child
        print(json.dumps(child(case, Path(model), Path(out))))
        return

    import numpy as np
    import onnx

    from tests.models import large

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_path = work / "large.onnx"
        proto = large(args.params)
        n_params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
        onnx.save(proto, model_path)
        del proto
        model_bytes = model_path.stat().st_size
        cases = ["ort_dynamic", *(f"quantserve_{b}" for b in BITS)]
        rows = {}
        for case in cases:
            runs = [run_case(case, model_path, work) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            rows[case] = best
    baseline = rows["ort_dynamic"]["seconds"]
    print(f"model: {n_params / 1e6:.1f} M parameters, {model_bytes / 2**20:.0f} MiB")
    print(
        f"{'case':<16}{'time s':>9}{'vs ORT':>8}{'peak MiB':>10}{'x model':>9}"
        f"{'above base x':>14}{'artifacts MiB':>15}"
    )
    for case, row in rows.items():
        peak = row["peak_kib"] * 1024
        above = (row["peak_kib"] - row["base_kib"]) * 1024
        sizes = " + ".join(f"{v / 2**20:.1f}" for v in row["sizes"].values())
        row["ratio_vs_ort"] = row["seconds"] / baseline
        row["peak_x_model"] = peak / model_bytes
        row["peak_above_base_x_model"] = above / model_bytes
        print(
            f"{case:<16}{row['seconds']:>9.2f}{row['ratio_vs_ort']:>8.2f}"
            f"{peak / 2**20:>10.0f}{row['peak_x_model']:>9.2f}"
            f"{row['peak_above_base_x_model']:>14.2f}{sizes:>15}"
        )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": "bench_model",
        "baseline": "onnxruntime.quantization.quantize_dynamic (QInt8)",
        "n_params": n_params,
        "model_bytes": model_bytes,
        "cases": rows,
    }
    (RESULTS / "bench_model.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
