"""Calibration options (spec ``calibration``) against plain rounding, on the real models.

For each model of the catalog, each bit width (8, 4, 3 by default) and each option, a
quantize job runs with the default spec plus ``{"bits": B, "calibration": C}``; its written
model is scored against the float model on ``feeds(0)`` (output SQNR pooled over the scored
outputs, argmax agreement; ``fidelity.compare``). Calibration inputs never overlap those:

- ``dataset``: ``feeds(1)`` saved as the job's evaluation set ``.npz`` (one array per model
  input, the steps' batches stacked; inputs whose widths differ between steps are padded to
  the widest by repeating their last column). A stateful model, whose steps carry state,
  has no such set (its row says so);
- ``synthetic``: inputs made up from the graph (``quantcore.evaluate.synthetic``) saved as
  the set, to see whether calibrating on them helps or hurts.

Options: ``none`` (plain rounding), ``bias``, ``gptq`` on the dataset, and ``bias@synthetic``,
``gptq@synthetic``. Each row also has the job's seconds: ``total_s``, ``quantize_s`` (GPTQ's
rounding is there), ``calibration_s`` (capturing the layers' inputs), and ``cpu_s``, the
process's CPU time for the job (all threads; steadier than wall time on a shared machine).

    python -m bench.realmodels.calibration --out calibration.json [--models a,b] [--bits 4]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.realmodels import fidelity
from bench.realmodels.catalog import CATALOG, ModelEntry, get
from quantcore import JobInput, JobKind, JobLimits, run_job
from quantcore.evaluate.synthetic import synthetic_set
from quantcore.spec_names import DATA_FREE_CALIBRATIONS

MODELS = Path.home() / ".cache" / "quantserve" / "models"
DEFAULT_BITS = (8, 4, 3)
OPTIONS = ("none", "bias", "gptq", "bias@synthetic", "gptq@synthetic")
# The fidelity check's per-layer runs are not what is measured here: keep them short.
LIMITS = JobLimits(fidelity_budget_s=5.0)


def model_path(entry: ModelEntry) -> Path:
    found = sorted((MODELS / entry.name).glob("*.onnx"))
    if not found:
        raise FileNotFoundError(f"{entry.name}: no .onnx under {MODELS / entry.name}")
    return found[0]


def _stack(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Blocks of one input stacked on axis 0, each padded (edge values) to the widest."""
    widest = np.max([b.shape for b in blocks], axis=0)
    padded = [
        np.pad(b, [(0, 0)] + [(0, int(w - s)) for s, w in zip(b.shape[1:], widest[1:],
                                                               strict=True)], mode="edge")
        for b in blocks
    ]
    return np.concatenate(padded, axis=0)


def dataset_npz(entry: ModelEntry, path: Path, seed: int = 1) -> str | None:
    """Write ``feeds(seed)`` as an evaluation set; None, or why there is none."""
    if entry.carry:
        return "stateful model: its steps carry state and are not independent samples"
    feeds = entry.feeds(seed)
    arrays = {name: _stack([f[name] for f in feeds]) for name in feeds[0]}
    if any(a.ndim == 0 for a in arrays.values()):
        return "a scalar input has no sample axis"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return None


def synthetic_npz(model: Path, path: Path) -> None:
    found = synthetic_set(onnx.load(str(model), load_external_data=False))
    batches = [feeds for feeds, _ in found.batches(found.batch)]
    np.savez(path, **{name: np.concatenate([b[name] for b in batches])  # type: ignore[arg-type]
                      for name in batches[0]})


def run_option(
    entry: ModelEntry, model: Path, bits: int, option: str, sets: dict[str, Path | str],
    ref: fidelity.Outputs, work: Path, score_seed: int = 0,
) -> dict[str, Any]:
    calibration, _, source = option.partition("@")
    source = source or "dataset"
    row: dict[str, Any] = {"model": entry.name, "bits": bits, "option": option}
    dataset = sets[source] if calibration != "none" else sets.get("dataset")
    if isinstance(dataset, str):
        if calibration != "none" and calibration not in DATA_FREE_CALIBRATIONS:
            return {**row, "skipped": dataset}
        dataset = None
    out = work / f"{entry.name}-{bits}-{option.replace('@', '-')}"
    spec = {"bits": bits, "calibration": calibration}
    start, cpu = time.perf_counter(), time.process_time()
    job = JobInput(kind=JobKind.QUANTIZE, model_path=model, spec=spec, dataset_path=dataset)
    report = run_job(job, out, limits=LIMITS).report
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    scored = fidelity.compare(entry, ref, out / "model.onnx", entry.feeds(score_seed))
    calib = report.get("calibration") or {}
    return {
        **row,
        "sqnr_db": scored.sqnr_db if math.isfinite(scored.sqnr_db) else None,
        "agreement": scored.argmax_agreement,
        "total_s": round(total, 2),
        "cpu_s": round(cpu, 2),
        "quantize_s": round(report["timings"]["quantize_s"], 2),
        "calibration_s": calib.get("seconds", 0.0),
        "calibrated": f"{calib.get('layers', 0)}/{calib.get('of', 0)}" if calib else None,
        "fidelity_db": report["fidelity"]["output_sqnr_db"],
    }


def measure(
    names: Sequence[str], bits: Sequence[int], options: Sequence[str], out: Path | None,
    score_seed: int = 0,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in names:
            entry = get(name)
            model = model_path(entry)
            sets: dict[str, Path | str] = {}
            reason = dataset_npz(entry, work / f"{name}.npz")
            sets["dataset"] = reason if reason else work / f"{name}.npz"
            try:
                synthetic_npz(model, work / f"{name}-synthetic.npz")
                sets["synthetic"] = work / f"{name}-synthetic.npz"
            except Exception as exc:  # a graph the synthesiser cannot feed
                sets["synthetic"] = f"no synthetic set: {exc}"
            ref = fidelity.run(fidelity.session(model), entry, entry.feeds(score_seed))
            for b in bits:
                for option in options:
                    try:
                        row = run_option(entry, model, b, option, sets, ref, work, score_seed)
                    except Exception as exc:  # one failing job must not end the run
                        row = {"model": name, "bits": b, "option": option,
                               "error": f"{type(exc).__name__}: {exc}"[:300]}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if out is not None:
                        out.write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per model and bits, ``SQNR dB / agreement`` per option."""
    options = list(dict.fromkeys(r["option"] for r in rows))
    lines = ["| model | bits | " + " | ".join(options) + " |",
             "|---|---|" + "---|" * len(options)]  # fmt: skip
    keys = list(dict.fromkeys((r["model"], r["bits"]) for r in rows))
    for model, bits in keys:
        cells = []
        for option in options:
            row = next((r for r in rows if (r["model"], r["bits"], r["option"]) ==
                        (model, bits, option)), None)  # fmt: skip
            if row is None or "sqnr_db" not in row:
                cells.append("–")
                continue
            sqnr = "inf" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
            agree = "" if row["agreement"] is None else f" / {row['agreement']:.3f}"
            cells.append(sqnr + agree)
        lines.append(f"| {model} | {bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--models", default=",".join(e.name for e in CATALOG))
    parser.add_argument("--bits", default=",".join(map(str, DEFAULT_BITS)))
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--score-seed", type=int, default=0,
                        help="score on feeds(N); the dataset options calibrate on feeds(1)")
    args = parser.parse_args(argv)
    rows = measure(args.models.split(","), [int(b) for b in args.bits.split(",")],
                   args.options.split(","), args.out, args.score_seed)  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
