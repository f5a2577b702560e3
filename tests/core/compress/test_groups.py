"""Granularity ``group`` and the ``auto`` default: blocks along the reduction axis."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest

from quantcore import JobInput, JobKind, run_job
from quantcore.compress import group_compiled, group_numpy
from quantcore.compress.group_numpy import _blocks, _grid, block_grid
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.quantizers.codes import BlockDecoder, decode
from quantcore.spec import Granularity, Method, QuantizerSpec, Support
from tests import models


def folded_bn_conv(seed: int = 0) -> np.ndarray:
    """A Conv kernel whose output channels' ranges span 100x, as batch-norm folding leaves."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(0.0, 1.0, (64, 32, 3, 3)).astype(np.float32)
    return w * np.logspace(-2, 0, 64, dtype=np.float32)[:, None, None, None]


def quantize(
    w: np.ndarray, granularity: Granularity, *, bits: int, block_axis: int | None = 1,
    trailing: bool = True, **fields: object,
):  # type: ignore[no-untyped-def]
    spec = QuantizerSpec(bits=bits, **fields).resolved()  # type: ignore[arg-type]
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0,
                        block_axis=block_axis, block_trailing=trailing)  # fmt: skip
    (result,) = quantize_tensors([req], granularity)
    return result


def channel_sqnr_db(w: np.ndarray, wq: np.ndarray) -> np.ndarray:
    rows, err = w.reshape(w.shape[0], -1), (w - wq).reshape(w.shape[0], -1)
    return 10 * np.log10((rows**2).sum(1) / (err**2).sum(1))


def test_groups_keep_small_channels_that_one_layer_scale_destroys() -> None:
    w = folded_bn_conv()
    layer = quantize(w, Granularity.LAYER, bits=8)
    auto = quantize(w, Granularity.AUTO, bits=8, support=Support.MAX_ABS)
    assert channel_sqnr_db(w, layer.quantized.dequantized).min() < 20
    assert channel_sqnr_db(w, auto.quantized.dequantized).min() > 38
    assert (auto.report.granularity, auto.report.group_size) == ("group", 128)


def test_auto_uses_groups_of_32_below_6_bits() -> None:
    result = quantize(folded_bn_conv(), Granularity.AUTO, bits=4, support=Support.MAX_ABS)
    assert result.report.group_size == 32
    decoder = result.quantized.decoder
    assert isinstance(decoder, BlockDecoder)
    # (O, I, kh, kw) viewed as (O, I*kh*kw): blocks run over input channels and window.
    assert decoder.view == (64, 288) and decoder.scale.shape == (64, 9)
    assert decoder.scale.dtype == np.float16


def test_a_rare_large_weight_stays_within_half_a_step() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_t(3, size=(16, 256)).astype(np.float32) * 0.05
    w[3, 17] = 4.0  # 80 times the spread
    result = quantize(w, Granularity.GROUP, bits=4, block_axis=1, trailing=False,
                      support=Support.MAX_ABS)  # fmt: skip
    decoder = result.quantized.decoder
    assert isinstance(decoder, BlockDecoder)
    step = float(decoder.scale[3, 0])
    assert abs(result.quantized.dequantized[3, 17] - 4.0) <= step / 2
    # Every other block keeps its own fine step.
    assert float(np.median(decoder.scale.astype(np.float32))) < step / 10


def test_block_sums_are_kept_within_half_a_step() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(32, 256)).astype(np.float32)
    result = quantize(w, Granularity.GROUP, bits=4, block_axis=1, trailing=False,
                      support=Support.MAX_ABS)  # fmt: skip
    decoder = result.quantized.decoder
    assert isinstance(decoder, BlockDecoder)
    error = (result.quantized.dequantized - w).reshape(32, 8, 32).sum(axis=2)
    assert np.all(np.abs(error) <= decoder.scale.astype(np.float32) / 2 + 1e-6)


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("method", [Method.UNIFORM, Method.MULAW, Method.DEADZONE])
def test_ragged_blocks_decode_and_measure_consistently(method: Method, zero_point: bool) -> None:
    w = np.random.default_rng(3).laplace(size=(10, 120)).astype(np.float32)  # 120 = 3.75 x 32
    spec = QuantizerSpec(method=method, bits=4, support=Support.MSE).resolved()
    req = TensorRequest(name="w", weights=w, quantizer=spec, block_axis=1)
    (result,) = quantize_tensors([req], Granularity.GROUP, zero_point=zero_point)
    q = result.quantized
    assert q.decoder.scale.shape == (10, 4)  # type: ignore[union-attr]
    np.testing.assert_array_equal(decode(q.codes, q.decoder), q.dequantized)
    sqnr = 10 * math.log10(float(np.mean(w.astype(np.float64) ** 2))
                           / float(np.mean((w - q.dequantized).astype(np.float64) ** 2)))
    assert result.report.sqnr_db == pytest.approx(sqnr, abs=1e-6)
    assert q.code_min <= int(q.codes.min()) and int(q.codes.max()) <= q.code_max


@pytest.mark.parametrize("bits", [4, 8])
def test_mu_law_blocks_are_rescaled_to_their_codes(bits: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each block's scale is refitted by least squares to its codes: the error is orthogonal
    to the values (the mu-law levels alone left every block 3% small at 4 bits, 0.6% at 8)
    and the weights' SQNR is higher."""
    w = folded_bn_conv()

    def sqnr_and_bias() -> tuple[float, float]:
        result = quantize(w, Granularity.GROUP, bits=bits, method=Method.MULAW,
                          support=Support.MAX_ABS)  # fmt: skip
        q, x = result.quantized.dequantized.astype(np.float64), w.astype(np.float64)
        return result.report.sqnr_db, float(((x - q) * q).sum() / (q * q).sum())

    fitted, bias = sqnr_and_bias()
    grid = group_numpy._grid

    def plain_grid(*args):  # type: ignore[no-untyped-def]
        return dataclasses.replace(grid(*args), refit=False)

    for module in (group_numpy, group_compiled):  # the compiled path's own name for it
        monkeypatch.setattr(module, "_grid", plain_grid)
    plain, plain_bias = sqnr_and_bias()
    assert abs(bias) < 1e-3 < 5e-3 < plain_bias, (bias, plain_bias)
    assert fitted > plain + 0.2, (fitted, plain)


def _quantized_params(report: dict) -> int:  # type: ignore[type-arg]
    return int(report["summary"]["quantized_params"])


@pytest.mark.parametrize("opset", [13, 21])
def test_the_runnable_model_shrinks_with_its_bits(tmp_path, opset: int) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(models.mlp(sizes=(256, 512, 512, 256), opset=opset, use_matmul=True), path)
    original = path.stat().st_size
    sizes = {}
    for bits in (8, 4):
        out = run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": bits}),
                      tmp_path / str(bits))  # fmt: skip
        params = _quantized_params(out.report)
        group = 128 if bits == 8 else 32
        # codes, a float16 scale and a zero point (in the codes' container) per group
        budget = params * (bits + (16 + bits) / group) / 8 + (original - 4 * params)
        sizes[bits] = (tmp_path / str(bits) / "model.onnx").stat().st_size
        assert sizes[bits] <= 1.03 * budget, (bits, sizes[bits], budget)
        containers = {row["container"] for row in out.report["layers"]}
        assert containers == ({"uint8"} if bits == 8 else {"uint4"})
    assert sizes[4] < 0.6 * sizes[8]


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_a_uniform_grid_reads_no_sample(bits: int, zero_point: bool) -> None:
    # The compiled path draws no sample of the weights for the uniform grids.
    spec = QuantizerSpec(method=Method.UNIFORM, bits=bits)
    drawn = np.random.default_rng(bits).laplace(size=4096).astype(np.float32)
    assert _grid(spec, zero_point, np.empty(0, np.float32)) == _grid(spec, zero_point, drawn)


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize(
    "support", [Support.MAX_ABS, Support.JAYANT, Support.MSE, Support.PERCENTILE]
)
def test_block_grid_gives_the_block_quantizers_scales(support: Support, zero_point: bool) -> None:
    """GPTQ's requantizer takes each block's grid from ``block_grid``: the scales and zero
    points ``_blocks`` gives, without its codes."""
    rng = np.random.default_rng(3)
    x = (rng.laplace(0.0, 0.05, (40, 1, 32)) * rng.uniform(0.1, 3, (40, 1, 1))).astype(np.float32)
    x[0] = 0.0  # a block of zeros has scale 0
    x[1] = np.abs(x[1])  # a block of positive weights only
    value = 99.0 if support is Support.PERCENTILE else None
    spec = QuantizerSpec(bits=4, support=support, support_value=value).resolved()
    grid = _grid(spec, zero_point, np.zeros(1, np.float32))
    scale, zp = block_grid(x, 2, spec, grid)
    _, want_scale, want_zp, *_ = _blocks(x, 2, spec, grid)
    assert scale.tobytes() == want_scale.tobytes()
    assert (zp is None) == (want_zp is None)
    if zp is not None and want_zp is not None:
        assert zp.dtype == want_zp.dtype and zp.tobytes() == want_zp.tobytes()


@pytest.mark.parametrize(("bits", "size", "support"), [
    (3, 32, Support.MSE), (4, 32, Support.MAX_ABS), (4, 32, Support.JAYANT),
    (8, 128, Support.MAX_ABS), (8, 32, Support.MAX_ABS),
])  # fmt: skip
@pytest.mark.parametrize("zero_point", [True, False])
def test_theory_tracks_the_measured_sqnr_of_laplacian_blocks(
    bits: int, size: int, support: Support, zero_point: bool
) -> None:
    """Given its own extremes, a block has no weight beyond them: so modelled, the closed form
    lands within a dB of the measurement on Laplacian weights with a zero point (the
    default), within 2.5 with symmetric blocks (whose per-block clip search picks the clip
    that suits the block's extremes); charged for the Laplacian's unrestricted tail it was
    3 to 30 dB low."""
    w = np.random.default_rng(3).laplace(size=(256, 4096)).astype(np.float32)
    req = TensorRequest(name="w", weights=w, quantizer=QuantizerSpec(bits=bits, support=support),
                        channel_axis=0, block_axis=1)  # fmt: skip
    (result,) = quantize_tensors([req], Granularity.GROUP, group_size=size,
                                 zero_point=zero_point)  # fmt: skip
    report = result.report
    assert report.sqnr_theory_db is not None
    gap = report.sqnr_theory_db - report.sqnr_db
    assert abs(gap) < (1.0 if zero_point else 2.5), (report.sqnr_theory_db, report.sqnr_db)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_log_blocks_fit_their_codebook_to_the_weights_as_the_blocks_scale_them(
    bits: int,
) -> None:
    """The exponential codebook is fitted to each weight divided by its block's largest
    magnitude: blocks of 32 then beat one threshold per channel. Fitted to the weights divided
    by the tensor's largest magnitude, its levels crowd near zero where the blocks' weights
    are not (at 6 bits 13.5 dB against 20.1 per channel on these weights)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_t(4, (48, 512)) * rng.uniform(0.02, 0.2, (48, 1))).astype(np.float32)
    spec = QuantizerSpec(method=Method.LOG, bits=bits, support=Support.MAX_ABS)
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0, block_axis=1)
    (blocks,) = quantize_tensors([req], Granularity.GROUP, group_size=32)
    (channels,) = quantize_tensors([req], Granularity.CHANNEL)
    assert blocks.report.sqnr_db > channels.report.sqnr_db + 1.5
