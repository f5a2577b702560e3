"""The compiled kernels against the NumPy reference: bit for bit, on varied inputs.

Every case runs the same request twice, once with the kernels switched off (the NumPy path,
kept as the reference) and once through them, and compares codes, dequantized weights (their
bit patterns), scales, zero points, counts and every report figure exactly.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

from quantcore.compress import group_compiled, groups
from quantcore.compress.group_compiled import compiled_blocks
from quantcore.compress.group_numpy import numpy_blocks
from quantcore.compress.groups import block_view, quantize_groups
from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.quantizers import design, stream
from quantcore.quantizers.block_quantize_kernels import half_value
from quantcore.quantizers.breakpoints import _merged, code_table
from quantcore.quantizers.kernels import encode_values, sort_small_range
from quantcore.spec import Granularity, Method, QuantizerSpec, Rounding, Support


def heavy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Student-t weights (heavy tails, no NaN) with a zero row and a constant row."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(3, shape) * 0.05).astype(np.float32)
    rows = w.reshape(shape[0], -1)
    rows[1] = 0.0
    rows[2] = 0.3
    return w


def bits_of(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def both(monkeypatch: pytest.MonkeyPatch, module: object, run):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(module, "USE_KERNELS", False)
    reference = run()
    monkeypatch.setattr(module, "USE_KERNELS", True)
    return run(), reference


LAYER_SPECS = [
    *(QuantizerSpec(bits=b) for b in (2, 3, 4, 8, 16)),
    QuantizerSpec(bits=4, rounding=Rounding.MIDTREAD),
    QuantizerSpec(bits=8, rounding=Rounding.MIDTREAD, support=Support.MSE),
    QuantizerSpec(method=Method.DEADZONE, bits=4, deadzone_ratio=0.3),
    QuantizerSpec(method=Method.DEADZONE, bits=5, deadzone_ratio=0.0),
    QuantizerSpec(method=Method.MULAW, bits=8),
    QuantizerSpec(method=Method.MULAW, bits=3, mu=20.0),
    QuantizerSpec(method=Method.LOG, bits=4),
    QuantizerSpec(method=Method.FLOAT),
    QuantizerSpec(method=Method.FLOAT, exponent_bits=2, mantissa_bits=1),
    QuantizerSpec(method=Method.FLOAT, exponent_bits=5, mantissa_bits=10),
]


@pytest.mark.parametrize("spec", LAYER_SPECS, ids=lambda s: f"{s.method.value}{s.bits}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize(("granularity", "axis"), [(Granularity.LAYER, 0),
                                                   (Granularity.CHANNEL, 0),
                                                   (Granularity.CHANNEL, 1)])  # fmt: skip
def test_layer_and_channel_paths_match_numpy(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec, dtype: type, granularity: Granularity,
    axis: int,
) -> None:
    """Channel axis 1: channels across the rows, as a MatMul's (``stream._across``)."""
    w = heavy((24, 200)).astype(dtype)
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=axis)
    fast, ref = both(monkeypatch, stream, lambda: quantize_tensors([req], granularity)[0])
    assert fast.quantized.codes.dtype == ref.quantized.codes.dtype
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert np.array_equal(bits_of(fast.quantized.dequantized), bits_of(ref.quantized.dequantized))
    assert np.array_equal(fast.counts, ref.counts)
    assert fast.report == ref.report


# Codes of at most 16 values are counted two at a time (``kernels._count_pairs``): each family
# whose codes span 16 values or fewer (the tables' too: mu-law, log and minifloat of up to 4
# bits, whose codes may be signed), rows of a length no multiple of the 8 codes a step
# takes, and ones of 17 values or more (5-bit dead-zone index, 5-bit log) counted one at a time.
@pytest.mark.parametrize("spec", [
    QuantizerSpec(bits=2), QuantizerSpec(bits=4), QuantizerSpec(bits=5),
    QuantizerSpec(bits=4, rounding=Rounding.MIDTREAD),
    QuantizerSpec(method=Method.DEADZONE, bits=4, deadzone_ratio=0.3),
    QuantizerSpec(method=Method.DEADZONE, bits=4, deadzone_ratio=0.0),
    QuantizerSpec(method=Method.DEADZONE, bits=5, deadzone_ratio=0.3),
    QuantizerSpec(method=Method.MULAW, bits=3, mu=20.0), QuantizerSpec(method=Method.LOG, bits=4),
    QuantizerSpec(method=Method.LOG, bits=5),
    QuantizerSpec(method=Method.FLOAT, exponent_bits=2, mantissa_bits=1),
], ids=lambda s: f"{s.method.value}{s.bits}-{s.rounding}-{s.deadzone_ratio}")  # fmt: skip
@pytest.mark.parametrize(("granularity", "axis"), [(Granularity.LAYER, 0),
                                                   (Granularity.CHANNEL, 0),
                                                   (Granularity.CHANNEL, 1)])  # fmt: skip
def test_counts_of_narrow_codes_match_numpy(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec, granularity: Granularity, axis: int
) -> None:
    """Channel axis 1: channels across the rows (``across_kernels``), counted as written."""
    w = heavy((9, 203), seed=3)
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=axis)
    fast, ref = both(monkeypatch, stream, lambda: quantize_tensors([req], granularity)[0])
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert np.array_equal(fast.counts, ref.counts)
    assert int(np.count_nonzero(ref.counts)) > 2


def test_large_channels_take_the_chunked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "CHUNK", 1 << 10)  # channels longer than a chunk
    w = heavy((6, 5000), seed=3)
    req = TensorRequest(name="w", weights=w, quantizer=QuantizerSpec(bits=4), channel_axis=0)
    fast, ref = both(monkeypatch, stream, lambda: quantize_tensors([req], Granularity.CHANNEL)[0])
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert fast.report == ref.report


@pytest.mark.parametrize("spec", [QuantizerSpec(bits=4), QuantizerSpec(bits=8),
                                  QuantizerSpec(method=Method.MULAW, bits=8),
                                  QuantizerSpec(method=Method.LOG, bits=4)],
                         ids=lambda s: f"{s.method.value}{s.bits}")  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("every_other_row", [False, True])
@pytest.mark.parametrize("rows", [37, 300])
def test_channels_across_rows_in_many_blocks_match_numpy(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec, dtype: type, every_other_row: bool,
    rows: int,
) -> None:
    """Blocks of 7 channels of 37 rows (a ragged tile of 16 rows) or 300 (errors written out
    after 128 and 256 rows, ``across_kernels.ERR_ROWS``, then a ragged rest), 4 blocks a
    kernel call and a ragged last call: each block's noise is summed on its own, as the
    reference sums it. Rows a view takes every other of are read as well (the kernel reads
    a C-ordered copy)."""
    monkeypatch.setattr(stream, "CHUNK", rows * 7)
    w = np.ascontiguousarray(heavy((203, 2 * rows if every_other_row else rows), seed=4).T, dtype)
    w = w[::2] if every_other_row else w
    assert w.flags.c_contiguous != every_other_row
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=1)
    fast, ref = both(monkeypatch, stream, lambda: quantize_tensors([req], Granularity.CHANNEL)[0])
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert np.array_equal(bits_of(fast.quantized.dequantized), bits_of(ref.quantized.dequantized))
    assert np.array_equal(fast.counts, ref.counts)
    assert fast.report == ref.report


@pytest.mark.parametrize("spec", [QuantizerSpec(bits=8), QuantizerSpec(bits=4, support=Support.MSE),
                                  QuantizerSpec(method=Method.MULAW, bits=4),
                                  QuantizerSpec(method=Method.FLOAT)],
                         ids=lambda s: f"{s.method.value}{s.bits}-{s.support}")  # fmt: skip
def test_a_channel_of_denormal_weights_decodes_near_its_values(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec
) -> None:
    # Its step is under 1/max(float32): the reciprocal used to overflow to inf, which sent its
    # zeros to NaN and every other weight to an outermost level.
    w = heavy((6, 300), seed=5)
    w[4] = np.random.default_rng(1).laplace(size=300).astype(np.float32) * np.float32(1e-41)
    w[4, ::7] = 0.0
    req = TensorRequest(name="w", weights=w, quantizer=spec, channel_axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, ref = both(
            monkeypatch, stream, lambda: quantize_tensors([req], Granularity.CHANNEL)[0]
        )
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    restored = fast.quantized.dequantized
    assert np.isfinite(restored).all()
    assert np.abs(restored[4] - w[4]).max() <= 2 * np.abs(w[4]).max()
    assert np.array_equal(restored[0], ref.quantized.dequantized[0])


@pytest.mark.parametrize("granularity", [Granularity.LAYER, Granularity.CHANNEL])
def test_an_outlier_whose_squared_error_overflows_float32_keeps_a_finite_sqnr(
    monkeypatch: pytest.MonkeyPatch, granularity: Granularity
) -> None:
    # A corrupt upload held one weight of 4.5e20: float32 squares of its row's errors made
    # the noise inf and the SQNR a math domain error that failed the job.
    w = heavy((16, 214), seed=2)
    w[5, 7] = np.float32(4.5e20)
    req = TensorRequest(name="w", weights=w, quantizer=QuantizerSpec(bits=8), channel_axis=0)
    fast, ref = both(monkeypatch, stream, lambda: quantize_tensors([req], granularity)[0])
    assert math.isfinite(fast.report.sqnr_db)
    assert fast.report == ref.report


GROUP_SPECS = [
    *(QuantizerSpec(bits=b, support=s) for b in (2, 3, 4, 8, 16)
      for s in (Support.MAX_ABS, Support.MSE, Support.JAYANT)),
    QuantizerSpec(bits=4, support=Support.PERCENTILE, support_value=99.0),
    QuantizerSpec(bits=4, support=Support.VALUE, support_value=2.5),
    QuantizerSpec(bits=8, support=Support.HUI),
    *(QuantizerSpec(method=m, bits=4, support=s)
      for m in (Method.MULAW, Method.LOG, Method.DEADZONE) for s in (Support.MAX_ABS, Support.MSE)),
    QuantizerSpec(method=Method.MULAW, bits=8, support=Support.MAX_ABS),  # 256 codes, unsigned
    QuantizerSpec(method=Method.MULAW, bits=8, support=Support.MSE),  # candidates skipped by bound
    QuantizerSpec(method=Method.FLOAT, support=Support.MAX_ABS),
    QuantizerSpec(method=Method.FLOAT, exponent_bits=2, mantissa_bits=1, support=Support.MSE),
]  # fmt: skip
# (shape, block axis, block size): ragged last blocks, blocks across a strided axis (one
# partial tile of them; whole and partial tiles, ``block_kernels.TILE``; whole and partial
# tiles of lanes, ``block_lane_kernels.LANES``; rows holding a whole tile of lanes, read as
# one run; rows of whole blocks fewer than a tile, runs across rows), a Conv kernel spanning
# its window, a block longer than the axis.
GROUP_SHAPES = [((12, 200), 1, 32), ((150, 12), 0, 32), ((200, 40), 0, 32),
                ((40, 150), 0, 8), ((130, 70), 0, 128),
                ((8, 8, 3, 3), 1, 16), ((5, 77), 1, 128), ((6, 256), 1, 128),
                ((8, 20), 1, 200), ((3, 2600), 1, 32), ((50, 96), 1, 32)]  # fmt: skip


@pytest.mark.parametrize("spec", GROUP_SPECS,
                         ids=lambda s: f"{s.method.value}{s.bits}-{s.support}")  # fmt: skip
@pytest.mark.parametrize("zero_point", [True, False])
def test_group_path_matches_numpy(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec, zero_point: bool
) -> None:
    spec = spec.resolved()
    if spec.bits < 2 and not zero_point:
        pytest.skip("a symmetric group grid needs 2 bits")
    for shape, axis, size in GROUP_SHAPES:
        w = heavy(shape, seed=size)
        view = block_view(shape, axis, True)

        def run(w: np.ndarray = w, view: tuple[int, ...] = view, axis: int = axis,
                size: int = size) -> groups.GroupOutcome:
            return quantize_groups("w", w, spec, view=view, axis=axis, block_size=size,
                                   zero_point=zero_point)  # fmt: skip

        fast, ref = both(monkeypatch, groups, run)
        q, r = fast.quantized, ref.quantized
        assert isinstance(q.decoder, groups.BlockDecoder)
        assert isinstance(r.decoder, groups.BlockDecoder)
        assert q.codes.dtype == r.codes.dtype and np.array_equal(q.codes, r.codes)
        assert np.array_equal(bits_of(q.dequantized), bits_of(r.dequantized))
        assert np.array_equal(bits_of(q.decoder.scale), bits_of(r.decoder.scale))
        if r.decoder.zero_point is None:
            assert q.decoder.zero_point is None
        else:
            assert q.decoder.zero_point is not None
            assert np.array_equal(q.decoder.zero_point, r.decoder.zero_point)
        assert np.array_equal(fast.counts, ref.counts)
        same = dataclasses.replace(fast, quantized=ref.quantized, counts=ref.counts)
        assert same == ref  # noise, inside, xmax, xmax_abs, theory: exactly equal


@pytest.mark.parametrize("shape", [(50, 96), (3, 2600)])
def test_block_sums_along_rows_in_lanes_keep_numpys_order(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    """Blocks along the rows summed 64 at a time in lanes (``block_stats``; runs across rows
    of three whole blocks, and within rows of 81 and a ragged one): magnitudes from 2^-30 to
    1, so that a block's sum of squares depends on the order of its additions, and each
    block's RMS, scale and noise are still the reference's."""
    spec = QuantizerSpec(bits=4).resolved()
    rng = np.random.default_rng(8)
    w = (rng.choice([-1.0, 1.0], shape) * np.exp2(rng.uniform(-30, 0, shape))).astype(np.float32)

    def run() -> groups.GroupOutcome:
        return quantize_groups("w", w, spec, view=shape, axis=1, block_size=32,
                               zero_point=True)  # fmt: skip

    fast, ref = both(monkeypatch, groups, run)
    assert np.array_equal(fast.quantized.codes, ref.quantized.codes)
    assert np.array_equal(bits_of(fast.quantized.dequantized), bits_of(ref.quantized.dequantized))
    same = dataclasses.replace(fast, quantized=ref.quantized, counts=ref.counts)
    assert same == ref
    fast_blocks = compiled_blocks("w", w, spec, 1, 32, True)
    ref_blocks = numpy_blocks("w", w, spec, 1, 32, True)
    assert fast_blocks is not None
    assert np.array_equal(fast_blocks.rms, ref_blocks.rms)


@pytest.mark.parametrize("spec", [QuantizerSpec(bits=4), QuantizerSpec(bits=3, support=Support.MSE),
                                  QuantizerSpec(method=Method.MULAW, bits=4)],
                         ids=lambda s: f"{s.method.value}{s.bits}-{s.support}")  # fmt: skip
def test_strided_blocks_split_anywhere_match_numpy(
    monkeypatch: pytest.MonkeyPatch, spec: QuantizerSpec
) -> None:
    """Slabs of 7 blocks across a 40-wide strided axis start and end inside rows and tiles;
    the results are still the reference's. The second input's magnitudes span 2^-30 to 1,
    so that a block's sum of squares depends on the order it is added in."""
    spec = spec.resolved()
    monkeypatch.setattr(group_compiled, "_SLAB_WEIGHTS", 7 * 32)
    rng = np.random.default_rng(5)
    spread = rng.choice([-1.0, 1.0], (200, 40)) * np.exp2(rng.uniform(-30, 0, (200, 40)))
    for w in (heavy((200, 40), seed=3), spread.astype(np.float32)):

        def run(w: np.ndarray = w) -> groups.GroupOutcome:
            return quantize_groups("w", w, spec, view=w.shape, axis=0, block_size=32,
                                   zero_point=True)  # fmt: skip

        fast, ref = both(monkeypatch, groups, run)
        q, r = fast.quantized, ref.quantized
        assert np.array_equal(q.codes, r.codes)
        assert np.array_equal(bits_of(q.dequantized), bits_of(r.dequantized))
        assert np.array_equal(fast.counts, ref.counts)
        same = dataclasses.replace(fast, quantized=ref.quantized, counts=ref.counts)
        assert same == ref
        # The per-block figures themselves: a last bit of a block's RMS is lost in the means.
        fast_blocks = compiled_blocks("w", w, spec, 0, 32, True)
        ref_blocks = numpy_blocks("w", w, spec, 0, 32, True)
        assert fast_blocks is not None
        for field in ("clips", "rms", "reach", "scale", "zp"):
            assert np.array_equal(getattr(fast_blocks, field), getattr(ref_blocks, field)), field


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("support", [Support.MAX_ABS, Support.MSE])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lanes_match_the_block_by_block_kernel(
    monkeypatch: pytest.MonkeyPatch, bits: int, support: Support, zero_point: bool
) -> None:
    """Tensors too large for the NumPy reference: many whole tiles of lanes, ragged blocks
    along and across rows, rows holding whole tiles (read and written as one run; with a
    ragged last block, the row's next tile runs into the next row), rows of whole blocks
    fewer than a tile (one run across rows, then a last part tile), and clipped blocks
    (``mse``) whose sums are short by many steps (the block-by-block rank)."""
    spec = QuantizerSpec(bits=bits, support=support).resolved()
    for shape, axis, size in (((96, 1000), 1, 32), ((1000, 300), 0, 128),
                              ((600, 130), 0, 16), ((70, 520), 1, 16), ((12, 2600), 1, 32),
                              ((6, 2048), 1, 16), ((201, 96), 1, 32),
                              ((45, 768), 1, 16), ((30, 1000), 1, 64)):  # fmt: skip
        w = heavy(shape, seed=size)
        found = []
        for lanes in (False, True):
            monkeypatch.setattr(group_compiled, "USE_LANES", lanes)
            found.append(compiled_blocks("w", w, spec, axis, size, zero_point))
        fast, ref = found
        assert fast is not None and ref is not None
        for field in ("codes", "dequantized", "scale", "zp", "clips"):
            a, b = getattr(fast, field), getattr(ref, field)
            if b is None:
                assert a is None
                continue
            same = a.view(np.uint8) if a.dtype.kind == "f" else a
            assert np.array_equal(same, b.view(np.uint8) if b.dtype.kind == "f" else b), field
        assert (fast.noise, fast.inside) == (ref.noise, ref.inside)


def test_group_path_is_taken() -> None:
    """The kernels serve every family (no silent fall-back to NumPy)."""
    for spec in GROUP_SPECS:
        spec = spec.resolved()
        w = heavy((8, 64))
        found = compiled_blocks("w", w, spec, 1, 32, True)
        assert found is not None and found.dequantized is not None


@pytest.mark.parametrize("spec", [s for s in LAYER_SPECS if s.method in
                                  (Method.MULAW, Method.FLOAT, Method.LOG)],
                         ids=lambda s: f"{s.method.value}{s.bits}")  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_breakpoint_tables_reproduce_the_encoders_at_their_edges(
    spec: QuantizerSpec, dtype: type
) -> None:
    """Each edge, its neighbours one ulp either side, zeros of both signs and infinities."""
    rng = np.random.default_rng(1)
    d = design(spec.resolved(), rng.laplace(size=4096) / 8)
    table = code_table(d, np.dtype(dtype))
    assert table is not None
    edges = table.edges[np.isfinite(table.edges)].astype(dtype)
    probe = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)),
                            np.nextafter(edges, dtype(0)), rng.laplace(size=20000) * 2,
                            [0.0, np.inf]]).astype(dtype)  # fmt: skip
    t = np.concatenate([probe, -probe]).astype(dtype)
    expected = np.empty(t.size, d.dtype)
    d.encode(t.copy(), expected)
    got = np.empty(t.size, d.dtype)
    encode_values(t, got, 3, dtype(0), dtype(0), 0, table.signbit, table.edges, table.codes,
                  table.lut)  # fmt: skip
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_bucket_of_several_edges_is_stepped_through(dtype: type) -> None:
    """Edges closer than a bucket (1/128 of a binade): the table's entry holds only the
    first, so its bucket is flagged and the kernel steps through ``edges``; codes are
    ``codes[#{edges ≤ |t|}]`` on each side, as the table defines them."""
    positive = np.array([0.25, 1.0, 1.001, 1.002, 1.5, 3.0], dtype)  # three in one bucket
    negative = np.array([0.5, 2.0, 2.0001], dtype)
    sides = [(positive, np.arange(7, dtype=np.int64) + 10),
             (negative, np.arange(4, dtype=np.int64) + 20)]  # fmt: skip
    table = _merged(False, sides)
    flagged = table.lut < 0
    assert flagged.any() and not flagged.all() if dtype is np.float32 else flagged.all()
    edges = np.concatenate([positive, negative])
    probe = np.concatenate([edges, np.nextafter(edges, dtype(0)), np.nextafter(edges, dtype(9)),
                            np.linspace(0, 4, 4001), [0.0, np.inf]]).astype(dtype)  # fmt: skip
    t = np.concatenate([probe, -probe]).astype(dtype)
    got = np.empty(t.size, np.uint8)
    encode_values(t, got, 3, dtype(0), dtype(0), 0, table.signbit, table.edges, table.codes,
                  table.lut)  # fmt: skip
    m = np.abs(t)
    expected = np.where(t < 0, 20 + np.searchsorted(negative, m, side="right"),
                        10 + np.searchsorted(positive, m, side="right"))  # fmt: skip
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("bound", [1, 10, 1 << 16, 16_000_001, 3_000_000_000])
def test_sample_indices_sort_as_numpy_does(bound: int) -> None:
    drawn = np.random.default_rng(bound).integers(0, bound, size=50_000)
    assert np.array_equal(sort_small_range(drawn, bound), np.sort(drawn))


def test_half_value_rounds_as_numpy_casts_to_float16() -> None:
    """The kernels' float16 rounding (a refitted block scale) against NumPy's cast: normals,
    subnormals, exact ties between two float16 values, the edge of the range."""
    rng = np.random.default_rng(11)
    values = np.exp(rng.uniform(np.log(1e-9), np.log(7e4), 200_000)).astype(np.float32)
    halves = np.arange(1, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    ties = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)  # exact in float32
    edges = np.array([65504, 65519.99, 65520, 65536, 2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-26],
                     np.float32)  # fmt: skip
    x = np.concatenate([values, ties, np.nextafter(ties, 0), np.nextafter(ties, 1), edges])
    ours = np.array([half_value(float(v)) for v in x])
    np.testing.assert_array_equal(ours, x.astype(np.float16).astype(np.float64))
