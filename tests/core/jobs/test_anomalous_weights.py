"""Weights no trained model should have but corrupt or careless uploads do (one weight of
4.5e20 or ±3e38, rows of denormals, all zeros, a constant): every spec family still finishes
the job, writes a report that is strict JSON, and a package that restores ``model.onnx``
byte for byte. Two of these failed jobs before ("math domain error" from a noise sum that
overflowed float32, and from outputs that quantization made infinite); a channel of
denormals sent its zeros to NaN."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantcore import JobInput, JobKind, run_job, unpack_file
from tests import models

pytestmark = pytest.mark.slow


def _one_huge(value: float) -> Callable[[np.ndarray], None]:
    def put(w: np.ndarray) -> None:
        w.reshape(-1)[w.size // 3] = value

    return put


def _opposite_extremes(w: np.ndarray) -> None:
    w.reshape(-1)[1], w.reshape(-1)[-2] = 3.0e38, -3.0e38


def _denormal_row(w: np.ndarray) -> None:
    w[0] *= np.float32(1e-40)


def _all_denormal(w: np.ndarray) -> None:
    w *= np.float32(1e-41)


def _zeros(w: np.ndarray) -> None:
    w[...] = 0.0


def _constant(w: np.ndarray) -> None:
    w[...] = 0.37


ANOMALIES = {"4.5e20": _one_huge(4.5e20), "3e38": _one_huge(3.0e38),
             "+-3e38": _opposite_extremes, "denormal row": _denormal_row,
             "denormals": _all_denormal, "zeros": _zeros, "constant": _constant}  # fmt: skip
SPECS = [
    {"bits": 8},
    {"bits": 4},
    {"bits": 4, "granularity": "channel", "support": "mse"},
    {"bits": 4, "granularity": "group", "group_size": 32},
    {"target": {"weight_sqnr_db": 30}, "rdoq": "auto"},
    {"target": {"bits_per_weight": 2}},
    {"bits": 8, "method": "mulaw"},
    {"method": "float"},
]


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return models.cnn(channels=(3, 16, 32), seed=4)


@pytest.mark.parametrize("anomaly", ANOMALIES)
def test_every_spec_finishes_and_its_package_restores_the_model(
    tmp_path: Path, float_model: onnx.ModelProto, anomaly: str
) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    tensor = next(t for t in model.graph.initializer if t.name == "conv1.weight")
    weights = numpy_helper.to_array(tensor).copy()
    ANOMALIES[anomaly](weights)
    tensor.CopyFrom(numpy_helper.from_array(weights, tensor.name))
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    for k, spec in enumerate(SPECS):
        out = tmp_path / f"out{k}"
        job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec)
        report = run_job(job, out).report
        json.dumps(report, allow_nan=False)  # what the API serves: no NaN or Infinity
        restored = tmp_path / f"restored{k}.onnx"
        unpack_file(out / "model.qpack", restored)
        assert restored.read_bytes() == (out / "model.onnx").read_bytes(), spec
        fidelity = report["fidelity"]
        if fidelity["output_sqnr_db"] is None and fidelity["agreement"] != 1.0:
            assert report["warnings"], (spec, fidelity)  # a broken model never passes silently
