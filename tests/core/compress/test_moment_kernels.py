"""The compiled per-channel moments (``moment_kernels``) against NumPy's, bit for bit: row
lengths around every leaf and split of the pairwise sum, row counts around the passes of four,
both dtypes, channel axes that are not contiguous, constant rows and bad values."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore.compress import moment_kernels, normalize
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.normalize import CHUNK, ChannelMoments, channel_moments
from quantcore.compress.results import TensorRequest
from quantcore.errors import InvalidTensorError
from quantcore.spec import Granularity, QuantizerSpec

FIELDS = ("mean", "m2", "minimum", "maximum")


def both(monkeypatch: pytest.MonkeyPatch, weights: np.ndarray, axis: int = 0):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(normalize, "USE_KERNELS", False)
    reference = channel_moments("w", weights, axis)
    monkeypatch.setattr(normalize, "USE_KERNELS", True)
    return channel_moments("w", weights, axis), reference


def assert_same(ours: ChannelMoments, reference: ChannelMoments) -> None:
    assert ours.count == reference.count
    for field in FIELDS:
        a, b = getattr(ours, field), getattr(reference, field)
        assert a.dtype == b.dtype == np.float64
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64)), field


def test_the_kernel_is_taken_on_this_machine() -> None:
    """It agrees with this NumPy, so channel jobs run it (a NumPy that sums in another order
    would fail here, and jobs would keep the reference)."""
    kernels = normalize._checked_kernel()
    assert kernels is not None
    assert kernels.contiguous is moment_kernels.row_moments
    assert kernels.strided is moment_kernels.strided_row_moments


LENGTHS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 127, 128, 129, 135, 255, 256, 257, 1000, 1031, 4096,
           8191, 8192, 8193, 30_001]  # fmt: skip


@pytest.mark.parametrize("per", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_row_length_matches_numpy(
    monkeypatch: pytest.MonkeyPatch, per: int, dtype: type
) -> None:
    rng = np.random.default_rng(per)
    channels = 9  # two passes of four rows and one short pass
    scales = rng.uniform(1e-4, 1e2, size=(channels, 1))
    w = (rng.standard_t(3, size=(channels, per)) * scales + rng.normal(size=(channels, 1)))
    assert_same(*both(monkeypatch, w.astype(dtype)))


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 8, 13])
def test_row_counts_around_the_passes(monkeypatch: pytest.MonkeyPatch, channels: int) -> None:
    w = np.random.default_rng(channels).laplace(size=(channels, 77)).astype(np.float32)
    assert_same(*both(monkeypatch, w))


def test_a_row_of_the_chunk_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """The longest rows the kernel takes: the pairwise sum's deepest splits."""
    w = np.random.default_rng(3).normal(3.0, 2.0, size=(2, CHUNK)).astype(np.float32)
    assert_same(*both(monkeypatch, w))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_channel_axes_that_are_not_contiguous(monkeypatch: pytest.MonkeyPatch, axis: int) -> None:
    """Rows side by side in memory (NumPy sums them in sequence) and rows in other layouts
    (NumPy's path) give NumPy's figures."""
    w = np.random.default_rng(axis).laplace(size=(6, 300, 5)).astype(np.float32)
    assert_same(*both(monkeypatch, w, axis))
    assert_same(*both(monkeypatch, np.asfortranarray(w), axis))
    assert_same(*both(monkeypatch, np.ascontiguousarray(np.moveaxis(w, axis, 0)), 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extra", [5, 1])
def test_matmul_output_channels_take_the_strided_kernel(
    monkeypatch: pytest.MonkeyPatch, dtype: type, extra: int
) -> None:
    """A MatMul weight (K, N) per output channel (axis 1): the rows are columns, side by
    side, all through one call of the strided kernel but a last block of a single channel,
    which NumPy sums as a contiguous row (pairwise): the blocks' figures, exactly."""
    rng = np.random.default_rng(9)
    k = 300
    n = 2 * (CHUNK // k) + extra
    w = (rng.standard_t(3, size=(k, n)) * rng.uniform(0.01, 10, size=n)).astype(dtype)
    kernels = normalize._checked_kernel()
    assert kernels is not None
    calls = []

    def counted(rows, *args):  # type: ignore[no-untyped-def]
        calls.append((args[-1], rows.shape[1]))
        kernels.strided(rows, *args)

    monkeypatch.setattr(normalize, "_checked_kernel",
                        lambda: normalize._RowKernels(kernels.contiguous, counted))  # fmt: skip
    ours, reference = both(monkeypatch, w, 1)
    assert_same(ours, reference)
    assert calls == ([(n, k)] if extra > 1 else [(n - 1, k)])


def test_constant_and_zero_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.random.default_rng(4).laplace(size=(6, 50)).astype(np.float32)
    w[1] = 0.0
    w[2] = -0.0
    w[3] = 0.1  # a constant whose sum rounds: its mean is the value itself
    ours, reference = both(monkeypatch, w)
    assert_same(ours, reference)
    assert ours.mean[3] == np.float32(0.1) and ours.m2[1:4].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_bad_value_beside_equal_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    """A row of equal values and one NaN is not a constant row: both paths refuse it and
    name the count of bad values."""
    w = np.ones((5, 40), np.float32)
    w[2, 17] = bad
    messages = []
    for kernels in (False, True):
        monkeypatch.setattr(normalize, "USE_KERNELS", kernels)
        with pytest.raises(InvalidTensorError, match="1 NaN or Inf") as caught:
            channel_moments("w", w, 0)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_float64_beyond_float32_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.ones((4, 20))
    w[1, 3] = 1e39
    with pytest.raises(InvalidTensorError, match="beyond the float32 range"):
        channel_moments("w", w, 0)


def test_a_kernel_that_disagrees_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check once a process: a kernel summing in another order (here, NumPy's ``sum``
    of squares instead of einsum's) leaves the reference in place."""

    def other_order(rows, mean, m2, minimum, maximum, chunk):  # type: ignore[no-untyped-def]
        wide = rows.astype(np.float64)
        minimum[:], maximum[:] = wide.min(axis=1), wide.max(axis=1)
        mean[:] = wide.mean(axis=1)
        m2[:] = np.square(wide - mean[:, None])[:, ::-1].sum(axis=1)

    normalize._checked_kernel.cache_clear()
    monkeypatch.setattr(moment_kernels, "row_moments", other_order)
    try:
        assert normalize._checked_kernel() is None
        assert normalize._row_moments_kernel() is None
    finally:
        normalize._checked_kernel.cache_clear()


def test_channel_jobs_are_the_same_with_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole per-channel quantization: codes, dequantized weights and report."""
    rng = np.random.default_rng(5)
    w = (rng.standard_t(4, size=(64, 3, 3, 3)) * rng.uniform(0.01, 1, (64, 1, 1, 1)))
    req = TensorRequest(name="w", weights=w.astype(np.float32),
                        quantizer=QuantizerSpec(bits=4).resolved(), channel_axis=0)  # fmt: skip
    results = []
    for kernels in (False, True):
        monkeypatch.setattr(normalize, "USE_KERNELS", kernels)
        results.append(quantize_tensors([req], Granularity.CHANNEL)[0])
    reference, ours = results
    assert np.array_equal(ours.quantized.codes, reference.quantized.codes)
    assert np.array_equal(ours.quantized.dequantized.view(np.uint32),
                          reference.quantized.dequantized.view(np.uint32))  # fmt: skip
    assert ours.report == reference.report
