"""Whole ``quantserve quantize`` processes against the peers' whole processes, on real models.

Each case is one process, timed from its start to its exit (imports, reading, quantizing,
writing, and for ours the fidelity check and the report), with its peak resident memory:

- ``ours8`` / ``ours4``: ``quantserve quantize MODEL --spec '{"bits": B}' --out DIR``, the
  CLI's job (the worker's ``run_job``), default spec;
- on the real models, the jobs that size the package by rate and distortion:
  ``target20`` (``{"target": {"weight_sqnr_db": 20}}``: the allocation across layers, codes
  rounded to nearest) and ``target20_rdoq`` (the same with ``"rdoq": "auto"``: dead-zone and
  trellis searches, the smaller package kept); ``target20`` is the latter's baseline, so their
  ratio is what the searches cost;
- ``ort_dynamic``: a script that imports ``onnxruntime.quantization`` and calls
  ``quantize_dynamic`` (int8 weights, per tensor): the 8-bit baseline;
- ``ort_nbits4``: ``MatMulNBitsQuantizer`` 4-bit, blocks of 32, symmetric (the model taken at
  opset 21 first, as it needs), and ``nncf_int4``: NNCF ``compress_weights`` INT4_SYM groups
  of 128 — the 4-bit peers, when the ``bench`` extra is installed.

Models: ``captcha-ocr`` (13.5 M, CNN+LSTM) and ``minilm-l3`` (17 M, BERT) from
``bench/realmodels``, and transformer-like models of 54 M and 205 M parameters
(``bench/transformer.py``; 608 M with ``--large``). Cases run interleaved (every case once,
then again), so a load that comes and goes touches all of them; the table gives medians.
Targets: ours8 ≤ 0.5× ``ort_dynamic``; ours4 ≤ the fastest 4-bit peer. The target jobs report
their package's bytes beside their times.

Also measured: the import cost of the CLI's quantize path (``service.cli.main`` and
``quantcore.jobs.quantize``, what ``quantserve quantize`` loads before it reads the model),
a whole process against ``python -c pass`` and ``import numpy, onnx`` (the floor any ONNX
quantizer pays); target ≤ 0.3 s. It must not load onnxruntime (checked).

    python -m bench.bench_cli [--models captcha-ocr,minilm-l3,54m,205m] [--repeat 3]
        [--repeat-large 1] [--large]

Writes ``bench/results/bench_cli.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import write_results

QUANTSERVE = Path(sys.executable).with_name("quantserve")
REAL = ("captcha-ocr", "minilm-l3")
OUR_SPECS: dict[str, dict[str, Any]] = {
    "ours8": {"bits": 8},
    "ours4": {"bits": 4},
    "target20": {"target": {"weight_sqnr_db": 20}},
    "target20_rdoq": {"target": {"weight_sqnr_db": 20}, "rdoq": "auto"},
}
TARGET_CASES = ("target20", "target20_rdoq")  # on the real models only
LARGE_PARAMS = 100_000_000

PEER_SCRIPTS = {
    "ort_dynamic": """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2] + "/model.onnx", weight_type=QuantType.QInt8)
""",
    "ort_nbits4": """
import sys
from bench.realmodels.methods import ort_matmul_nbits
from pathlib import Path
ort_matmul_nbits(Path(sys.argv[1]), Path(sys.argv[2]), block_size=32, bits=4)
""",
    "nncf_int4": """
import sys
from bench.realmodels.methods import nncf_compress
from pathlib import Path
nncf_compress(Path(sys.argv[1]), Path(sys.argv[2]), bits=4, group_size=128)
""",
}

IMPORT_CASES = {
    "python": "pass",
    "numpy+onnx": "import numpy, onnx",
    "quantize path": (
        "import sys, service.cli.main, service.cli.local, quantcore.jobs.quantize\n"
        "assert 'onnxruntime' not in sys.modules, 'the quantize path loaded onnxruntime'\n"
        "assert 'numba' not in sys.modules, 'the quantize path loaded numba'"
    ),
}


def _peers_available() -> list[str]:
    found = []
    for name, module in (("ort_nbits4", "onnx_ir"), ("nncf_int4", "nncf")):
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
        if probe.returncode == 0:
            found.append(name)
    return found


def command(case: str, model: Path, out: Path) -> list[str]:
    if case in OUR_SPECS:
        spec = json.dumps(OUR_SPECS[case])
        return [str(QUANTSERVE), "quantize", str(model), "--spec", spec, "--out", str(out),
                "--quiet"]  # fmt: skip
    return [sys.executable, "-c", PEER_SCRIPTS[case], str(model), str(out)]


# The processes run as an installed package runs: with its modules' bytecode cached. A shell
# that sets PYTHONDONTWRITEBYTECODE would have every process compile every module again (about
# 0.13 s of ours, more of the peers'); the first, untimed run of each command writes the cache.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_timed(argv: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one process, reaped
    with ``os.wait4``. On a loaded machine the CPU time is the steadier of the two."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {tail}")
    return seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def model_paths(names: list[str], work: Path) -> dict[str, Path]:
    """The models' files, fetched or generated in child processes: this process stays
    small, since a child's peak RSS as the kernel reports it is never below its parent's
    size at the fork."""
    paths: dict[str, Path] = {}
    for name in names:
        if name in REAL:
            code = "import sys; from bench.realmodels.fetch import fetch; print(fetch(sys.argv[1]))"
        else:
            code = ("import sys; from pathlib import Path; from bench import transformer; "
                    "print(transformer.write(sys.argv[1], Path(sys.argv[2])))")
        done = subprocess.run([sys.executable, "-c", code, name, str(work)], check=True,
                              capture_output=True, text=True)  # fmt: skip
        paths[name] = Path(done.stdout.strip().splitlines()[-1])
    return paths


def params_of(path: Path) -> int:
    code = "import sys; from quantcore import inspect_model; " \
           "print(inspect_model(__import__('pathlib').Path(sys.argv[1])).n_params)"
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout.strip().splitlines()[-1])


def bench_model(name: str, path: Path, cases: list[str], repeat: int, work: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {c: [] for c in cases}
    peaks: dict[str, list[int]] = {c: [] for c in cases}
    cpus: dict[str, list[float]] = {c: [] for c in cases}
    timings: dict[str, list[dict[str, float]]] = {c: [] for c in cases if c in OUR_SPECS}
    fidelity: dict[str, Any] = {}
    package: dict[str, int] = {}
    for warm_up in (True, *([False] * repeat)):
        for case in cases:
            out = work / "out" / case
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            seconds, peak, cpu = run_timed(command(case, path, out))
            if warm_up:
                continue
            times[case].append(seconds)
            cpus[case].append(cpu)
            peaks[case].append(peak)
            if case in timings:
                report = json.loads((out / "report.json").read_text())
                timings[case].append(report["timings"])
                fid = report["fidelity"]
                fidelity[case] = {k: fid.get(k) for k in ("inputs", "output_sqnr_db",
                                                           "seconds", "reason")}  # fmt: skip
                package[case] = (out / "model.qpack").stat().st_size
    row: dict[str, Any] = {"model": name, "params": params_of(path),
                           "size_bytes": path.stat().st_size, "cases": {}}  # fmt: skip
    for case in cases:
        row["cases"][case] = {
            "median_s": statistics.median(times[case]), "runs_s": times[case],
            "cpu_s": statistics.median(cpus[case]),
            "peak_mib": statistics.median(peaks[case]) / 1024,
        }  # fmt: skip
        if case in timings:
            steps = {k: statistics.median(t[k] for t in timings[case])
                     for k in timings[case][0]}  # fmt: skip
            steps["outside_job_s"] = row["cases"][case]["median_s"] - steps["total_s"]
            row["cases"][case]["timings"] = steps
            row["cases"][case]["fidelity"] = fidelity[case]
            row["cases"][case]["qpack_bytes"] = package[case]
    base = row["cases"].get("ort_dynamic", {}).get("median_s")
    peers4 = [row["cases"][c]["median_s"] for c in ("ort_nbits4", "nncf_int4") if c in row["cases"]]
    if base and "ours8" in row["cases"]:
        row["ours8_vs_ort_dynamic"] = row["cases"]["ours8"]["median_s"] / base
    if peers4 and "ours4" in row["cases"]:
        row["ours4_vs_fastest_peer4"] = row["cases"]["ours4"]["median_s"] / min(peers4)
    if all(c in row["cases"] for c in TARGET_CASES):
        plain, searched = (row["cases"][c] for c in TARGET_CASES)
        row["target20_rdoq_vs_target20"] = searched["median_s"] / plain["median_s"]
        row["target20_rdoq_bytes_vs_target20"] = searched["qpack_bytes"] / plain["qpack_bytes"]
    return row


def bench_imports(repeat: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in IMPORT_CASES}
    cpus: dict[str, list[float]] = {k: [] for k in IMPORT_CASES}
    for warm_up in (True, *([False] * repeat)):
        for name, code in IMPORT_CASES.items():
            seconds, _, used = run_timed([sys.executable, "-c", code])
            if warm_up:
                continue
            times[name].append(seconds)
            cpus[name].append(used)
    medians = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    return {"median_s": medians, "cpu_s": cpu, "runs_s": times,
            "quantize_path_minus_python_s": medians["quantize path"] - medians["python"],
            "quantize_path_minus_python_cpu_s": cpu["quantize path"] - cpu["python"]}


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':<12} {'params':>7} {'case':<12} {'median s':>9} {'CPU s':>7} {'peak MiB':>9}  "
          "steps (ours: load/quantize/fidelity/write/report/outside)")  # fmt: skip
    for row in rows:
        for case, c in row["cases"].items():
            steps = ""
            if "timings" in c:
                t = c["timings"]
                steps = " / ".join(f"{t.get(k, 0.0):.2f}" for k in (
                    "load_s", "quantize_s", "fidelity_s", "write_s", "report_s",
                    "outside_job_s"))  # fmt: skip
                if "qpack_bytes" in c and case in TARGET_CASES:
                    steps += f"  qpack {c['qpack_bytes']:,} B"
            print(f"{row['model']:<12} {row['params'] / 1e6:6.1f}M {case:<12} "
                  f"{c['median_s']:9.2f} {c['cpu_s']:7.2f} {c['peak_mib']:9.0f}  {steps}")
        for key in ("ours8_vs_ort_dynamic", "ours4_vs_fastest_peer4",
                    "target20_rdoq_vs_target20", "target20_rdoq_bytes_vs_target20"):
            if key in row:
                print(f"{'':<12} {key}: {row[key]:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="captcha-ocr,minilm-l3,54m,205m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-large", type=int, default=1,
                        help="repeats for models over 100 M parameters")
    parser.add_argument("--large", action="store_true", help="also the 608M-parameter model")
    parser.add_argument("--cases", help="comma-separated subset of the cases")
    parser.add_argument("--work", help="folder for the generated models (kept between runs)")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] + (["608m"] if args.large else [])
    cases = ["ours8", "ort_dynamic", "ours4", *_peers_available(), *TARGET_CASES]
    if args.cases:
        cases = [c for c in cases if c in args.cases.split(",")]
    work = Path(args.work or Path(tempfile.gettempdir()) / "quantserve-bench-cli")
    imports = bench_imports(max(args.repeat, 5))
    print("import cost (median of whole processes, wall / CPU s): " + ", ".join(
        f"{k} {v:.3f} / {imports['cpu_s'][k]:.3f}"
        for k, v in imports["median_s"].items()))  # fmt: skip
    rows = []
    for name, path in model_paths(names, work).items():
        repeat = args.repeat_large if params_of(path) > LARGE_PARAMS else args.repeat
        chosen = [c for c in cases if name in REAL or c not in TARGET_CASES]
        rows.append(bench_model(name, path, chosen, repeat, work))
        print_rows(rows[-1:])
    print_rows(rows)
    write_results("bench_cli", {"imports": imports, "models": rows, "repeat": args.repeat,
                                "load_average": os.getloadavg()})  # fmt: skip


if __name__ == "__main__":
    main()
