"""The core's entry points for whoever runs jobs: the Celery worker and the local CLI.

Both call exactly these functions, so a job run through the service and one run with
``quantserve quantize`` give the same artifacts and report.

- ``inspect_model`` / ``inspect_dataset``: what the upload endpoints answer with; every size
  a file declares is checked against ``InputLimits`` before memory is taken for it.
- ``validate_job``: the spec checks that can be made before any work starts (400/422 at
  submission rather than a failed job); the spec it returns is the one to store, which the
  worker's parser takes back as it is.
- ``check_dataset_fits``: an evaluation set against a model's inputs, at submission.
- ``run_job``: the whole job, writing artifacts into a folder and returning the report; its
  input files are checked against ``JobLimits.inputs`` again before they are read, and a
  folder where an artifact would replace one of them is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantcore.blas_threads import one_blas_thread
from quantcore.jobs.base import JobInput, JobKind, JobOutput, ModelInfo, TensorInfo
from quantcore.limits import InputLimits, JobLimits
from quantcore.progress import ProgressCallback

if TYPE_CHECKING:
    from quantcore.evaluate.dataset import DatasetInfo


def inspect_model(path: Path, limits: InputLimits | None = None) -> ModelInfo:
    """What an uploaded model holds (format from the suffix); raises the reader's domain errors
    (``InvalidModelError``, ``UnsupportedModelError``, ``UnsafeExternalDataError``) and
    ``InputTooLargeError`` past ``limits``. An ``.npz`` is read by its headers only, each
    compressed member inflated once in bounded memory."""
    if path.suffix.lower() == ".npz":
        from quantcore.errors import InvalidModelError
        from quantcore.formats.npz import scan_npz

        members = scan_npz(path, limits, error=InvalidModelError, verify=True)
        tensors = tuple(
            TensorInfo(name=m.name, shape=m.shape, dtype=m.dtype.name,
                       params=math.prod(m.shape))
            for m in members
        )
        return ModelInfo(format="npz", n_tensors=len(tensors),
                         n_params=sum(t.params for t in tensors), tensors=tensors)
    from quantcore.formats.load import load_model

    model = load_model(path, limits)
    tensors = tuple(
        TensorInfo(name=t.name, shape=t.shape, dtype=t.dtype, params=t.size) for t in model.tensors
    )
    model.close()
    return ModelInfo(
        format=model.format.value,
        n_tensors=len(tensors),
        n_params=sum(t.params for t in tensors),
        tensors=tensors,
    )


def inspect_dataset(path: Path, limits: InputLimits | None = None) -> DatasetInfo:
    """Array names and shapes of an uploaded ``.npz`` evaluation set; ``InvalidDatasetError``
    for a file that is not one (see ``quantcore.evaluate.dataset``), ``InputTooLargeError``
    past ``limits``."""
    from quantcore.evaluate.dataset import inspect_dataset as inspect

    return inspect(path, limits)


def check_dataset_fits(
    model_path: Path, dataset_path: Path, limits: InputLimits | None = None
) -> None:
    """``InvalidDatasetError`` naming what differs when the evaluation set at ``dataset_path``
    does not fit the model's inputs (names, dtypes, shapes, sample counts, labels, NaN) — the
    check a job makes before any work (``quantcore.evaluate.dataset.check_dataset``), made
    from the model's graph inputs and outputs alone (its weights are not parsed)."""
    from quantcore.errors import InvalidDatasetError
    from quantcore.evaluate.dataset import check_dataset
    from quantcore.formats.onnx_signature import signature

    if model_path.suffix.lower() != ".onnx":
        raise InvalidDatasetError(
            f"a dataset was given, but {model_path.name!r} holds weights only (no graph to "
            "run); evaluation needs an .onnx model"
        )
    check_dataset(signature(model_path), dataset_path, limits)


def validate_job(
    kind: JobKind | str,
    spec: dict[str, Any] | None,
    limits: JobLimits | None = None,
    *,
    with_dataset: bool | None = None,
) -> dict[str, Any]:
    """The spec to store (defaults filled in), or ``InvalidSpecError`` naming the field.

    The result is what the job's parser takes back unchanged: the worker validates the stored
    spec with the same functions. ``limits`` bounds the points of a sweep or search (the
    service passes its settings'). ``with_dataset=False`` refuses a search
    (``InvalidDatasetError``): it measures accuracy, so it needs an evaluation set."""
    from quantcore.errors import InvalidDatasetError, InvalidSpecError
    from quantcore.spec import QuantSpec

    try:
        kind = JobKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in JobKind)
        raise InvalidSpecError(f"kind={kind!r} is not one of: {allowed}") from None
    if kind is JobKind.QUANTIZE:
        return QuantSpec.from_dict(spec).to_dict()
    from quantcore.jobs.explore import SEARCH_NEEDS_DATASET, validate_search, validate_sweep

    spec = {} if spec is None else spec
    limits = limits or JobLimits()
    if kind is JobKind.SWEEP:
        return validate_sweep(spec, limits)
    applied = validate_search(spec, limits)
    if with_dataset is False:
        raise InvalidDatasetError(SEARCH_NEEDS_DATASET)
    return applied


def check_inputs(job: JobInput, limits: InputLimits) -> None:
    """The sizes ``job``'s files declare, against ``limits``, before any reader takes memory
    for them: a worker checks again what the upload checked (the settings may have changed,
    the file may have come another way)."""
    from quantcore.errors import InvalidModelError
    from quantcore.formats.npz import scan_npz
    from quantcore.formats.safetensors_header import read_header

    suffix = job.model_path.suffix.lower()
    if suffix == ".npz":
        scan_npz(job.model_path, limits, error=InvalidModelError)
    elif suffix == ".safetensors":
        read_header(job.model_path, limits)
    if job.dataset_path is not None:
        from quantcore.evaluate.dataset import read_headers

        read_headers(job.dataset_path, limits)


def artifact_names() -> frozenset[str]:
    """What a job may write into its folder: the model in any format, its external data, the
    package and the reports (named where they are written)."""
    from quantcore.compress.stream import PACKAGE_FILE
    from quantcore.formats.model import ModelFormat
    from quantcore.formats.onnx_writer import EXTERNAL_SUFFIX
    from quantcore.report.files import HTML_NAME, REPORT_NAME

    models = {f"model.{fmt.value}" for fmt in ModelFormat}
    return frozenset({*models, f"model.onnx{EXTERNAL_SUFFIX}", PACKAGE_FILE, REPORT_NAME,
                      HTML_NAME})  # fmt: skip


def check_out_dir(job: JobInput, out_dir: Path) -> None:
    """Refuse ``out_dir`` if an artifact would be written over one of the job's inputs: the
    input would be lost, and it is still being read (its weights are mapped from the file)."""
    from quantcore.errors import QuantError

    if not out_dir.is_dir():
        return
    names = artifact_names()
    for path in (job.model_path, job.dataset_path):
        if (path is not None and path.name in names and path.exists()
                and path.parent.samefile(out_dir)):
            raise QuantError(
                f"the output folder {str(out_dir)!r} holds the job's input {path.name!r}, "
                "which the job's artifacts would replace; write them to another folder"
            )


def run_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits | None = None,
) -> JobOutput:
    """Run ``job`` and write its artifacts into ``out_dir``; returns the report and the files.

    The input files are checked against ``limits.inputs`` first (``check_inputs``); an ONNX
    model's tensors are checked by its reader as it is parsed."""
    limits = limits or JobLimits()
    check_inputs(job, limits.inputs)
    check_out_dir(job, out_dir)
    # The same bits on any core count: BLAS on one thread (the job's own threads use the
    # cores). Another CPU kind can still differ: OpenBLAS picks its kernels by CPU.
    with one_blas_thread():
        return _run(job, out_dir, progress, limits)


def _run(
    job: JobInput, out_dir: Path, progress: ProgressCallback | None, limits: JobLimits
) -> JobOutput:
    if job.kind is JobKind.QUANTIZE:
        from quantcore.jobs.quantize import run_quantize

        return run_quantize(job, out_dir, progress, limits)
    from quantcore.jobs.explore import run_search_job, run_sweep_job

    if job.kind is JobKind.SWEEP:
        return run_sweep_job(job, out_dir, progress, limits)
    return run_search_job(job, out_dir, progress, limits)
