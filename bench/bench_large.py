"""Models larger than memory: wall time and peak RSS of quantizing an external-data ONNX model.

``python -m bench.bench_large`` builds a 2.4 GB float32 model (MLP blocks, ``bench.large_model``)
in a temporary folder and quantizes it with the default spec:

- ``quantserve quantize`` (the CLI, one process);
- the same weights and biases as a ``.safetensors`` file and as an ``.npz`` (members stored,
  as ``np.savez`` writes them), each written from the mapped external data, through the CLI
  and, with the ``inmemory`` peer, the in-memory writers, whose files are compared with the
  CLI's;
- a sweep job (``run_job``, the default spec at 8 and 4 bits), each point written as the CLI
  writes its job;
- a worker job: ``workers.tasks.execute_job`` in its own process, the model uploaded first
  through the API's streaming upload path into local storage (``--no-worker`` skips it);
- the baselines on the same file: the pipeline's in-memory writers (``quantize_model``,
  ``build_onnx``, ``write_artifacts``: the whole quantized model held until written, as jobs
  did before streaming), NNCF ``compress_weights`` (its ONNX backend, INT8_ASYM per channel,
  external data read from the folder) and onnxruntime ``quantize_dynamic`` (QInt8,
  ``use_external_data_format``); ``--no-peers`` skips them (NNCF and onnxruntime need
  ``-e '.[bench]'``), ``--peers inmemory`` runs only the in-memory writers, whose model files
  are compared with the CLI's.

Each runs in a child process; its peak RSS is that whole process's, as GNU ``time`` reports
it (``run_child`` says why not ``os.wait4``'s). Our output is then run in onnxruntime (a
child too, its RSS measured) and compared with the float model's output computed in NumPy,
one weight at a time.

``--full`` also runs a 30 GB model (CLI and worker job; minutes and ~60 GB of disk).
``--size-gb`` sets the first size. The folder is removed at the end (``--keep`` keeps it).
Results: ``bench/results/bench_large.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import large_model
from bench.common import Column, print_table, write_results

GB = 1e9
# The target: peak RSS at most this plus four of the largest tensor.
BASE_BUDGET = 1.5 * GB


@dataclass(frozen=True, kw_only=True)
class Row:
    model_gb: float
    method: str
    wall_s: float
    peak_rss_mb: float
    budget_mb: float
    output_mb: float
    note: str = ""


TIME = Path("/usr/bin/time")


def run_child(args: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (bytes) and stderr's tail of a child process.

    The peak is GNU time's ``%M`` where it is installed: a process's ``ru_maxrss`` on Linux
    starts from its parent's peak when it forks and keeps it across exec, so a child started
    straight from this (possibly large) process could report this process's peak; ``time``
    is small when it forks the command. Without it, ``os.wait4``'s figure (an upper bound)."""
    marker = "@@peak_kb="
    wrapped = [str(TIME), "-f", f"{marker}%M", *args] if TIME.exists() else args
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {})})  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read().decode(errors="replace")
    peak = usage.ru_maxrss * 1024.0
    lines = [line for line in text.splitlines() if line.startswith(marker)]
    if lines:
        peak = float(lines[-1].removeprefix(marker)) * 1024.0
        text = "\n".join(line for line in text.splitlines() if not line.startswith(marker))
    tail = text[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} exited {proc.returncode}: {tail}")
    return wall, peak, tail


def _size(folder: Path) -> float:
    """MB of the model files in ``folder`` (a worker's: its stored artifacts)."""
    files = [p for p in folder.rglob("model.*") if p.is_file() and "jobs" in p.parts] or [
        p for p in folder.iterdir() if p.is_file()
    ]
    return sum(p.stat().st_size for p in files) / 1e6


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_peer(kind: str, model: Path, out: Path) -> None:
    """One peer quantizer (in the child process ``main --peer`` starts)."""
    out.mkdir(parents=True, exist_ok=True)
    if kind == "nncf":
        import logging

        import nncf
        import onnx
        from nncf.onnx.quantization.backend_parameters import BackendParameters
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

        logging.getLogger("nncf").setLevel(logging.ERROR)
        proto = onnx.load(str(model), load_external_data=False)
        params = AdvancedCompressionParameters(
            backend_params={BackendParameters.EXTERNAL_DATA_DIR: str(model.parent.resolve())}
        )
        compressed = nncf.compress_weights(
            proto, mode=nncf.CompressWeightsMode.INT8_ASYM, advanced_parameters=params
        )
        onnx.save(compressed, str(out / "model.onnx"), save_as_external_data=True,
                  location="model.onnx.data")  # fmt: skip
    elif kind == "sweep":  # ours: a sweep job, each point written as a quantize job streams
        from quantcore import JobInput, JobKind, run_job

        run_job(JobInput(kind=JobKind.SWEEP, model_path=model, spec=SWEEP_SPEC), out)
    elif kind == "inmemory":  # the pipeline's in-memory writers, as jobs used them before
        from quantcore.compress.artifacts import write_artifacts
        from quantcore.compress.pipeline import (
            build_onnx,
            load_model,
            quantize_model,
        )
        from quantcore.spec import QuantSpec

        source = load_model(model)
        qmodel = quantize_model(source, QuantSpec.from_dict({}))
        written = build_onnx(qmodel)
        source.close()
        write_artifacts(qmodel, out, written)
    elif kind == "ort":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(model, out / "model.onnx", weight_type=QuantType.QInt8,
                         use_external_data_format=True)  # fmt: skip
    else:
        raise ValueError(kind)


def run_onnx(model: Path, inputs: Path, output: Path) -> None:
    """Run ``model`` on ``inputs`` (``x`` in an .npy) without graph optimizations (the decode
    subgraphs run per call rather than being folded into float weights) and save ``y``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    np.save(output, session.run(["y"], {"x": np.load(inputs)})[0])


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    if not (np.isfinite(reference).all() and np.isfinite(test).all()):
        return float("nan")  # an output that overflowed compares nothing
    noise = float(np.sum((reference - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


PEERS = ("inmemory", "nncf", "ort")
SWEEP_SPEC = {"base": {}, "grid": {"bits": [8, 4]}}  # the default spec at two widths


def _digests(out: Path) -> dict[str, str]:
    """SHA-256 of each model file in ``out`` (to compare two runs' artifacts)."""
    digests = {}
    for path in sorted(out.glob("model.*")):
        with path.open("rb") as handle:
            digests[path.name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


def weights_copy(model: Path, out: Path) -> Path:
    """The ONNX model's weights and biases in a ``.safetensors`` or ``.npz`` file (by
    ``out``'s suffix; the archive's members stored, as ``np.savez`` writes them), written one
    tensor at a time from its mapped external data."""
    from quantcore.formats.load import load_model
    from quantcore.formats.weights_io import write_npz, write_safetensors_streamed

    source = load_model(model)
    try:
        if out.suffix == ".npz":
            write_npz(out, ((t.name, source.array(t.name)) for t in source.tensors))
        else:
            layout = [(t.name, np.dtype(t.dtype), t.shape) for t in source.tensors]
            write_safetensors_streamed(out, layout,
                                       (source.array(t.name) for t in source.tensors))  # fmt: skip
    finally:
        source.close()
    return out


def _weights_rows(
    folder: Path, model: Path, model_gb: float, budget: float, suffix: str, *, inmemory: bool
) -> list[Row]:
    """The same weights as a ``.safetensors`` or ``.npz`` file: the CLI (streaming) and,
    with ``inmemory``, the in-memory writers, whose files are compared with the CLI's."""
    weights = weights_copy(model, folder / f"weights{suffix}")
    rows = []
    digests = {}
    runs = [("cli", f"quantserve quantize (CLI), {suffix}",
             ["-m", "service.cli", "quantize", str(weights), "--out", "{out}", "--quiet"])]
    if inmemory:
        runs.append(("inmemory", f"in-memory writers, {suffix}",
                     ["-m", "bench.bench_large", "--peer", "inmemory", str(weights), "{out}"]))
    for kind, method, args in runs:  # fmt: skip
        out = folder / f"weights-{kind}"
        wall, rss, _ = run_child(_py(*(a.format(out=out) for a in args)))
        digests[kind] = _digests(out)
        note = "+".join(sorted(digests[kind]))
        if kind == "inmemory":
            same = digests["inmemory"] == digests["cli"]
            note += f"; {'the same bytes as' if same else 'differ from'} the CLI's"
        rows.append(Row(model_gb=round(model_gb, 2), method=method, wall_s=round(wall, 1),
                        peak_rss_mb=round(rss / 1e6), budget_mb=round(budget),
                        output_mb=round(_size(out)), note=note))  # fmt: skip
        print(f"  {method}: {wall:.1f} s, peak RSS {rss / 1e6:.0f} MB", flush=True)
    for kind, _, _ in runs:
        shutil.rmtree(folder / f"weights-{kind}")
    weights.unlink()
    return rows


def bench_size(
    folder: Path, total_gb: float, *, peers: tuple[str, ...], worker: bool
) -> list[Row]:
    blocks = large_model.blocks_for(int(total_gb * GB))
    src = folder / "src"
    start = time.perf_counter()
    model = large_model.build(src, blocks)
    built_s = time.perf_counter() - start
    model_gb = _size(src) / 1e3
    largest = max(np.prod(s) for s in large_model.block_shapes(large_model.HIDDEN)) * 4
    budget = (BASE_BUDGET + 4 * largest) / 1e6
    print(f"built {model_gb:.2f} GB ({blocks} blocks, largest tensor {largest / 1e6:.0f} MB) "
          f"in {built_s:.0f} s")  # fmt: skip
    rows: list[Row] = []

    def record(method: str, wall: float, rss: float, out: Path, note: str = "") -> None:
        rows.append(Row(model_gb=round(model_gb, 2), method=method, wall_s=round(wall, 1),
                        peak_rss_mb=round(rss / 1e6), budget_mb=round(budget),
                        output_mb=round(_size(out)), note=note))  # fmt: skip
        print(f"  {method}: {wall:.1f} s, peak RSS {rss / 1e6:.0f} MB", flush=True)

    out = folder / "cli"
    wall, rss, _ = run_child(_py("-m", "service.cli", "quantize", str(model), "--out", str(out),
                                 "--quiet"))  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    note = "fidelity skipped" if report["fidelity"].get("skipped") else ""
    record("quantserve quantize (CLI)", wall, rss, out, note)
    x = np.random.default_rng(1).standard_normal((4, large_model.HIDDEN)).astype(np.float32)
    np.save(folder / "x.npy", x)
    wall, rss, _ = run_child(_py("-m", "bench.bench_large", "--run-onnx", str(out / "model.onnx"),
                                 str(folder / "x.npy"), str(folder / "y.npy")))  # fmt: skip
    reference = large_model.float_output(src, x, blocks)
    sqnr = sqnr_db(reference, np.load(folder / "y.npy"))
    files = "+".join(sorted(p.name for p in out.glob("model.onnx*")))
    cli_digests = _digests(out)
    rows.append(Row(model_gb=round(model_gb, 2), method="onnxruntime runs our model.onnx",
                    wall_s=round(wall, 1), peak_rss_mb=round(rss / 1e6), budget_mb=0,
                    output_mb=0, note=f"{files}; output SQNR {sqnr:.1f} dB vs float"))  # fmt: skip
    print(f"  onnxruntime on {files}: {wall:.1f} s, peak RSS {rss / 1e6:.0f} MB, "
          f"output SQNR {sqnr:.1f} dB")  # fmt: skip
    shutil.rmtree(out)
    out = folder / "sweep"
    wall, rss, _ = run_child(_py("-m", "bench.bench_large", "--peer", "sweep", str(model),
                                 str(out)))  # fmt: skip
    points = json.loads((out / "report.json").read_text())["rows"]
    sizes = ", ".join(f"{p['package_bytes'] / 1e6:.0f}" for p in points)
    record("sweep job (run_job), 8 and 4 bits", wall, rss, out,
           f"{len(points)} points, packages {sizes} MB")  # fmt: skip
    shutil.rmtree(out)
    for suffix in (".safetensors", ".npz"):
        rows += _weights_rows(folder, model, model_gb, budget, suffix,
                              inmemory="inmemory" in peers)  # fmt: skip
    if worker:
        from bench.large_worker import run_worker_job

        out = folder / "worker"
        wall, rss, note = run_worker_job(model, out)
        record("worker job (execute_job)", wall, rss, out, note)
        shutil.rmtree(out, ignore_errors=True)
    for kind, name in (("inmemory", "in-memory writers (before streaming)"),
                       ("nncf", "NNCF compress_weights INT8_ASYM"),
                       ("ort", "onnxruntime quantize_dynamic QInt8")):  # fmt: skip
        if kind in peers:
            out = folder / kind
            try:
                wall, rss, _ = run_child(_py("-m", "bench.bench_large", "--peer", kind,
                                             str(model), str(out)))  # fmt: skip
            except RuntimeError as exc:
                print(f"  {name}: failed: {str(exc)[-300:]}")
                continue
            note = ""
            if kind == "inmemory":
                same = _digests(out) == cli_digests
                note = f"model files {'the same as' if same else 'differ from'} the CLI's"
            record(name, wall, rss, out, note)
            shutil.rmtree(out)
    shutil.rmtree(src)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.4)
    parser.add_argument("--full", action="store_true", help="also the 30 GB model")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"the baselines to run, of {','.join(PEERS)}")  # fmt: skip
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--dir", help="parent folder of the temporary folder")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--results", default="bench_large", help="bench/results/<name>.json")
    parser.add_argument("--peer", nargs=3, metavar=("KIND", "MODEL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--run-onnx", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        run_peer(args.peer[0], Path(args.peer[1]), Path(args.peer[2]))
        return {}
    if args.run_onnx:
        run_onnx(*(Path(a) for a in args.run_onnx))
        return {}
    folder = Path(tempfile.mkdtemp(prefix="bench-large-", dir=args.dir))
    rows: list[Row] = []
    try:
        peers = () if args.no_peers else tuple(args.peers.split(","))
        unknown = sorted(set(peers) - set(PEERS))
        if unknown:
            parser.error(f"unknown --peers {unknown}; choose from {', '.join(PEERS)}")
        rows += bench_size(folder / "a", args.size_gb, peers=peers, worker=not args.no_worker)
        if args.full:
            rows += bench_size(folder / "b", 30.0, peers=(), worker=not args.no_worker)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print_table(rows, [
        Column(header="GB", field="model_gb", width=6, spec=".2f"),
        Column(header="method", field="method", width=36, left=True),
        Column(header="wall s", field="wall_s", width=8, spec=".1f"),
        Column(header="peak RSS MB", field="peak_rss_mb", width=12, spec=".0f"),
        Column(header="budget MB", field="budget_mb", width=10, spec=".0f"),
        Column(header="out MB", field="output_mb", width=8, spec=".0f"),
        Column(header="note", field="note", width=1, left=True),
    ])  # fmt: skip
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "budget": "peak RSS <= 1.5 GB + 4 x the largest tensor",
        "rows": [asdict(r) for r in rows],
    }
    write_results(args.results, payload)
    return payload


if __name__ == "__main__":
    main()
