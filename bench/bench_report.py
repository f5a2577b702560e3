"""What ``report.html`` costs in a quantize job, against the rest of the same job.

Models (``tests.models.mlp``, 4-bit uniform per layer): a 3.7M-parameter MLP with three
weight tensors (784-2048-1024-10) and a 6.0M-parameter one with 24 (512 wide), so that the
panel limit (``MAX_LAYER_PANELS`` largest tensors plus the pooled panel) applies.

For each model, ``run_quantize`` runs ``--repeats`` times and the fastest run is kept; its
``timings`` give ``report_s`` (histograms and the page) and the baseline, the job's other
steps (``total_s - report_s``: loading, quantizing, writing the artifacts). The ratio is
report / rest; the page's size is printed beside it.

Run: ``python -m bench.bench_report [--repeats 3]``. Writes ``bench/results/bench_report.json``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from bench.common import Column, print_table, write_results
from quantcore import JobInput, JobKind, JobLimits
from quantcore.jobs.quantize import run_quantize
from quantcore.report.files import HTML_NAME
from quantcore.report.histograms import MAX_LAYER_PANELS
from tests.models import mlp

MODELS: dict[str, tuple[int, ...]] = {
    "mlp 784-2048-1024-10": (784, 2048, 1024, 10),
    "mlp 24 x 512": (512,) * 24 + (10,),
}


@dataclass(frozen=True, kw_only=True)
class Row:
    model: str
    params_m: float
    tensors: int
    panels: int
    total_s: float
    report_s: float
    rest_s: float
    report_vs_rest: float
    page_kib: float


COLUMNS = (
    Column(header="model", field="model", width=22, left=True),
    Column(header="Mparams", field="params_m", width=7, spec=".1f"),
    Column(header="tensors", field="tensors", width=7),
    Column(header="panels", field="panels", width=6),
    Column(header="total s", field="total_s", width=8, spec=".3f"),
    Column(header="report s", field="report_s", width=8, spec=".3f"),
    Column(header="rest s", field="rest_s", width=8, spec=".3f"),
    Column(header="report/rest", field="report_vs_rest", width=11, spec=".2f"),
    Column(header="page KiB", field="page_kib", width=8, spec=".0f"),
)


def measure(name: str, sizes: Sequence[int], repeats: int, folder: Path) -> Row:
    path = folder / "model.onnx"
    onnx.save(mlp(sizes), path)
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    runs = []
    for i in range(max(repeats, 1)):
        out = folder / f"out{i}"
        out.mkdir()
        runs.append(run_quantize(job, out, None, JobLimits()).report["timings"])
    best = min(runs, key=lambda t: t["total_s"])
    tensors = len(sizes) - 1
    rest = best["total_s"] - best["report_s"]
    return Row(
        model=name,
        params_m=sum(a * b for a, b in itertools.pairwise(sizes)) / 1e6,
        tensors=tensors,
        panels=min(tensors, MAX_LAYER_PANELS) + (tensors > 1),
        total_s=best["total_s"],
        report_s=best["report_s"],
        rest_s=rest,
        report_vs_rest=best["report_s"] / rest,
        page_kib=(folder / "out0" / HTML_NAME).stat().st_size / 1024,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for name, sizes in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(name, sizes, args.repeats, Path(tmp)))
    print_table(rows, COLUMNS)
    print("rest = the job's other steps (load, quantize, write); report = histograms + page")
    write_results(
        "bench_report",
        {
            "benchmark": "bench_report",
            "baseline": "the same job's other steps (total_s - report_s)",
            "rows": [asdict(r) for r in rows],
        },
    )


if __name__ == "__main__":
    main()
