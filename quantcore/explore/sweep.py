"""``sweep`` jobs: one model quantized at every point of a grid, one report row per point.

The spec and how its grid expands: ``quantcore.explore.grid``. The model is loaded once; each
point is quantized and packed in memory (nothing written), and, with a dataset, the quantized
model is evaluated against the float one. Only the current point's quantized model is held,
so memory does not grow with the number of points.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from quantcore.compress import pipeline
from quantcore.errors import InvalidDatasetError
from quantcore.evaluate import AccuracyReport, EvalSet, check_dataset, evaluate
from quantcore.evaluate.runner import ReferenceCache
from quantcore.explore.grid import SweepSpec
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.formats.onnx_writer import MAX_INLINE_BYTES, save_onnx, serialize
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
    # The float model's outputs, computed at the first point and reused by the next ones.
    reference: ReferenceCache = field(default_factory=ReferenceCache)

    def __call__(self, spec: QuantSpec, progress: Fraction | None = None) -> Measurement:
        qmodel = pipeline.quantize_model(self.model, spec)
        written = pipeline.build_onnx(qmodel)
        size = len(pipeline.package(qmodel, written).data)
        layers = [w.layer for w in qmodel.weights]
        summary = report.json_safe(
            report.summary(
                layers,
                skipped=len(qmodel.skipped),
                original_bytes=self.original_bytes,
                artifacts={"model.qpack": size},
            )
        )
        accuracy = None
        if self.evalset is not None:
            with _runnable(written.proto) as quantized:
                accuracy = evaluate(
                    self.model_path,
                    quantized,
                    self.evalset,
                    batch_size=self.batch_size,
                    progress=progress,
                    reference=self.reference,
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


@contextmanager
def _runnable(proto: onnx.ModelProto) -> Iterator[bytes | Path]:
    """The quantized model as onnxruntime takes it: bytes, or past protobuf's 2 GB limit a
    file with external data in a temporary folder (removed afterwards)."""
    if proto.ByteSize() < MAX_INLINE_BYTES:
        yield serialize(proto)
        return
    with tempfile.TemporaryDirectory(prefix="quantserve-eval-") as folder:
        path = Path(folder) / "model.onnx"
        save_onnx(proto, path)
        yield path


def _mean_xmax(layers: Sequence[dict[str, Any]]) -> float | None:
    pairs = [(layer["xmax"], layer["params"]) for layer in layers if layer.get("xmax") is not None]
    total = sum(p for _, p in pairs)
    if not pairs or total == 0:
        return None
    value = sum(x * p for x, p in pairs) / total
    return value if math.isfinite(value) else None


def measurer(model_path: Path, dataset_path: Path | None, batch_size: int) -> Measurer:
    """Load the model once for many measurements, and check the dataset (if any) against it
    before any work; a dataset needs an ONNX model (weights-only files have no graph)."""
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
