"""Every quantizer family at every granularity on the real models, judged by their outputs.

Each catalog model (``bench/realmodels``) goes through method x granularity x bits as
in-process jobs (``run_job``, the worker's call): ``uniform``, ``deadzone``, ``mulaw`` and
``log`` at 4 and 8 bits, ``float`` (E4M3) at 8; ``layer``, ``channel`` and ``auto`` (the
default: blocks), each with its default support. Per job: the output SQNR against the float
model on the catalog's first input set (``bench.realmodels.fidelity``), the mean of the
layers' weight SQNR, and the CPU seconds. The baseline, in the same run, is ``uniform`` at
the same model, bits and granularity: ``vs uniform`` is the output SQNR's difference in dB.

A family whose output falls far below the others' at one granularity only has a design fitted
to other weights than the ones it quantizes (the log family in blocks, until 2026-12-07 (j):
0-16 dB at 8 bits where it now keeps 11-34). Writes ``bench/results/bench_families.json``.

    python -m bench.bench_families [--models a,b] [--bits 4,8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import Column, print_table, write_results
from bench.realmodels import fidelity
from bench.realmodels.catalog import CATALOG, ModelEntry, get
from bench.realmodels.fetch import fetch
from quantcore.jobs.base import JobInput, JobKind
from quantcore.jobs.run import run_job
from quantcore.limits import JobLimits

METHODS = ("uniform", "deadzone", "mulaw", "log", "float")  # uniform first: the baseline
GRANULARITIES = ("layer", "channel", "auto")


@dataclass(frozen=True, kw_only=True)
class FamilyRow:
    model: str
    bits: int
    method: str
    granularity: str
    output_sqnr_db: float
    weight_sqnr_db: float  # mean over the quantized layers
    vs_uniform_db: float  # output SQNR minus uniform's at the same bits and granularity
    cpu_s: float


def _specs(bits: int) -> Iterator[dict[str, Any]]:
    for method in METHODS:
        if method == "float" and bits != 8:  # E4M3: the minifloat's default format
            continue
        for granularity in GRANULARITIES:
            spec: dict[str, Any] = {"method": method, "granularity": granularity}
            if method != "float":
                spec["bits"] = bits
            yield spec


def _measure(entry: ModelEntry, bits: int, work: Path) -> list[FamilyRow]:
    source = fetch(entry.name)
    feeds = entry.feeds(0)
    reference = fidelity.run(fidelity.session(source), entry, feeds)
    rows: list[FamilyRow] = []
    uniform: dict[str, float] = {}
    for spec in _specs(bits):
        out = work / entry.name / f"{spec['method']}-{bits}-{spec['granularity']}"
        out.mkdir(parents=True)
        start = time.process_time()
        run_job(JobInput(kind=JobKind.QUANTIZE, model_path=source, spec=spec), out,
                limits=JobLimits())  # fmt: skip
        cpu_s = time.process_time() - start
        scored = fidelity.compare(entry, reference, out / "model.onnx", feeds)
        layers = json.loads((out / "report.json").read_text())["layers"]
        weight_db = sum(layer["sqnr_db"] for layer in layers) / max(len(layers), 1)
        if spec["method"] == "uniform":
            uniform[spec["granularity"]] = scored.sqnr_db
        rows.append(FamilyRow(
            model=entry.name, bits=bits, method=spec["method"], granularity=spec["granularity"],
            output_sqnr_db=scored.sqnr_db, weight_sqnr_db=weight_db,
            vs_uniform_db=scored.sqnr_db - uniform[spec["granularity"]], cpu_s=cpu_s,
        ))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated catalog names (default: all)")
    parser.add_argument("--bits", default="4,8", help="comma-separated bit widths")
    args = parser.parse_args(argv)
    entries = [get(n) for n in args.models.split(",")] if args.models else list(CATALOG)
    rows: list[FamilyRow] = []
    with tempfile.TemporaryDirectory(prefix="families-") as tmp:
        for entry in entries:
            for bits in (int(b) for b in args.bits.split(",")):
                rows += _measure(entry, bits, Path(tmp))
    print_table(rows, [
        Column(header="model", field="model", width=12, left=True),
        Column(header="bits", field="bits", width=4),
        Column(header="method", field="method", width=8, left=True),
        Column(header="granularity", field="granularity", width=11, left=True),
        Column(header="output dB", field="output_sqnr_db", width=9, spec=".2f"),
        Column(header="weights dB", field="weight_sqnr_db", width=10, spec=".2f"),
        Column(header="vs uniform", field="vs_uniform_db", width=10, spec=".2f"),
        Column(header="cpu s", field="cpu_s", width=6, spec=".1f"),
    ])  # fmt: skip
    write_results("bench_families", {"rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
