"""The smallest weights stay in float within the spec's ``keep_small`` share of the codes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from quantcore.errors import InvalidSpecError
from quantcore.formats.roles import Candidate, Role, select
from quantcore.formats.small_weights import kept_small
from quantcore.spec import DEFAULT_KEEP_SMALL, QuantSpec
from tests import models
from tests.core.jobs.calibration_helpers import quantize_job


def _weights(*sizes: int, dtype: str = "float32") -> list[Candidate]:
    return [Candidate(name=f"w{i}", dtype=dtype, size=size, role=Role.WEIGHT, used_by="MatMul")
            for i, size in enumerate(sizes)]  # fmt: skip


def test_the_smallest_weights_stay_float_while_they_fit_the_budget() -> None:
    # 8 bits: codes of 110,300 bytes, 1% of them 1,103; a float32 weight adds 3 bytes.
    tensors = _weights(100_000, 200, 10_000, 100)
    kept = kept_small(tensors, QuantSpec.from_dict({"bits": 8}))
    assert set(kept) == {"w3", "w1"}  # 300 + 600 bytes; the next (30,000) does not fit
    assert kept["w3"].startswith("100 elements, small: kept in float")
    # At 4 bits the codes are half as many bytes and a weight adds 3.5: only the first fits.
    assert set(kept_small(tensors, QuantSpec.from_dict({"bits": 4}))) == {"w3"}
    # float16 weights add 1 byte each at 8 bits: the budget takes all three small ones.
    half = _weights(100_000, 200, 400, 100, dtype="float16")
    assert set(kept_small(half, QuantSpec.from_dict({"bits": 8}))) == {"w3", "w1", "w2"}


def test_the_budget_is_a_prefix_of_the_sizes_ties_by_name() -> None:
    tensors = [Candidate(name=n, dtype="float32", size=100, role=Role.WEIGHT, used_by="Conv")
               for n in ("b", "a", "c")] + _weights(60_000)  # fmt: skip
    # 1% of 60,300 code bytes is 603: two of the three 300-byte tensors, by name.
    assert set(kept_small(tensors, QuantSpec.from_dict({"bits": 8}))) == {"a", "b"}


def test_include_overrides_and_zero_turn_it_off_where_asked() -> None:
    tensors = _weights(100_000, 100, 200)
    assert kept_small(tensors, QuantSpec.from_dict({"keep_small": 0})) == {}
    assert kept_small(tensors, QuantSpec.from_dict({"include": ["w"]})) == {}
    # A tensor an override names is quantized as asked; smaller ones are still kept.
    spec = QuantSpec.from_dict({"bits": 8, "overrides": [{"match": "^w1$", "bits": 6}]})
    assert set(kept_small(tensors, spec)) == {"w2"}


def test_select_names_the_reason_in_skipped() -> None:
    tensors = [*_weights(100_000, 100), Candidate(name="b", dtype="float32", size=100,
                                                  role=Role.BIAS, used_by="Gemm")]  # fmt: skip
    selection = select(tensors, QuantSpec.from_dict({"bits": 8}))
    assert selection.quantize == ("w0",)
    reasons = {s.name: s.reason for s in selection.skipped}
    assert reasons == {
        "w1": "100 elements, small: kept in float (the smallest weights, within "
              "keep_small=0.01 of the quantized weights' bytes)",
        "b": "bias",
    }  # fmt: skip


@pytest.mark.parametrize("value", [-0.1, 0.6, "a lot", None, float("nan")])
def test_keep_small_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(InvalidSpecError, match="keep_small"):
        QuantSpec.from_dict({"keep_small": value})


def test_the_spec_reads_back_with_its_default() -> None:
    assert QuantSpec.from_dict({}).to_dict()["keep_small"] == DEFAULT_KEEP_SMALL
    assert QuantSpec.from_dict({"keep_small": 0.05}).to_dict()["keep_small"] == 0.05


def test_a_small_layer_stays_float_in_the_runnable_model(tmp_path) -> None:
    """conv0 (216 weights, 648 bytes more in float) of a CNN with 84,184 weights stays a
    float initializer of model.onnx, which onnxruntime runs; with keep_small 0 it is
    quantized like the rest."""
    model = models.cnn(channels=(3, 8, 1024))
    report, written = quantize_job(tmp_path, model, {"bits": 8}, "kept")
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert reasons["conv0.weight"].startswith("216 elements, small: kept in float")
    assert "conv0.weight" not in {row["name"] for row in report["layers"]}
    out = onnx.load(str(written))
    stored = {t.name: t for t in out.graph.initializer}
    original = {t.name: t for t in model.graph.initializer}["conv0.weight"]
    np.testing.assert_array_equal(numpy_helper.to_array(stored["conv0.weight"]),
                                  numpy_helper.to_array(original))  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, {session.get_inputs()[0].name: x})[0]).all()

    every, _ = quantize_job(tmp_path, model, {"bits": 8, "keep_small": 0}, "every")
    assert "conv0.weight" in {row["name"] for row in every["layers"]}


def test_a_target_keeps_every_selected_weight() -> None:
    """A rate or distortion goal is met by every selected weight's step: none is kept out."""
    tensors = _weights(100_000, 100)
    for target in ({"weight_sqnr_db": 30}, {"bits_per_weight": 3}):
        assert kept_small(tensors, QuantSpec.from_dict({"target": target})) == {}
