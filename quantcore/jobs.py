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
