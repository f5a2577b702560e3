"""``sweep`` jobs: one model quantized at every point of a grid, one report row per point.

The spec and how its grid expands: ``quantcore.explore.grid``. The model is loaded once; each
point is quantized and written as a quantize job streams it (``quantcore.compress.stream``:
codes spooled to disk, ``model.onnx`` and ``model.qpack`` written a tensor at a time) into a
temporary folder removed after the point, and, with a dataset, the written model is evaluated
against the float one. A point holds what a quantize job holds, whatever the model's size,
and memory does not grow with the number of points.

A row (``SweepRow.to_dict``)::

    {"point": {grid fields of the point}, "spec": {the spec as applied},
     "xmax": support threshold in std units (params-weighted mean over the quantized layers;
             exact for granularity "model"), "bits_per_weight", "entropy_bits_per_weight",
     "sqnr_db", "sqnr_theory_db", "package_bytes", "accuracy": {the accuracy block} | null}

which is what 001's figures 8 to 10 (accuracy and SQNR against the threshold) and 004's
rate-distortion curves (SQNR and accuracy against entropy bits per weight) are drawn from.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore.compress import pipeline
from quantcore.compress.stream import PACKAGE_FILE, quantize_written
from quantcore.errors import InvalidDatasetError
from quantcore.evaluate import AccuracyReport, EvalSet, check_dataset, evaluate
from quantcore.evaluate.runner import ReferenceCache
from quantcore.explore.grid import SweepSpec
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.progress import Stage
from quantcore.report import build as report
from quantcore.spec import QuantSpec

Fraction = Callable[[float], None]
StageProgress = Callable[[Stage, float], None]


@dataclass(frozen=True, kw_only=True)
class LayerBits:
    """What the search needs to know of a quantized layer."""

    name: str
    bits: int
    params: int


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One spec applied to the model: its summary, package size and accuracy."""

    spec: QuantSpec
    summary: dict[str, Any]  # the report's summary block for this spec
    package_bytes: int
    xmax: float | None
    layers: tuple[LayerBits, ...]
    accuracy: AccuracyReport | None

    def row(self, point: dict[str, Any]) -> dict[str, Any]:
        """The report row of this measurement (module docstring)."""
        return {
            "point": dict(point),
            "spec": self.spec.to_dict(),
            "xmax": self.xmax,
            "bits_per_weight": self.summary.get("bits_per_weight"),
            "entropy_bits_per_weight": self.summary.get("entropy_bits_per_weight"),
            "sqnr_db": self.summary.get("sqnr_db"),
            "sqnr_theory_db": self.summary.get("sqnr_theory_db"),
            "package_bytes": self.package_bytes,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
        }


@dataclass(frozen=True, kw_only=True)
class Measurer:
    """Quantizes and evaluates one loaded model spec after spec (shared by sweep and search)."""

    model: pipeline.Model
    model_path: Path
    evalset: EvalSet | None
    batch_size: int
    original_bytes: int
    # Where each point's files are written while it is measured (None: the system's
    # temporary folder); a job passes its own folder, which has room for its outputs.
    work_dir: Path | None = None
    # The float model's outputs, computed at the first point and reused by the next ones.
    reference: ReferenceCache = field(default_factory=ReferenceCache)

    def __call__(self, spec: QuantSpec, progress: Fraction | None = None) -> Measurement:
        # As a quantize job writes it (codes spooled to disk, model and package written a
        # tensor at a time), in a folder that lives for this point only.
        with tempfile.TemporaryDirectory(prefix=".point-", dir=self.work_dir) as folder:
            qmodel, written_files = quantize_written(self.model, spec, Path(folder) / "out",
                                                     Path(folder) / "spool")  # fmt: skip
            size = written_files.sizes[PACKAGE_FILE]
            accuracy = None
            if self.evalset is not None:
                accuracy = evaluate(
                    self.model_path,
                    written_files.model_path,
                    self.evalset,
                    batch_size=self.batch_size,
                    progress=progress,
                    reference=self.reference,
                )
            layers = [w.layer for w in qmodel.weights]
            skipped = len(qmodel.skipped)
            del qmodel  # its codes are views of the spool's file, removed with the folder
        summary = report.json_safe(
            report.summary(
                layers,
                skipped=skipped,
                original_bytes=self.original_bytes,
                artifacts={"model.qpack": size},
            )
        )
        return Measurement(
            spec=spec,
            summary=summary,
            package_bytes=size,
            xmax=_mean_xmax(layers),
            layers=tuple(
                LayerBits(name=w["name"], bits=int(w["bits"]), params=int(w["params"]))
                for w in layers
            ),
            accuracy=accuracy,
        )


def _mean_xmax(layers: Sequence[dict[str, Any]]) -> float | None:
    pairs = [(layer["xmax"], layer["params"]) for layer in layers if layer.get("xmax") is not None]
    total = sum(p for _, p in pairs)
    if not pairs or total == 0:
        return None
    value = sum(x * p for x, p in pairs) / total
    return value if math.isfinite(value) else None


def measurer(
    model_path: Path, dataset_path: Path | None, batch_size: int, work_dir: Path | None = None
) -> Measurer:
    """Load the model once for many measurements, and check the dataset (if any) against it
    before any work; a dataset needs an ONNX model (weights-only files have no graph). Each
    point's files go to a temporary folder in ``work_dir``."""
    model = pipeline.load_model(model_path)
    evalset = None
    if dataset_path is not None:
        if not isinstance(model, OnnxModel):
            raise InvalidDatasetError(
                f"a dataset was given, but {model_path.name!r} holds weights only (no graph to "
                "run); evaluation needs an .onnx model"
            )
        evalset = check_dataset(model.proto, dataset_path)
    return Measurer(
        model=model,
        model_path=model_path,
        evalset=evalset,
        batch_size=batch_size,
        original_bytes=model_path.stat().st_size,
        work_dir=work_dir,
    )


def run_sweep(
    sweep: SweepSpec, measure: Measurer, progress: StageProgress | None = None
) -> list[dict[str, Any]]:
    """Measure every point; returns the report rows in grid order. ``progress`` gets
    (stage, share of the sweep done): quantizing at the start of each point, evaluating while
    its quantized model runs."""
    rows = []
    n = len(sweep.points)
    for i, point in enumerate(sweep.points):
        if progress is not None:
            progress(Stage.QUANTIZING, i / n)

        def evaluating(f: float, i: int = i) -> None:
            if progress is not None:
                progress(Stage.EVALUATING, (i + f) / n)

        rows.append(measure(point.spec, evaluating).row(point.values))
    return rows
