"""The core's entry points for whoever runs jobs: the Celery worker and the local CLI.

Both call exactly these functions, so a job run through the service and one run with
``quantserve quantize`` give the same artifacts and report.

- ``inspect_model`` / ``inspect_dataset``: what the upload endpoints answer with.
- ``validate_job``: the spec checks that can be made before any work starts (400/422 at
  submission rather than a failed job).
- ``run_job``: the whole job, writing artifacts into a folder and returning the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantcore.jobs.base import JobInput, JobKind, JobOutput, ModelInfo, TensorInfo
from quantcore.limits import JobLimits
from quantcore.progress import ProgressCallback

if TYPE_CHECKING:
    from quantcore.evaluate.dataset import DatasetInfo


def inspect_model(path: Path) -> ModelInfo:
    """What an uploaded model holds (format from the suffix); raises the reader's domain errors
    (``InvalidModelError``, ``UnsupportedModelError``, ``UnsafeExternalDataError``)."""
    from quantcore.formats.load import load_model

    model = load_model(path)
    tensors = tuple(
        TensorInfo(name=t.name, shape=t.shape, dtype=t.dtype, params=t.size) for t in model.tensors
    )
    return ModelInfo(
        format=model.format.value,
        n_tensors=len(tensors),
        n_params=sum(t.params for t in tensors),
        tensors=tensors,
    )


def inspect_dataset(path: Path) -> DatasetInfo:
    """Array names and shapes of an uploaded ``.npz`` evaluation set; ``InvalidDatasetError``
    for a file that is not one (see ``quantcore.evaluate.dataset``)."""
    from quantcore.evaluate.dataset import inspect_dataset as inspect

    return inspect(path)


def validate_job(
    kind: JobKind | str, spec: dict[str, Any] | None, limits: JobLimits | None = None
) -> dict[str, Any]:
    """The spec as applied (defaults filled in), or ``InvalidSpecError`` naming the field.

    ``limits`` bounds the points of a sweep or search (the service passes its settings')."""
    from quantcore.errors import InvalidSpecError
    from quantcore.spec import QuantSpec

    try:
        kind = JobKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in JobKind)
        raise InvalidSpecError(f"kind={kind!r} is not one of: {allowed}") from None
    if kind is JobKind.QUANTIZE:
        return QuantSpec.from_dict(spec).to_dict()
    from quantcore.jobs.explore import validate_search, validate_sweep

    spec = {} if spec is None else spec
    limits = limits or JobLimits()
    if kind is JobKind.SWEEP:
        return validate_sweep(spec, limits)
    return validate_search(spec, limits)


def run_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits | None = None,
) -> JobOutput:
    """Run ``job`` and write its artifacts into ``out_dir``; returns the report and the files."""
    limits = limits or JobLimits()
    if job.kind is JobKind.QUANTIZE:
        from quantcore.jobs.quantize import run_quantize

        return run_quantize(job, out_dir, progress, limits)
    from quantcore.jobs.explore import run_search_job, run_sweep_job

    if job.kind is JobKind.SWEEP:
        return run_sweep_job(job, out_dir, progress, limits)
    return run_search_job(job, out_dir, progress, limits)
