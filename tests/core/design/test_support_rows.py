"""Per-channel thresholds searched for every channel at once equal the one-channel search."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.compress import channel_support
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.design.support import choose_support
from quantcore.design.support_rows import choose_support_rows
from quantcore.errors import InvalidSpecError
from quantcore.spec import Granularity, Method, QuantizerSpec, Rounding, Support

SPECS = [
    QuantizerSpec(bits=4, support=Support.MSE),
    QuantizerSpec(bits=8, support=Support.MSE),
    QuantizerSpec(bits=3, rounding=Rounding.MIDTREAD, support=Support.MSE),
    QuantizerSpec(method=Method.DEADZONE, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.MULAW, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.FLOAT, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=3, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=8, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=1, support=Support.MSE),  # row by row
    QuantizerSpec(bits=4, support=Support.PERCENTILE, support_value=99.5),
    QuantizerSpec(bits=4, support=Support.WMAX),
    QuantizerSpec(bits=4, support=Support.ABS_WMIN),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.method.value}{s.bits}-{s.support}")
def test_channel_thresholds_match_the_one_channel_search(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec
) -> None:
    rng = np.random.default_rng(5)
    w = (rng.standard_t(3, (12, 160)) * 0.05).astype(np.float32)
    w[3] = 0.2  # a constant channel: its data-driven threshold falls back
    w[4, :80] = 0.0
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0)
    monkeypatch.setattr(channel_support, "ROW_SEARCH", False)
    (ref,) = quantize_tensors([req], Granularity.CHANNEL)
    monkeypatch.setattr(channel_support, "ROW_SEARCH", True)
    (fast,) = quantize_tensors([req], Granularity.CHANNEL)
    assert fast.report == ref.report
    assert fast.notes == ref.notes
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert np.array_equal(fast.quantized.dequantized.view(np.uint32),
                          ref.quantized.dequantized.view(np.uint32))  # fmt: skip


def test_rows_equal_choose_support_row_by_row() -> None:
    rows = np.random.default_rng(2).laplace(size=(7, 301))
    rows[2] = 0.0
    for support, value in ((Support.PERCENTILE, 37.3), (Support.MAX_ABS, None),
                           (Support.WMAX, None), (Support.HUI, None)):  # fmt: skip
        got = choose_support_rows(support, levels=16, rows=rows, value=value)
        want = [choose_support(support, levels=16, normalized=r, value=value) for r in rows]
        assert got == want


def test_mse_rows_need_a_measurement() -> None:
    with pytest.raises(InvalidSpecError, match="error_at"):
        choose_support_rows(Support.MSE, levels=16, rows=np.ones((2, 3)))


def test_batched_measurement_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measuring a few rows at a time (bounded memory) changes no threshold."""
    from quantcore.quantizers import measure

    rows = np.random.default_rng(9).laplace(size=(9, 200)).astype(np.float32)
    spec = QuantizerSpec(bits=4, support=Support.MSE)
    whole = measure.SampleErrors(spec, rows)(np.linspace(0.5, 4.0, 9), np.arange(9))
    monkeypatch.setattr(measure, "_BATCH", 400)  # two rows a batch
    batched = measure.SampleErrors(spec, rows)(np.linspace(0.5, 4.0, 9), np.arange(9))
    assert np.array_equal(whole, batched)


LAYER_SPECS = [
    QuantizerSpec(bits=4, support=Support.MSE),
    QuantizerSpec(bits=3, rounding=Rounding.MIDTREAD, support=Support.MSE),
    QuantizerSpec(method=Method.MULAW, bits=8, support=Support.MSE),
    QuantizerSpec(method=Method.FLOAT, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=4, support=Support.MSE),
    QuantizerSpec(method=Method.LOG, bits=1, support=Support.MSE),  # one quantize a point
]


@pytest.mark.parametrize("spec", LAYER_SPECS, ids=lambda s: f"{s.method.value}{s.bits}")
@pytest.mark.parametrize("granularity", [Granularity.LAYER, Granularity.MODEL])
def test_layer_thresholds_match_the_one_point_at_a_time_search(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec, granularity: Granularity
) -> None:
    """A layer's (or a model's) mse search measures its grid in one batch: the same
    threshold, so the same codes, as quantizing at each point in turn."""
    rng = np.random.default_rng(7)
    weights = [(rng.standard_t(3, (40, 90)) * 0.05).astype(np.float32),
               (rng.laplace(size=(30, 64)) * 0.2).astype(np.float32)]  # fmt: skip
    reqs = [TensorRequest(name=f"w{k}", weights=w, quantizer=spec, channel_axis=0)
            for k, w in enumerate(weights)]  # fmt: skip
    monkeypatch.setattr(channel_support, "ROW_SEARCH", False)
    ref = quantize_tensors(reqs, granularity)
    monkeypatch.setattr(channel_support, "ROW_SEARCH", True)
    fast = quantize_tensors(reqs, granularity)
    for f, r in zip(fast, ref, strict=True):
        assert f.report == r.report
        assert np.array_equal(f.quantized.codes, r.quantized.codes)


@pytest.mark.parametrize("method", [Method.UNIFORM, Method.LOG])
def test_a_layer_measured_on_every_other_weight_keeps_its_threshold(
    monkeypatch: pytest.MonkeyPatch, method: Method
) -> None:
    """Over ``MSE_LIMIT`` weights the search measures a strided subsample, the same one
    either way."""
    from quantcore.compress import thresholds

    w = (np.random.default_rng(4).laplace(size=(50, 61)) * 0.1).astype(np.float32)
    spec = QuantizerSpec(method=method, bits=4, support=Support.MSE)
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0)
    (every,) = quantize_tensors([req], Granularity.LAYER)
    monkeypatch.setattr(thresholds, "MSE_LIMIT", 1000)
    monkeypatch.setattr(channel_support, "ROW_SEARCH", False)
    (ref,) = quantize_tensors([req], Granularity.LAYER)
    monkeypatch.setattr(channel_support, "ROW_SEARCH", True)
    (fast,) = quantize_tensors([req], Granularity.LAYER)
    assert fast.report == ref.report
    assert fast.report.xmax != every.report.xmax  # the subsample was measured


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_log_channels_searched_with_their_shared_codebook_never_lose_to_max_abs(
    bits: int,
) -> None:
    """A tensor's channels share one exponential codebook: each channel's ``mse`` threshold
    is searched with that codebook, so the layer's error is at most ``max_abs``'s (a search
    with a codebook fitted to each channel alone chose thresholds for a quantizer the layer
    does not use, and lost to ``max_abs`` on such heavy-tailed channels)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_t(4, (48, 512)) * rng.uniform(0.02, 0.2, (48, 1))).astype(np.float32)
    sqnr = {}
    for support in (Support.MAX_ABS, Support.MSE):
        spec = QuantizerSpec(method=Method.LOG, bits=bits, support=support)
        req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0)
        (out,) = quantize_tensors([req], Granularity.CHANNEL)
        sqnr[support] = out.report.sqnr_db
    assert sqnr[Support.MSE] > sqnr[Support.MAX_ABS] + 0.02
