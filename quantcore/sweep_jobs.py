"""The ``sweep`` and ``search`` job kinds, as ``quantcore.jobs.run_job`` dispatches them.

Sweep report (``report.json``; ``report.html`` draws it)::

    {"kind": "sweep", "model": {...}, "spec": {"base", "grid", "points"},
     "rows": [one row per grid point, see quantcore.sweep], "timings": {...}}

Search report::

    {"kind": "search", "model": {...}, "spec": {"base", "max_top1_drop", "candidates",
     "mixed_precision"}, "criterion": "top1" | "agreement", "max_top1_drop", "met_budget",
     "stopped_at_limit", "path": [a sweep row per step, plus "action", "drop",
     "within_budget", "chosen"], plus the chosen configuration's quantize report fields
     ("spec" of it under "chosen_spec", "summary", "layers", "skipped", "distribution",
     "accuracy"), "timings"}

Artifacts: ``report.json`` and ``report.html`` for both; a search also writes the chosen
configuration's quantized model and ``model.qpack``, as a quantize job would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantcore import pipeline, report
from quantcore.errors import InvalidDatasetError
from quantcore.jobs import JobInput, JobLimits, JobOutput, ProgressCallback, Stage
from quantcore.quantize_job import model_block
from quantcore.report_html import model_histograms, render_report_html
from quantcore.search import parse_search, search
from quantcore.sweep import Measurer, measurer, run_sweep
from quantcore.sweep_spec import parse_sweep


def validate_sweep(spec: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
    """The sweep spec as applied; ``InvalidSpecError`` before any work."""
    return parse_sweep(spec, limits).to_dict()


def validate_search(spec: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
    """The search spec as applied; ``InvalidSpecError`` before any work."""
    return parse_search(spec, limits).to_dict()


def _span(
    progress: ProgressCallback | None, lo: float, hi: float
) -> Callable[[Stage, float], None]:
    """Map (stage, share of a step) onto [lo, hi] of the whole job."""

    def report_fraction(stage: Stage, f: float) -> None:
        if progress is not None:
            progress(stage, lo + (hi - lo) * min(max(f, 0.0), 1.0))

    return report_fraction


def _stage(
    progress: ProgressCallback | None, stage: Stage, lo: float, hi: float
) -> Callable[[float], None]:
    """Like ``_span`` for a step that stays in one stage."""
    span = _span(progress, lo, hi)
    return lambda f: span(stage, f)


def _prepare(
    job: JobInput, limits: JobLimits, progress: ProgressCallback | None, needs_dataset: bool
) -> Measurer:
    if progress is not None:
        progress(Stage.LOADING, 0.0)
    if needs_dataset and job.dataset_path is None:
        raise InvalidDatasetError(
            "a search job needs an evaluation dataset: the budget is an accuracy drop"
        )
    return measurer(job.model_path, job.dataset_path, limits.eval_batch_size)


def _write(out_dir: Path, body: dict[str, Any], html: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(body, indent=2, allow_nan=False))
    html_path.write_text(html)
    return json_path, html_path


def run_sweep_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits = JobLimits(),  # noqa: B008 (frozen, used read-only)
) -> JobOutput:
    start = time.perf_counter()
    sweep = parse_sweep(job.spec, limits)
    measure = _prepare(job, limits, progress, needs_dataset=False)
    loaded = time.perf_counter()
    rows = run_sweep(sweep, measure, _span(progress, 0.05, 0.95))
    swept = time.perf_counter()
    if progress is not None:
        progress(Stage.WRITING, 0.95)
    body = report.json_safe(
        {
            "kind": "sweep",
            "model": model_block(job.model_path, measure.model),
            "spec": sweep.to_dict(),
            "rows": rows,
            "timings": {"load_s": loaded - start, "sweep_s": swept - loaded},
        }
    )
    html = render_report_html(body)
    body["timings"]["total_s"] = time.perf_counter() - start
    return JobOutput(report=body, artifacts=_write(out_dir, body, html))


def run_search_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits = JobLimits(),  # noqa: B008 (frozen, used read-only)
) -> JobOutput:
    start = time.perf_counter()
    spec = parse_search(job.spec, limits)
    measure = _prepare(job, limits, progress, needs_dataset=True)
    loaded = time.perf_counter()
    result = search(spec, measure, limits, _stage(progress, Stage.EVALUATING, 0.05, 0.9))
    searched = time.perf_counter()
    if progress is not None:
        progress(Stage.WRITING, 0.9)
    chosen = result.chosen_step
    qmodel = pipeline.quantize_model(measure.model, chosen.measurement.spec)
    artifacts = pipeline.write_artifacts(qmodel, out_dir)
    path = []
    for i, step in enumerate(result.steps):
        row = step.measurement.row(step.values)
        row.update(
            action=step.action,
            drop=step.drop,
            within_budget=step.within_budget,
            chosen=i == result.chosen,
        )
        path.append(row)
    accuracy = chosen.measurement.accuracy
    body = report.json_safe(
        {
            "kind": "search",
            "model": model_block(job.model_path, measure.model),
            "spec": spec.to_dict(),
            "criterion": result.criterion,
            "max_top1_drop": spec.max_top1_drop,
            "met_budget": result.met_budget,
            "stopped_at_limit": result.stopped_at_limit,
            "path": path,
            "chosen_spec": chosen.measurement.spec.to_dict(),
            "summary": report.summary(
                [w.layer for w in qmodel.weights],
                skipped=len(qmodel.skipped),
                original_bytes=measure.original_bytes,
                artifacts=artifacts.sizes,
            ),
            "layers": [w.layer for w in qmodel.weights],
            "skipped": [s.to_dict() for s in qmodel.skipped],
            "distribution": qmodel.distribution,
            "accuracy": accuracy.to_dict() if accuracy else None,
            "timings": {"load_s": loaded - start, "search_s": searched - loaded},
        }
    )
    html = render_report_html(body, model_histograms(qmodel))
    body["timings"]["total_s"] = time.perf_counter() - start
    paths = _write(out_dir, body, html)
    return JobOutput(report=body, artifacts=(*artifacts.paths, *paths))
