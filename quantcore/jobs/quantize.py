"""A quantize job from start to end: the steps of ``quantcore.compress.pipeline`` with progress,
evaluation when a dataset is given, and ``report.json``.

Progress (fraction of the whole job): loading 0–0.05, quantizing 0.05–0.70, writing
0.70–0.80, evaluating 0.80–0.97, writing the report up to 1. The dataset is checked against
the model before any quantization, so a mismatch fails fast.

``timings`` (seconds): ``load_s``, ``quantize_s``, ``evaluate_s``, ``fidelity_s`` (the check
below, beyond the evaluation), ``write_s`` (artifacts and ``report.json``), ``report_s`` (the
histograms and ``report.html``), and ``total_s``, the whole job.

Every job's report has ``fidelity`` (the quantized model's outputs against the float model's,
on the dataset or on synthetic inputs; see ``quantcore.evaluate.fidelity``) and ``warnings``
(a list of strings: an output SQNR under ``JobLimits.fidelity_min_sqnr_db``, naming the layers
that cost most; skipped, and said, for a model over ``JobLimits.fidelity_max_params`` without
a dataset). With spec ``calibration`` other than ``none``, the dataset's inputs (``flat``:
flat inputs, no dataset needed) calibrate the quantization first (``quantcore.jobs.calibrate``)
and the report has ``calibration``.

A model is quantized by ``quantcore.compress.stream``: as each tensor is done, its codes
go to a spool folder inside ``out_dir`` (removed at the end) and its section to the package
being written, so the job's memory does not grow with the model.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from quantcore.compress.pipeline import (
    Model,
    QuantizedModel,
    load_model,
    runnable_block,
)
from quantcore.compress.stream import CodeSpool, build_skeleton, quantize_streamed, write_streamed
from quantcore.errors import InvalidDatasetError
from quantcore.evaluate.synthetic import synthetic_set
from quantcore.formats.external import is_external
from quantcore.formats.onnx_reader import OnnxModel, tensor_nbytes
from quantcore.jobs.auto_calibration import resolve_calibration
from quantcore.jobs.base import JobInput, JobOutput
from quantcore.limits import JobLimits
from quantcore.progress import ProgressCallback, Stage, span, stage_span
from quantcore.report.allocation import allocation_block
from quantcore.report.build import build_report
from quantcore.report.files import write_report_files
from quantcore.report.histograms import model_histograms
from quantcore.spec import Calibration, QuantSpec

if TYPE_CHECKING:
    from quantcore.evaluate.dataset import EvalSet
    from quantcore.evaluate.fidelity import FidelityCheck
    from quantcore.evaluate.float_side import FloatSide
    from quantcore.evaluate.scores import AccuracyReport
    from quantcore.jobs.calibrated import Calibrated


T = TypeVar("T")


HASH_SPAN = 1 << 24  # bytes hashed between two drops of the mapped pages


def _sha256(path: Path) -> str:
    """The file's SHA-256, read through a mapping: reading it into a buffer copied every byte
    once more (the 53.4M model's 213 MB: 0.24 s against 0.16). Each span's pages leave the
    process once hashed, so its RSS does not grow with the file."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return hashlib.sha256().hexdigest()
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    digest = hashlib.sha256()
    try:
        with memoryview(mapped) as view:
            for start in range(0, len(view), HASH_SPAN):
                digest.update(view[start : start + HASH_SPAN])
                mapped.madvise(mmap.MADV_DONTNEED, start, min(HASH_SPAN, len(view) - start))
    finally:
        mapped.close()
    return digest.hexdigest()


def _external_bytes(model: Model) -> int:
    if not isinstance(model, OnnxModel):
        return 0
    return sum(
        tensor_nbytes(s.tensor) for s in model.sources.values()
        if is_external(s.tensor) and not model.in_model_file(s.tensor)
    )  # fmt: skip


def model_block(path: Path, model: Model, sha256: str | None = None) -> dict[str, Any]:
    """The report's ``model`` object (``sha256``: the file's, when already known)."""
    return {
        "format": model.format.value,
        "sha256": _sha256(path) if sha256 is None else sha256,
        "size_bytes": path.stat().st_size,
        "n_tensors": len(model.tensors),
        "n_params": sum(t.size for t in model.tensors),
    }


def _checks_synthetic(model: Model, evalset: EvalSet | None, n_params: int,
                      limits: JobLimits) -> bool:  # fmt: skip
    """Whether ``_fidelity`` will run the models on synthetic inputs."""
    return (
        isinstance(model, OnnxModel) and evalset is None
        and n_params <= limits.fidelity_max_params
    )  # fmt: skip


def _token_inputs(model: OnnxModel) -> bool:
    """Whether the graph's inputs are all token ids or masks (``calibration`` auto)."""
    try:
        return not synthetic_set(model.proto).has_float_input
    except Exception:  # an input type synthetic_set cannot read: not a token model
        return False


def _later(work: Callable[[], T]) -> Future[T]:
    """``work`` on a thread of its own (its one task: the thread ends with it)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="job")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


def _float_side_later(path: Path, batch_size: int) -> Future[FloatSide]:
    """The float model's side of the fidelity check (``quantcore.evaluate.float_side``), on a
    thread of its own that also imports onnxruntime, so that it overlaps the quantization."""

    def work() -> FloatSide:
        from quantcore.evaluate.float_side import prepare

        return prepare(path, batch_size=batch_size)

    return _later(work)


def _fidelity(
    job: JobInput, quantized: Path, qmodel: QuantizedModel, limits: JobLimits,
    evalset: EvalSet | None, scores: AccuracyReport | None, n_params: int,
    float_side: Future[FloatSide] | None,
) -> FidelityCheck:
    """The report's ``fidelity`` block and warnings (``quantcore.evaluate.fidelity``); a
    model over ``limits.fidelity_max_params`` without an evaluation set gets the check
    skipped, said in the block's ``reason`` and in a warning."""
    from quantcore.evaluate.fidelity import FidelityCheck, check_fidelity, unavailable

    if not isinstance(qmodel.source, OnnxModel):
        return unavailable(
            f"{job.model_path.name} holds weights only: there is no graph to run",
            limits.fidelity_min_sqnr_db,
        )
    if evalset is None and n_params > limits.fidelity_max_params:
        reason = (
            f"the fidelity check was skipped: the model has {n_params / 1e6:.1f} M parameters, "
            f"over the check's size budget of {limits.fidelity_max_params / 1e6:g} M (running "
            "both models on synthetic inputs would cost about as much as the quantization); "
            "give an evaluation set, or raise the budget, to measure it"
        )
        block = unavailable(reason, limits.fidelity_min_sqnr_db).block
        return FidelityCheck(block={**block, "skipped": "size_budget"}, warnings=(reason,))
    return check_fidelity(
        job.model_path, quantized, qmodel.weights, threshold_db=limits.fidelity_min_sqnr_db,
        budget_s=limits.fidelity_budget_s, evalset=evalset, scores=scores,
        batch_size=limits.eval_batch_size, float_side=float_side,
    )  # fmt: skip


def run_quantize(
    job: JobInput, out_dir: Path, progress: ProgressCallback | None, limits: JobLimits
) -> JobOutput:
    advance = span(progress, 0.0, 1.0)  # fractions of the whole job, as given
    started = time.perf_counter()
    advance(Stage.LOADING, 0.0)
    spec = QuantSpec.from_dict(job.spec)
    # The file's hash (the report's, and the GIL released) runs while the model is read.
    known = job.model_sha256
    digest = _later(lambda: _sha256(job.model_path) if known is None else known)
    model = load_model(job.model_path)
    evalset = None
    if job.dataset_path is not None:
        if not isinstance(model, OnnxModel):
            raise InvalidDatasetError(
                f"a dataset was given, but {job.model_path.name} holds weights only (no graph "
                "to run); evaluation needs an .onnx model"
            )
        from quantcore.evaluate import check_dataset

        evalset = check_dataset(model.proto, job.dataset_path)
    model_info = model_block(job.model_path, model, sha256="")  # the digest when it is done
    original_bytes = job.model_path.stat().st_size + _external_bytes(model)
    load_s = time.perf_counter() - started
    advance(Stage.LOADING, 0.05)
    float_side = None
    if _checks_synthetic(model, evalset, model_info["n_params"], limits):
        float_side = _float_side_later(job.model_path, limits.eval_batch_size)

    spec, auto_why = resolve_calibration(
        spec, has_graph=isinstance(model, OnnxModel), parameters=model_info["n_params"],
        limits=limits, token_inputs=(spec.calibration is Calibration.AUTO
                                     and isinstance(model, OnnxModel) and _token_inputs(model)),
    )
    calibrated: Calibrated | None = None
    if spec.calibration is not Calibration.NONE:  # loads onnxruntime: only when asked for
        from quantcore.jobs.calibrate import capture

        calibrated = capture(model, job.model_path, spec, evalset, limits, auto=auto_why)
        if calibrated is not None and calibrated.gptq_stats:  # on this thread: load_lapack
            from quantcore.compress.gptq_factors import load_lapack

            load_lapack(calibrated.gptq_stats.values())
    elif auto_why is not None:
        from quantcore.jobs.calibrated import not_chosen

        calibrated = not_chosen(auto_why)
    out_dir.mkdir(parents=True, exist_ok=True)
    spool = CodeSpool(Path(tempfile.mkdtemp(prefix=".spool-", dir=out_dir)), model.format)
    try:
        return _quantize(job, out_dir, progress, limits, model, spool, evalset, calibrated,
                         started, load_s, model_info, original_bytes, spec,
                         float_side, digest)  # fmt: skip
    finally:
        model.close()  # closed already when the job got that far; its file otherwise
        spool.close()
        shutil.rmtree(spool.folder, ignore_errors=True)


def _quantize(
    job: JobInput, out_dir: Path, progress: ProgressCallback | None, limits: JobLimits,
    model: Model, spool: CodeSpool, evalset: EvalSet | None, calibrated: Calibrated | None,
    started: float, load_s: float, model_info: dict[str, Any], original_bytes: int,
    spec: QuantSpec, float_side: Future[FloatSide] | None, digest: Future[str],
) -> JobOutput:
    advance = span(progress, 0.0, 1.0)
    quantizing = stage_span(progress, Stage.QUANTIZING, 0.05, 0.70)
    gptq = calibrated.gptq_stats if calibrated is not None else None
    qmodel = quantize_streamed(model, spec, spool, quantizing, stats=gptq)
    # The figures need the original weights; once the quantized model is built, the source's
    # floats are freed so that writing does not hold the model twice.
    t0 = time.perf_counter()
    histograms = model_histograms(qmodel, spool.release)
    report_s = time.perf_counter() - t0
    advance(Stage.WRITING, 0.70)
    written = build_skeleton(qmodel)
    if calibrated is not None:
        from quantcore.jobs.calibrate import correct_bias

        correct_bias(calibrated, qmodel, written)
    runnable = runnable_block(written)
    model.close()
    artifacts = write_streamed(qmodel, spool, out_dir, written)
    del written
    advance(Stage.WRITING, 0.80)

    accuracy = None
    evaluate_s = 0.0
    scores = None
    if evalset is not None:
        from quantcore.evaluate import evaluate

        t0 = time.perf_counter()
        advance(Stage.EVALUATING, 0.80)
        scores = evaluate(
            job.model_path,
            artifacts.model_path,
            evalset,
            batch_size=limits.eval_batch_size,
            progress=stage_span(progress, Stage.EVALUATING, 0.80, 0.95),
        )
        accuracy = scores.to_dict()
        evaluate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fidelity = _fidelity(job, artifacts.model_path, qmodel, limits, evalset, scores,
                         model_info["n_params"], float_side)  # fmt: skip
    fidelity_s = time.perf_counter() - t0
    advance(Stage.EVALUATING, 0.97)

    t0 = time.perf_counter()
    model_info["sha256"] = digest.result()
    report = build_report(
        model=model_info,
        spec=spec.to_dict(),
        layers=[w.layer for w in qmodel.weights],
        skipped=[s.to_dict() for s in qmodel.skipped],
        distribution=qmodel.distribution,
        accuracy=accuracy,
        artifacts=artifacts.sizes,
        original_bytes=original_bytes,
        timings={},
    )
    report["runnable"] = runnable
    if qmodel.allocation is not None:
        report["allocation"] = allocation_block(qmodel.allocation, qmodel.weights, artifacts.sizes)
    report["fidelity"] = fidelity.block
    report["warnings"] = [*(calibrated.warnings if calibrated else []), *fidelity.warnings]
    if calibrated is not None:
        report["calibration"] = calibrated.block
        if calibrated.block.get("inputs") == "dataset":  # fitted on the samples then scored
            fidelity.block["in_sample"] = True
            report["warnings"].append(
                "calibration fitted the quantization to the evaluation set's samples, so "
                "accuracy and fidelity are measured on them (in-sample); held-out samples "
                "measure it without that bias"
            )
    report["timings"] = {
        "load_s": load_s,
        "quantize_s": qmodel.quantize_s,
        "evaluate_s": evaluate_s,
        "fidelity_s": fidelity_s,
        "write_s": artifacts.write_s + time.perf_counter() - t0,
        "report_s": report_s,
    }
    paths = write_report_files(out_dir, report, histograms, started=started)
    advance(Stage.WRITING, 1.0)
    return JobOutput(report=report, artifacts=(*artifacts.paths, *paths))
