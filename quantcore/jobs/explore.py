"""The ``sweep`` and ``search`` job kinds, as ``quantcore.run_job`` dispatches them.

Sweep report (``report.json``; ``report.html`` draws it)::

    {"kind": "sweep", "model": {...}, "spec": {"base", "grid", "points"},
     "rows": [one row per grid point, see quantcore.explore.sweep], "timings": {...}}

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

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from quantcore.compress.stream import quantize_written
from quantcore.errors import InvalidDatasetError
from quantcore.explore.grid import parse_sweep
from quantcore.explore.search import SearchResult, SearchSpec, parse_search, search
from quantcore.explore.sweep import Measurer, measurer, run_sweep
from quantcore.jobs.base import JobInput, JobOutput
from quantcore.jobs.quantize import model_block
from quantcore.limits import JobLimits
from quantcore.progress import ProgressCallback, Stage, span, stage_span
from quantcore.report import build as report
from quantcore.report.files import write_report_files
from quantcore.report.histograms import model_histograms

SpecT = TypeVar("SpecT")


# A search measures accuracy drops: it cannot run without an evaluation set.
SEARCH_NEEDS_DATASET = "a search job needs an evaluation dataset: the budget is an accuracy drop"


def validate_sweep(spec: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
    """The sweep spec to store: what ``parse_sweep`` takes back as it is (the point count,
    which the report adds, is not part of it); ``InvalidSpecError`` before any work."""
    return parse_sweep(spec, limits).stored()


def validate_search(spec: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
    """The search spec as applied; ``InvalidSpecError`` before any work."""
    return parse_search(spec, limits).to_dict()


@dataclass(frozen=True, kw_only=True)
class _Loaded(Generic[SpecT]):
    """A job's parsed spec and measurer, and when the job started."""

    spec: SpecT
    measure: Measurer
    started: float  # time.perf_counter() at the job's start
    load_s: float


def _load(
    job: JobInput,
    limits: JobLimits,
    progress: ProgressCallback | None,
    parse: Callable[[Any, JobLimits], SpecT],
    *,
    needs_dataset: bool,
    out_dir: Path,
) -> _Loaded[SpecT]:
    """Validate the spec (before any work), then load the model and the evaluation set; each
    point is written in a temporary folder in ``out_dir`` while it is measured."""
    started = time.perf_counter()
    spec = parse(job.spec, limits)
    if progress is not None:
        progress(Stage.LOADING, 0.0)
    if needs_dataset and job.dataset_path is None:
        raise InvalidDatasetError(SEARCH_NEEDS_DATASET)
    out_dir.mkdir(parents=True, exist_ok=True)
    measure = measurer(job.model_path, job.dataset_path, limits.eval_batch_size, out_dir)
    return _Loaded(
        spec=spec, measure=measure, started=started, load_s=time.perf_counter() - started
    )


def run_sweep_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits = JobLimits(),  # noqa: B008 (frozen, used read-only)
) -> JobOutput:
    loaded = _load(job, limits, progress, parse_sweep, needs_dataset=False, out_dir=out_dir)
    t0 = time.perf_counter()
    try:
        rows = run_sweep(loaded.spec, loaded.measure, span(progress, 0.05, 0.95))
    finally:
        loaded.measure.model.close()  # its file, held open for the points' reads
    sweep_s = time.perf_counter() - t0
    if progress is not None:
        progress(Stage.WRITING, 0.95)
    body = report.json_safe(
        {
            "kind": "sweep",
            "model": model_block(job.model_path, loaded.measure.model, job.model_sha256),
            "spec": loaded.spec.to_dict(),
            "rows": rows,
            "timings": {"load_s": loaded.load_s, "sweep_s": sweep_s},
        }
    )
    paths = write_report_files(out_dir, body, (), started=loaded.started)
    return JobOutput(report=body, artifacts=paths)


def run_search_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits = JobLimits(),  # noqa: B008 (frozen, used read-only)
) -> JobOutput:
    loaded = _load(job, limits, progress, parse_search, needs_dataset=True, out_dir=out_dir)
    spec, measure = loaded.spec, loaded.measure
    t0 = time.perf_counter()
    result = search(spec, measure, limits, stage_span(progress, Stage.EVALUATING, 0.05, 0.9))
    search_s = time.perf_counter() - t0
    if progress is not None:
        progress(Stage.WRITING, 0.9)
    spool_dir = Path(tempfile.mkdtemp(prefix=".spool-", dir=out_dir))
    try:
        return _search_output(job, loaded, result, search_s, out_dir, spool_dir)
    finally:
        measure.model.close()  # its file, held open for the steps' reads
        shutil.rmtree(spool_dir, ignore_errors=True)


def _search_output(
    job: JobInput, loaded: _Loaded[SearchSpec], result: SearchResult, search_s: float,
    out_dir: Path, spool_dir: Path,
) -> JobOutput:
    """The chosen configuration written as a quantize job streams it (its codes spooled in
    ``spool_dir`` until the histograms are drawn), and the search's report."""
    spec, measure = loaded.spec, loaded.measure
    chosen = result.chosen_step
    qmodel, written_files = quantize_written(measure.model, chosen.measurement.spec, out_dir,
                                             spool_dir)  # fmt: skip
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
    # The chosen configuration's quantize report, under the search's own fields.
    chosen_report = report.build_report(
        model=model_block(job.model_path, measure.model, job.model_sha256),
        spec=chosen.measurement.spec.to_dict(),
        layers=[w.layer for w in qmodel.weights],
        skipped=[s.to_dict() for s in qmodel.skipped],
        distribution=qmodel.distribution,
        accuracy=accuracy.to_dict() if accuracy else None,
        artifacts=written_files.sizes,
        original_bytes=measure.original_bytes,
        timings={},
    )
    body = report.json_safe(
        {
            "kind": "search",
            "model": chosen_report["model"],
            "spec": spec.to_dict(),
            "criterion": result.criterion,
            "max_top1_drop": spec.max_top1_drop,
            "met_budget": result.met_budget,
            "stopped_at_limit": result.stopped_at_limit,
            "path": path,
            "chosen_spec": chosen_report["spec"],
            **{key: chosen_report[key]
               for key in ("summary", "layers", "skipped", "distribution", "accuracy")},
            "timings": {"load_s": loaded.load_s, "search_s": search_s},
        }
    )
    paths = write_report_files(
        out_dir, body, model_histograms(qmodel), started=loaded.started
    )
    return JobOutput(report=body, artifacts=(*written_files.paths, *paths))
