"""Rate–distortion allocation (spec ``target``) and RDOQ, end to end on real ONNX models.

The written ``model.onnx`` must decode to the values the report measures, ``model.qpack`` must
unpack to it byte for byte, and the targets must hold on the whole tensors.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantcore import JobInput, JobKind, JobOutput, run_job
from quantcore.compress import rdoq_choice
from quantcore.compress.allocate import TensorSample, allocate, sample_tensor
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.pipeline import QuantizedModel, package_size, quantize_model
from quantcore.compress.rdoq import RDOQ_MU, rdoq_result
from quantcore.compress.rdoq_choice import probe_names
from quantcore.compress.results import TensorRequest, TensorResult
from quantcore.formats.load import load_model
from quantcore.formats.qpack import unpack
from quantcore.spec import Granularity, QuantizerSpec, QuantSpec, Rounding
from quantcore.target import RateTarget
from tests import models
from tests.core.formats.onnx_helpers import run, with_weights

X = {"x": np.random.default_rng(3).normal(size=(8, 64)).astype(np.float32)}
SIZES = (64, 256, 128, 10)


def _spread_mlp(path: Path) -> onnx.ModelProto:
    """An MLP whose layers' spreads differ 20x (as after batch-norm folding)."""
    model = models.mlp(SIZES, seed=5)
    for i, init in enumerate(model.graph.initializer):
        if init.name.endswith(".weight"):
            w = onnx.numpy_helper.to_array(init) * (20.0 if i == 0 else 1.0)
            init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(model, path)
    return model


def _job(path: Path, out: Path, spec: dict) -> JobOutput:
    return run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec), out)


def _check_written(model: onnx.ModelProto, path: Path, out: JobOutput) -> None:
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict(out.report["spec"]))
    values = {w.name: w.dequantized() for w in qmodel.weights}
    written, package = out.artifacts[0], out.artifacts[1]
    got = run(onnx.load(written), X)[0]
    np.testing.assert_allclose(got, run(with_weights(model, values), X)[0], rtol=1e-5, atol=1e-6)
    assert unpack(package.read_bytes())[1] == written.read_bytes()
    assert package.stat().st_size == package_size(qmodel)


def test_sqnr_target_is_met_with_one_common_step(tmp_path: Path) -> None:
    model = _spread_mlp(tmp_path / "m.onnx")
    out = _job(tmp_path / "m.onnx", tmp_path / "out", {"target": {"weight_sqnr_db": 24}})
    block = out.report["allocation"]
    assert block["achieved"]["met"] is True
    assert 24.0 <= out.report["summary"]["sqnr_db"] < 24.3
    steps = [layer["step"] for layer in block["layers"]]
    assert max(steps) / min(steps) < 1 + 1e-6
    bits = {layer["name"]: layer["bits"] for layer in block["layers"]}
    assert bits["fc0.weight"] > bits["fc1.weight"]  # the wide layer gets more levels
    _check_written(model, tmp_path / "m.onnx", out)


def test_rate_target_and_rdoq(tmp_path: Path) -> None:
    model = _spread_mlp(tmp_path / "m.onnx")
    spec = {"target": {"bits_per_weight": 2.5}, "rdoq": True}
    out = _job(tmp_path / "m.onnx", tmp_path / "out", spec)
    achieved = out.report["allocation"]["achieved"]
    assert achieved["met"] is True and 2.45 < achieved["bits_per_weight"] <= 2.501
    assert out.report["spec"]["target"] == {"bits_per_weight": 2.5}
    _check_written(model, tmp_path / "m.onnx", out)


def test_trellis_target_is_met_decodes_exactly_and_codes_smaller(tmp_path: Path) -> None:
    """``"rdoq": "trellis"``: the SQNR target holds on the whole tensors, the written model
    decodes to the measured values, the package's streams are the trellis's (v12 on the
    32-state machine, or v13 mirrored; tiny tensors on 8 states: v9, v10 or v11) and smaller
    than scalar RDOQ's at the same target."""
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp((64, 512, 256, 10), seed=9), path)
    target = {"target": {"weight_sqnr_db": 26}}
    out = _job(path, tmp_path / "tcq", {**target, "rdoq": "trellis"})
    scalar = _job(path, tmp_path / "rdoq", {**target, "rdoq": True})
    block = out.report["allocation"]
    assert block["trellis"] is True and block["achieved"]["met"] is True
    assert out.report["spec"]["rdoq"] == "trellis"
    assert all(any("trellis: TCQ levels" in n for n in layer["notes"])
               for layer in out.report["layers"])  # fmt: skip
    _check_written(onnx.load(path), path, out)
    package = out.artifacts[1].read_bytes()
    from quantcore.formats.qpack_common import read_header

    header, start = read_header(package)
    versions = {package[start + t["offset"] + 4] for t in header["tensors"]}
    assert versions <= {9, 10, 11, 12, 13} and versions & {12, 13}
    assert len(package) < 0.985 * scalar.artifacts[1].stat().st_size


def test_common_step_beats_equal_bits_at_the_same_sqnr(tmp_path: Path) -> None:
    _spread_mlp(tmp_path / "m.onnx")
    layer = {"bits": 5, "granularity": "layer", "support": "mse"}
    plain = quantize_model(load_model(tmp_path / "m.onnx"), QuantSpec.from_dict(layer))
    signal = sum(float(np.sum(np.square(w.dequantized()))) for w in plain.weights)
    from quantcore.report.build import pooled_sqnr_db

    sqnr = pooled_sqnr_db([w.layer for w in plain.weights], "sqnr_db")
    assert sqnr is not None and signal > 0
    target = QuantSpec.from_dict({"target": {"weight_sqnr_db": round(sqnr, 2) + 0.01}})
    allocated = quantize_model(load_model(tmp_path / "m.onnx"), target)
    assert package_size(allocated) < 0.8 * package_size(plain)


def test_rdoq_moves_codes_toward_zero_and_lowers_the_rate() -> None:
    rng = np.random.default_rng(0)
    w = rng.laplace(0, 0.05, size=(256, 256)).astype(np.float32)
    spec = QuantizerSpec(bits=3, rounding=Rounding.MIDTREAD).resolved()
    (plain,) = quantize_tensors([TensorRequest(name="w", weights=w, quantizer=spec)],
                                Granularity.LAYER)
    tuned = rdoq_result(plain, w)
    delta = tuned.quantized.codes.astype(int) - plain.quantized.codes.astype(int)
    assert set(np.unique(delta)) <= {-1, 0, 1}
    assert np.all(np.abs(tuned.quantized.codes) <= np.abs(plain.quantized.codes))
    assert np.count_nonzero(delta) > 0
    assert tuned.report.entropy_bits < plain.report.entropy_bits - 0.02
    # The trade it makes: distortion (in step² units) plus μ·bits falls.
    step = float(plain.quantized.decoder.scale)

    def cost(result: TensorResult) -> float:
        noise = float(np.sum(np.square(w - result.quantized.dequantized))) / step**2
        return noise + RDOQ_MU * result.report.entropy_bits * w.size

    assert cost(tuned) < cost(plain)
    np.testing.assert_array_equal(tuned.quantized.dequantized,
                                  plain.quantized.decoder.scale * tuned.quantized.codes
                                  + plain.quantized.decoder.offset)  # type: ignore[union-attr]


def test_allocation_gives_the_wider_tensor_more_bits_not_a_coarser_step() -> None:
    rng = np.random.default_rng(1)
    samples: dict[str, TensorSample] = {
        "narrow": sample_tensor(rng.laplace(0, 0.01, 50_000), 1.0, 0),
        "wide": sample_tensor(rng.laplace(0, 0.5, 50_000), 1.0, 1),
    }
    plan = allocate(samples, RateTarget(weight_sqnr_db=30.0), rdoq=False)
    assert 29.99 < plan.predicted_sqnr_db < 30.1
    assert plan.quantizers["wide"].bits > plan.quantizers["narrow"].bits
    assert 0.5 < plan.step / plan.model_step < 2.0  # the closed form seeds it well


def test_report_html_shows_the_allocation(tmp_path: Path) -> None:
    _spread_mlp(tmp_path / "m.onnx")
    out = _job(tmp_path / "m.onnx", tmp_path / "out", {"target": {"weight_sqnr_db": 20}})
    page = next(p for p in out.artifacts if p.name == "report.html").read_text()
    assert "Rate–distortion allocation" in page and "fc1.weight" in page
    assert "achieved.met" in page


def test_all_zero_weights_are_coded_exactly() -> None:
    samples = {"z": sample_tensor(np.zeros((32, 32), np.float32), 1.0, 0)}
    for target in (RateTarget(weight_sqnr_db=30.0), RateTarget(bits_per_weight=2.0)):
        plan = allocate(samples, target, rdoq=True)
        assert plan.predicted_bits_per_weight == 0.0 and plan.notes == ("every weight is zero",)


@pytest.mark.parametrize(("sqnr", "chosen"), [(6, "scalar"), (26, "trellis")])
def test_rdoq_auto_keeps_the_smaller_of_trellis_and_scalar(
    tmp_path: Path, sqnr: float, chosen: str
) -> None:
    """``"rdoq": "auto"`` codes the model both ways (here every tensor: under the probe's
    size) and keeps the smaller; at a low rate that is scalar RDOQ (by more than
    ``SCALAR_SAVING``), at 26 dB TCQ."""
    path = tmp_path / "m.onnx"
    onnx.save(models.mlp((64, 512, 256, 10), seed=9), path)

    def run(rdoq: object) -> tuple[QuantizedModel, int]:
        spec = QuantSpec.from_dict({"target": {"weight_sqnr_db": sqnr}, "rdoq": rdoq})
        qmodel = quantize_model(load_model(path), spec)
        return qmodel, sum(len(w.body) for w in qmodel.weights)

    auto, auto_bytes = run("auto")
    (scalar, scalar_bytes), (trellis, trellis_bytes) = run(True), run("trellis")
    assert auto_bytes == min(scalar_bytes, trellis_bytes)
    assert rdoq_choice.trellis_wins(trellis_bytes, scalar_bytes) is (chosen == "trellis")
    same = trellis if chosen == "trellis" else scalar  # the probe's tensors, kept as coded
    assert all(np.array_equal(a.codes, b.codes) and a.body == b.body and a.layer == b.layer
               for a, b in zip(auto.weights, same.weights, strict=True))  # fmt: skip
    assert auto.distribution == same.distribution
    assert auto.allocation is not None and auto.allocation.choice == {
        "chosen": chosen, "probe_tensors": 3, "probe_weights": 64 * 512 + 512 * 256 + 256 * 10,
        "trellis_bytes": trellis_bytes, "scalar_bytes": scalar_bytes,
    }  # fmt: skip
    assert auto.allocation.trellis is (chosen == "trellis") and auto.allocation.rdoq
    assert any(n.startswith(f'rdoq "auto": {chosen} RDOQ') for n in auto.allocation.notes)
    assert auto.spec.to_dict()["rdoq"] == "auto"


def test_scalar_rdoq_must_save_its_share_to_be_chosen() -> None:
    """Ties and small savings keep the trellis, whose packages decode faster."""
    saving = rdoq_choice.SCALAR_SAVING
    assert rdoq_choice.trellis_wins(10_000, 10_000)
    assert rdoq_choice.trellis_wins(10_000, round(10_000 * (1 - saving / 2)))
    assert not rdoq_choice.trellis_wins(10_000, round(10_000 * (1 - 2 * saving)))
    assert not rdoq_choice.trellis_wins(10_000, 9_000)
    kept = rdoq_choice.RdoqChoice(trellis=True, probe_tensors=2, probe_weights=500,
                                  trellis_bytes=10_000, scalar_bytes=9_950)  # fmt: skip
    assert "scalar saves under 2%" in kept.note()
    smaller = dataclasses.replace(kept, scalar_bytes=10_050)
    assert "saves under" not in smaller.note()


def test_the_probe_is_whole_tensors_spread_over_the_weights() -> None:
    """Past 4M weights the probe is the tensors holding 32 evenly spaced weights: the large
    ones always, and every part of the model."""
    sizes = {"embed": 3_000_000, **{f"t{i}": 50_000 for i in range(60)}, "head": 1_000_000}
    probe = probe_names(list(sizes), sizes)
    assert probe[0] == "embed" and probe[-1] == "head"
    assert 12 <= len(probe) - 2 <= 15  # 3M of 7M weights in 60 tensors: 3/7 of 32 marks
    assert probe_names(list(sizes)[1:40], sizes) == list(sizes)[1:40]  # under 4M: all
    # A large model: fewer marks until the probe holds at most 32M weights.
    big = {f"b{i}": 5_000_000 for i in range(100)}
    probe = probe_names(list(big), big)
    assert sum(big[n] for n in probe) <= 32_000_000 and len(probe) == 4


def test_a_target_beyond_the_widest_tensors_16_bits_stops_at_its_finest_step() -> None:
    # One weight 5000x the others' scale: under max/32767 its codes would need more than 16
    # bits, it would clip and the error would grow again (the search ran on to a step of 0).
    rng = np.random.default_rng(2)
    wide = rng.laplace(0, 0.01, 50_000)
    wide[7] = 50.0
    samples = {"wide": sample_tensor(wide, 1.0, 0),
               "narrow": sample_tensor(rng.laplace(0, 0.01, 50_000), 1.0, 1)}  # fmt: skip
    for trellis in (False, True):
        plan = allocate(samples, RateTarget(weight_sqnr_db=90.0), rdoq=True, trellis=trellis)
        assert plan.step == pytest.approx(50.0 / 32767)
        assert plan.quantizers["wide"].bits == 16
        assert plan.predicted_sqnr_db < 90.0
        assert len(plan.notes) == 1 and "out of reach" in plan.notes[0]
    reachable = allocate(samples, RateTarget(weight_sqnr_db=40.0), rdoq=True)
    assert reachable.notes == () and reachable.predicted_sqnr_db >= 40.0
    rate = allocate(samples, RateTarget(bits_per_weight=20.0), rdoq=False)
    assert rate.step == pytest.approx(50.0 / 32767) and "is more than" in rate.notes[0]
