"""What the data-free calibration tests share: a quantize job on an ONNX model, an SQNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from quantcore import JobInput, JobKind, run_job
from quantcore.limits import JobLimits


def quantize_job(
    tmp_path: Path, model: onnx.ModelProto, spec: dict, name: str
) -> tuple[dict, Path]:
    """``model`` saved and quantized with ``spec`` into ``tmp_path / name``: the report and
    the written model's path."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec)
    out = run_job(job, tmp_path / name, limits=JobLimits())
    return out.report, tmp_path / name / "model.onnx"


def sqnr_db(reference: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((got - reference) ** 2)))
