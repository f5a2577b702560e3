"""What a job is: its kind, its input, its output, and what an upload holds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class JobKind(StrEnum):
    QUANTIZE = "quantize"
    SWEEP = "sweep"
    SEARCH = "search"


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
class JobInput:
    kind: JobKind
    model_path: Path  # keeps the uploaded file's suffix: .onnx, .safetensors or .npz
    spec: dict[str, Any]
    dataset_path: Path | None = None
    # The model file's SHA-256 (hex) when the caller already knows it (the service, from the
    # upload it stored): the report takes it instead of hashing the file again.
    model_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class JobOutput:
    report: dict[str, Any]  # JSON-ready, the shape of the report of docs/api.md
    artifacts: tuple[Path, ...]  # files written into out_dir
