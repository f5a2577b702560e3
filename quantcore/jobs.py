"""The core's entry points for whoever runs jobs: the Celery worker and the local CLI.

Both call exactly these functions, so a job run through the service and one run with
``quantserve quantize`` give the same artifacts and report.

- ``inspect_model`` / ``inspect_dataset``: what the upload endpoints answer with.
- ``validate_job``: the spec checks that can be made before any work starts (400/422 at
  submission rather than a failed job).
- ``run_job``: the whole job, writing artifacts into a folder and returning the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class JobKind(StrEnum):
    QUANTIZE = "quantize"
    SWEEP = "sweep"
    SEARCH = "search"


class Stage(StrEnum):
    LOADING = "loading"
    QUANTIZING = "quantizing"
    EVALUATING = "evaluating"
    WRITING = "writing"


# Called as progress(stage, fraction) with fraction in [0, 1] over the whole job.
ProgressCallback = Callable[[Stage, float], None]


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    params: int


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    format: str  # "onnx" | "safetensors" | "npz"
    n_tensors: int
    n_params: int
    tensors: tuple[TensorInfo, ...]


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    arrays: dict[str, tuple[int, ...]]


@dataclass(frozen=True, kw_only=True)
class JobLimits:
    """Bounds that come from the service's settings."""

    max_sweep_points: int = 64
    eval_batch_size: int = 256


@dataclass(frozen=True, kw_only=True)
class JobInput:
    kind: JobKind
    model_path: Path  # keeps the uploaded file's suffix: .onnx, .safetensors or .npz
    spec: dict[str, Any]
    dataset_path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class JobOutput:
    report: dict[str, Any]  # JSON-ready, the shape of API.md's report
    artifacts: tuple[Path, ...]  # files written into out_dir


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
    from quantcore.sweep_jobs import validate_search, validate_sweep

    spec = {} if spec is None else spec
    limits = limits or JobLimits()
    if kind is JobKind.SWEEP:
        return validate_sweep(spec, limits)
    return validate_search(spec, limits)


def run_job(
    job: JobInput,
    out_dir: Path,
    progress: ProgressCallback | None = None,
    limits: JobLimits = JobLimits(),
) -> JobOutput:
    """Run ``job`` and write its artifacts into ``out_dir``; returns the report and the files."""
    if job.kind is JobKind.QUANTIZE:
        from quantcore.quantize_job import run_quantize

        return run_quantize(job, out_dir, progress, limits)
    from quantcore.sweep_jobs import run_search_job, run_sweep_job

    if job.kind is JobKind.SWEEP:
        return run_sweep_job(job, out_dir, progress, limits)
    return run_search_job(job, out_dir, progress, limits)
