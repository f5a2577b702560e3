"""The streaming pipeline (``quantcore.compress.stream``) against the in-memory one.

The same model quantized both ways gives the same ``model.onnx`` (and ``.data``) and
``model.qpack`` bytes and the same report rows; the streaming path keeps no codes in memory
(they are views of the spool's codes file) and the package it writes unpacks to the model
byte for byte.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantcore.compress.artifacts import write_artifacts
from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.formats.qpack import unpack_file
from quantcore.spec import QuantSpec
from tests import models
from tests.core.compress.streaming import same_files
from tests.core.compress.streaming import streamed as stream_through
from tests.core.formats.onnx_helpers import run


def external_mlp(folder: Path, *, widths: tuple[int, ...] = (256, 1024, 1024, 512, 64)) -> Path:
    """An MLP of ``widths`` (a few MB of float32) whose weights and biases are external data,
    written tensor by tensor with onnx.helper."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    inits, nodes, offset, current = [], [], 0, "x"
    with (folder / "model.onnx.data").open("wb") as data:
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            for name, shape in ((f"w{i}", (n_in, n_out)), (f"b{i}", (n_out,))):
                values = (rng.laplace(size=shape) / math.sqrt(n_in)).astype(np.float32)
                data.write(values.tobytes())
                tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
                tensor.data_location = TensorProto.EXTERNAL
                for key, value in (("location", "model.onnx.data"), ("offset", offset),
                                   ("length", values.nbytes)):  # fmt: skip
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, str(value)
                offset += values.nbytes
                inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
            out = "y" if i == len(widths) - 2 else f"h{i}"
            nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [out]))
            current = out
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, widths[-1]])], inits,
    )  # fmt: skip
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _both(path: Path, spec: dict, tmp: Path) -> tuple[Path, Path, list, list]:
    """The in-memory artifacts in ``tmp/a``, the streamed ones in ``tmp/b``, and each path's
    report rows."""
    qspec = QuantSpec.from_dict(spec)
    memory = quantize_model(load_model(path), qspec)
    write_artifacts(memory, tmp / "a")
    streamed = stream_through(path, qspec, tmp / "spool", tmp / "b")
    for weight in streamed.weights:  # the codes are the spool file's, mapped, not held
        assert isinstance(weight.codes.base, np.ndarray) and not weight.codes.flags.writeable
        assert weight.body == b""
    for a, b in zip(memory.weights, streamed.weights, strict=True):
        np.testing.assert_array_equal(a.codes, b.codes)
    if not (tmp / "b" / "model.onnx.data").exists():  # one file: unpacked byte for byte
        restored = tmp / "restored.onnx"
        unpack_file(tmp / "b" / "model.qpack", restored)
        assert restored.read_bytes() == (tmp / "b" / "model.onnx").read_bytes()
    return tmp / "a", tmp / "b", [w.layer for w in memory.weights], [
        w.layer for w in streamed.weights
    ]


@pytest.mark.parametrize("spec", [{}, {"bits": 4}, {"bits": 3, "granularity": "channel"},
                                  {"bits": 6, "entropy_coding": False}])  # fmt: skip
def test_external_data_model_streams_to_the_same_artifacts(tmp_path, spec):
    path = external_mlp(tmp_path / "in")
    a, b, rows_a, rows_b = _both(path, spec, tmp_path)
    assert same_files(a, b) == ["model.onnx", "model.qpack"]
    assert rows_a == rows_b
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    assert np.isfinite(run(onnx.load(b / "model.onnx"), {"x": x})[0]).all()


@pytest.mark.parametrize("build", [models.if_model, models.loop_model,
                                   lambda: models.with_constant_nodes(models.mlp())])  # fmt: skip
def test_subgraphs_and_constant_nodes_stream_to_the_same_bytes(tmp_path, build):
    path = tmp_path / "m.onnx"
    onnx.save(build(), path)
    a, b, _, _ = _both(path, {"bits": 4}, tmp_path)
    same_files(a, b)


def test_past_the_inline_limit_the_same_external_files(tmp_path, monkeypatch):
    monkeypatch.setattr("quantcore.formats.onnx_writer.MAX_INLINE_BYTES", 64 << 10)
    path = external_mlp(tmp_path / "in")
    a, b, _, _ = _both(path, {"bits": 8}, tmp_path)
    assert same_files(a, b) == ["model.onnx", "model.onnx.data", "model.qpack"]
    restored = tmp_path / "restored" / "model.onnx"
    restored.parent.mkdir()
    unpack_file(b / "model.qpack", restored)
    for name in ("model.onnx", "model.onnx.data"):
        assert (restored.parent / name).read_bytes() == (b / name).read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    got = run(onnx.load(b / "model.onnx"), {"x": x})[0]  # external data read next to it
    assert got.shape == (2, 64) and np.isfinite(got).all()


def test_a_job_over_the_fidelity_budget_leaves_its_artifacts_and_no_spool(tmp_path):
    from quantcore import JobInput, JobKind, JobLimits, run_job

    path = external_mlp(tmp_path / "in")  # 1.9 M parameters
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    out = run_job(job, tmp_path / "out", limits=JobLimits(fidelity_max_params=1_000_000))
    fidelity = out.report["fidelity"]
    assert fidelity["skipped"] == "size_budget" and fidelity["output_sqnr_db"] is None
    assert "1.9 M parameters" in fidelity["reason"]
    assert out.report["warnings"] == [fidelity["reason"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in out.artifacts
    )  # the spool folder is gone, the package moved out of it
    assert (tmp_path / "out" / "report.html").stat().st_size > 0
    restored = tmp_path / "restored.onnx"
    unpack_file(tmp_path / "out" / "model.qpack", restored)
    assert restored.read_bytes() == (tmp_path / "out" / "model.onnx").read_bytes()
    # Under the budget the check runs on the same model.
    again = run_job(job, tmp_path / "again")
    assert again.report["fidelity"]["output_sqnr_db"] is not None
