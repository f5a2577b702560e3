"""GPTQ in the group format and bias shifts: layer output error, im2col, mean shift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore.compress import gptq as gptq_module
from quantcore.compress import gptq_factors
from quantcore.compress import groups as groups_module
from quantcore.compress import hessian as hessian_module
from quantcore.compress.bias_shift import output_shift
from quantcore.compress.gptq import gptq_groups, output_error
from quantcore.compress.groups import block_view, quantize_groups
from quantcore.compress.hessian import Accumulator, Geometry
from quantcore.quantizers.codes import decode
from quantcore.spec import QuantSpec

RNG = np.random.default_rng(5)


def _correlated(rows: int, k: int, mean: float = 0.5) -> np.ndarray:
    mix = RNG.standard_normal((k, k)) * 0.4 + np.eye(k)
    return (RNG.standard_normal((rows, k)) @ mix + mean).astype(np.float32)


def _quantize(weights: np.ndarray, geometry: Geometry, x: np.ndarray, bits: int,
              axis: int, trailing: bool = False):  # type: ignore[no-untyped-def]
    acc = Accumulator(geometry=geometry)
    acc.add(x)
    spec = QuantSpec.from_dict({"bits": bits}).quantizer
    view = block_view(weights.shape, axis, trailing)
    plain = quantize_groups("w", weights, spec, view=view, axis=axis, block_size=32,
                            zero_point=True)  # fmt: skip
    gptq, note = gptq_groups("w", weights, spec, acc.stats, view=view, axis=axis,
                             block_size=32, zero_point=True, plain=plain)  # fmt: skip
    return acc.stats, plain, gptq, note


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_lowers_the_layer_output_error_on_correlated_inputs(bits: int) -> None:
    k, n = 160, 48  # a ragged last block: 160 = 5 x 32
    x = _correlated(3000, k)
    w = (RNG.laplace(size=(k, n)) * 0.05).astype(np.float32)
    stats, plain, gptq, note = _quantize(w, Geometry(op="MatMul", rows=n, k=k), x, bits, 0)
    before = np.sum((x @ (plain.quantized.dequantized - w)).astype(np.float64) ** 2)
    after = np.sum((x @ (gptq.quantized.dequantized - w)).astype(np.float64) ** 2)
    assert after < 0.8 * before, note
    assert "below plain rounding" in note
    # The format is the group quantizer's: codes in range, scales float16, decode is exact.
    decoder = gptq.quantized.decoder
    assert decoder.scale.dtype == np.float16 and decoder.scale.shape == (5, n)
    assert gptq.quantized.codes.min() >= 0 and gptq.quantized.codes.max() <= 2**bits - 1
    np.testing.assert_array_equal(decode(gptq.quantized.codes, decoder),
                                  gptq.quantized.dequantized)  # fmt: skip
    delta = stats.geometry.rows_of(gptq.quantized.dequantized - w)
    assert output_error(stats, delta) == pytest.approx(after / 3000, rel=1e-3)


def test_gemm_layouts_agree_with_their_outputs() -> None:
    k, n = 64, 16
    x = _correlated(2000, k)
    w = (RNG.laplace(size=(n, k)) * 0.05).astype(np.float32)  # Gemm transB=1: (N, K)
    geometry = Geometry(op="Gemm", rows=n, k=k, trans_b=True)
    _, plain, gptq, _ = _quantize(w, geometry, x, 3, 1)
    before = np.sum((x @ (plain.quantized.dequantized - w).T) ** 2)
    after = np.sum((x @ (gptq.quantized.dequantized - w).T) ** 2)
    assert after < before


def _conv_outputs(x: np.ndarray, w: np.ndarray, **attrs: object) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]  # type: ignore[no-any-return]


CONV_CASES = pytest.mark.parametrize(
    ("channels", "group", "attrs"),
    [
        (6, 1, {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}),
        (8, 8, {"pads": [1, 1, 1, 1]}),  # depthwise
        (8, 2, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ],
)


def _conv_case(
    rng: np.random.Generator, channels: int, group: int, attrs: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Geometry]:
    """An input, a 3x3 kernel, onnxruntime's Conv output (N, O, oh, ow) and the geometry."""
    x = rng.standard_normal((2, channels, 9, 11)).astype(np.float32)
    out_c = 4 if group == 1 else channels
    w = rng.standard_normal((out_c, channels // group, 3, 3)).astype(np.float32)
    geometry = Geometry(
        op="Conv", rows=out_c, k=channels // group * 9, groups=group, kernel=(3, 3),
        strides=tuple(attrs.get("strides", (1, 1))), pads=tuple(attrs.get("pads", (0,) * 4)),
        dilations=tuple(attrs.get("dilations", (1, 1))),
        auto_pad=str(attrs.get("auto_pad", "NOTSET")),
    )  # fmt: skip
    return x, w, _conv_outputs(x, w, group=group, **attrs), geometry


@CONV_CASES
def test_im2col_rows_reproduce_the_convolution(channels: int, group: int, attrs: dict) -> None:
    """Σ over patches of ``w·patch`` equals onnxruntime's Conv output summed: the patches are
    the Conv's own inputs, in the kernel's order, padding included."""
    x, w, y, geometry = _conv_case(RNG, channels, group, attrs)
    acc = Accumulator(geometry=geometry, max_rows=10**6)
    acc.add(x)
    assert acc.stats.count == y.shape[0] * y.shape[2] * y.shape[3]
    per_channel = np.einsum("grk,gk->gr", geometry.rows_of(w).astype(np.float64),
                            acc.stats.mean).reshape(-1)  # fmt: skip
    np.testing.assert_allclose(per_channel, y.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


@CONV_CASES
def test_sampled_im2col_rows_are_the_convolutions_inputs(
    channels: int, group: int, attrs: dict
) -> None:
    """Each row the Hessian sums, times the kernel, is onnxruntime's output at that row's
    position (all positions taken, in order; and a sample of them is a subset)."""
    rng = np.random.default_rng(group)  # not the module's: later tests draw from that
    x, w, y, geometry = _conv_case(rng, channels, group, attrs)
    out_c = w.shape[0]
    rows = hessian_module._patches(x, geometry, np.random.default_rng(0), 10**6)
    per = out_c // group
    got = np.concatenate([rows[:, i * geometry.k:(i + 1) * geometry.k]
                          @ w[i * per:(i + 1) * per].reshape(per, -1).T
                          for i in range(group)], axis=1)  # fmt: skip
    want = y.transpose(0, 2, 3, 1).reshape(-1, out_c)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    sampled = hessian_module._patches(x, geometry, np.random.default_rng(0), 7)
    assert sampled.shape == (7, rows.shape[1])
    assert all((rows == r).all(axis=1).any() for r in sampled)


def test_gptq_on_a_depthwise_conv_keeps_its_groups_apart() -> None:
    x = np.abs(RNG.standard_normal((4, 16, 12, 12))).astype(np.float32)  # post-ReLU
    w = (RNG.laplace(size=(16, 1, 3, 3)) * 0.2).astype(np.float32)
    geometry = Geometry(op="Conv", rows=16, k=9, groups=16, kernel=(3, 3), strides=(1, 1),
                        pads=(1, 1, 1, 1), dilations=(1, 1))  # fmt: skip
    stats, plain, gptq, _ = _quantize(w, geometry, x, 3, 1, trailing=True)
    y = _conv_outputs(x, w, group=16, pads=[1, 1, 1, 1])
    err_plain = _conv_outputs(x, plain.quantized.dequantized, group=16, pads=[1, 1, 1, 1]) - y
    err_gptq = _conv_outputs(x, gptq.quantized.dequantized, group=16, pads=[1, 1, 1, 1]) - y
    assert np.sum(err_gptq**2) <= np.sum(err_plain**2)
    assert stats.hessian.shape == (16, 9, 9)


def test_too_few_rows_round_plainly() -> None:
    k, n = 64, 8
    x = _correlated(100, k)  # fewer than 2 rows per input
    w = (RNG.laplace(size=(k, n)) * 0.05).astype(np.float32)
    _, plain, gptq, note = _quantize(w, Geometry(op="MatMul", rows=n, k=k), x, 4, 0)
    assert gptq is plain and "too few" in note


def test_output_shift_zeroes_the_mean_shift() -> None:
    k, n = 96, 24
    x = _correlated(4000, k, mean=2.0)
    w = (RNG.laplace(size=(k, n)) * 0.05).astype(np.float32)
    stats, plain, _, _ = _quantize(w, Geometry(op="MatMul", rows=n, k=k), x, 3, 0)
    q = plain.quantized.dequantized
    drift = (x @ q - x @ w).mean(axis=0)
    assert np.abs(drift).max() > 1e-3
    shift, kept = output_shift(stats, w, q)
    fixed = shift != 0
    assert kept == np.count_nonzero(fixed) >= n // 2
    corrected = (x @ q + shift - x @ w).mean(axis=0)
    np.testing.assert_allclose(corrected[fixed], 0.0, atol=1e-4)
    # Those left alone had a mean error the halves disagreed on: a small one.
    assert np.abs(drift[~fixed]).max(initial=0.0) < np.abs(drift[fixed]).max()
    gemm = Geometry(op="Gemm", rows=n, k=k, alpha=0.5)
    acc = Accumulator(geometry=gemm)
    acc.add(x)
    np.testing.assert_allclose(output_shift(acc.stats, w, q)[0], 0.5 * shift)


def test_a_mean_error_the_halves_disagree_on_is_left_alone() -> None:
    """Samples whose mean flips between halves: no channel's shift is trusted."""
    k, n = 32, 8
    x = RNG.standard_normal((2000, k)).astype(np.float32)
    x[0::2] += 3.0  # the first half (even samples) ...
    x[1::2] -= 3.0  # ... and the second have opposite means
    w = (RNG.laplace(size=(k, n)) * 0.05).astype(np.float32)
    acc = Accumulator(geometry=Geometry(op="MatMul", rows=n, k=k), hessian=False)
    acc.add(x)
    q = w + np.float32(0.01) * np.sign(w)  # an error with a non-zero sum per channel
    shift, kept = output_shift(acc.stats, w, q)
    assert kept == 0 and not shift.any()


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("per", [24, 600])  # one tile of rows; five, the last ragged
# A ragged last block: 100 = 3 x 32 + 4 (one group of four columns), 102 = 3 x 32 + 6 (a
# group of four, then two columns on their own).
@pytest.mark.parametrize("k", [100, 102])
@pytest.mark.parametrize("order", ["C", "F"])  # a MatMul's rows are its weight transposed
def test_the_compiled_column_loop_gives_the_numpy_loops_bits(
    across: bool, groups: int, per: int, k: int, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.stack([_correlated(800, k, mean=3.0) for _ in range(groups)])
    hessian = np.matmul(x.transpose(0, 2, 1), x).astype(np.float64)
    u = gptq_module._factor(hessian, 800, 0.01)
    assert u is not None
    rows = np.asarray(RNG.laplace(size=(groups, per, k)) * 0.05, order=order)
    spec = QuantSpec.from_dict({"bits": 4}).quantizer
    compiled = gptq_module._round_rows(rows, u, spec, True, 32, across=across)
    monkeypatch.setattr(groups_module, "USE_KERNELS", False)
    reference = gptq_module._round_rows(rows, u, spec, True, 32, across=across)
    assert compiled.codes.dtype == reference.codes.dtype
    assert compiled.codes.tobytes() == reference.codes.tobytes()
    assert compiled.scale.tobytes() == reference.scale.tobytes()
    assert compiled.zero_point is not None and reference.zero_point is not None
    assert compiled.zero_point.tobytes() == reference.zero_point.tobytes()


@pytest.mark.parametrize("kernels", [True, False])
def test_the_diagonal_blocks_alone_round_as_the_whole_block_diagonal_factor(
    kernels: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPTQ on flat inputs keeps ``H``'s and ``U``'s diagonal blocks alone; the codes are
    those of the whole (groups, k, k) block-diagonal factor, bit for bit."""
    monkeypatch.setattr(groups_module, "USE_KERNELS", kernels)
    k, groups = 100, 2  # a ragged last block: 100 = 3 x 32 + 4
    geometry = Geometry(op="MatMul", rows=groups * 40, k=k, groups=groups)
    x = np.concatenate([_correlated(600, k, mean=3.0) for _ in range(groups)], axis=1)
    acc = Accumulator(geometry=geometry, max_rows=10**6, block=64)
    acc.add(x)
    u = gptq_module._block_factor(acc.stats, gptq_module.FLAT_DAMP, 32)
    assert u is not None and u.shape == (groups, 4, 32, 32)
    whole = np.zeros((groups, k, k))  # the same blocks placed on a whole factor's diagonal
    for index, lo in enumerate(range(0, k, 32)):
        n = min(32, k - lo)
        whole[:, lo : lo + n, lo : lo + n] = u[:, index, :n, :n]
    rows = RNG.laplace(size=(groups, 40, k)) * 0.05
    spec = QuantSpec.from_dict({"bits": 4}).quantizer
    compact = gptq_module._round_rows(rows, u, spec, True, 32, across=False)
    placed = gptq_module._round_rows(rows, whole, spec, True, 32, across=False)
    assert compact.codes.tobytes() == placed.codes.tobytes()
    assert compact.scale.tobytes() == placed.scale.tobytes()
    # The blocks' output error reads ``H`` through ``LayerStats.diagonal``: the whole ``H``'s.
    full = Accumulator(geometry=geometry, max_rows=10**6)
    full.add(x)
    delta = RNG.standard_normal((groups, 40, k))
    want = sum(float(np.sum(np.matmul(delta[:, :, lo:hi], full.stats.diagonal(lo, hi))
                            * delta[:, :, lo:hi]))
               for lo, hi in ((lo, min(lo + 32, k)) for lo in range(0, k, 32)))  # fmt: skip
    got = gptq_module._block_error(acc.stats, delta, 32)
    assert got == pytest.approx(want / full.stats.count, rel=1e-6)


def test_block_error_on_several_cores_is_the_same_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large layer's blocks are measured on the cores at once: the terms are summed in
    the blocks' order, so the error is the one thread's to the last bit."""
    k, groups = 100, 2
    geometry = Geometry(op="MatMul", rows=groups * 40, k=k, groups=groups)
    x = np.concatenate([_correlated(600, k, mean=3.0) for _ in range(groups)], axis=1)
    acc = Accumulator(geometry=geometry, max_rows=10**6, block=64)
    acc.add(x)
    delta = RNG.standard_normal((groups, 40, k)) * np.geomspace(1e-6, 1e3, k)
    monkeypatch.setattr(gptq_module, "SPAN_WEIGHTS", 10**12)  # one thread
    alone = gptq_module._block_error(acc.stats, delta, 32)
    monkeypatch.setattr(gptq_module, "SPAN_WEIGHTS", 1)
    calls = []
    real = gptq_module.run_all

    def counted(fn, items, threads=None):  # type: ignore[no-untyped-def]
        calls.append((len(items), threads))
        return real(fn, items, 2 if threads is None else threads)

    monkeypatch.setattr(gptq_module, "run_all", counted)
    together = gptq_module._block_error(acc.stats, delta, 32)
    assert calls == [(4, None)]
    assert together == alone


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])  # the rows a transposed view; a plain one
@pytest.mark.parametrize("one_thread", [True, False])
def test_block_error_of_a_difference_taken_per_block_is_the_whole_differences(
    op: str, one_thread: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_gptq_flat`` hands ``_block_error`` the float32 values and weights, each block's
    float64 difference taken where it is measured: the error of the whole layer's float64
    difference, to the last bit, in either layout of the rows."""
    k, rows_n = 100, 300
    trans_b = op == "Gemm"
    geometry = Geometry(op=op, rows=rows_n, k=k, trans_b=trans_b)
    acc = Accumulator(geometry=geometry, max_rows=10**6, block=64)
    acc.add(_correlated(600, k, mean=3.0))
    shape = (rows_n, k) if trans_b else (k, rows_n)
    weights = (RNG.laplace(size=shape) * np.geomspace(1e-4, 1e2, shape[1])).astype(np.float32)
    values = (weights + RNG.standard_normal(shape).astype(np.float32) * 1e-3).astype(np.float32)
    if one_thread:
        monkeypatch.setattr(gptq_module, "SPAN_WEIGHTS", 10**12)
    w_rows, v_rows = geometry.rows_of(weights), geometry.rows_of(values)
    assert v_rows.flags.c_contiguous == trans_b  # MatMul's rows are a transposed view
    whole = gptq_module._block_error(acc.stats, v_rows - w_rows.astype(np.float64), 32)
    per_block = gptq_module._block_error(acc.stats, v_rows, 32, w_rows)
    assert per_block == whole and whole > 0


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("across", [True, False])
def test_rows_rounded_in_spans_on_several_cores_give_the_same_bits(
    across: bool, zero_point: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    k, groups, per = 100, 2, 301
    x = np.stack([_correlated(800, k, mean=3.0) for _ in range(groups)])
    u = gptq_module._factor(np.matmul(x.transpose(0, 2, 1), x).astype(np.float64), 800, 0.01)
    assert u is not None
    rows = RNG.laplace(size=(groups, per, k)) * 0.05
    spec = QuantSpec.from_dict({"bits": 4}).quantizer
    whole = gptq_module._round_rows(rows, u, spec, zero_point, 32, across=across)
    monkeypatch.setattr(gptq_module, "cores", lambda: 3)
    monkeypatch.setattr(gptq_module, "SPAN_WEIGHTS", 1000)
    assert gptq_module._row_spans(per, groups * k) == [(0, 101), (101, 202), (202, 301)]
    split = gptq_module._round_rows(rows, u, spec, zero_point, 32, across=across)
    assert split.codes.tobytes() == whole.codes.tobytes()
    assert split.scale.tobytes() == whole.scale.tobytes()
    if zero_point:
        assert split.zero_point is not None and whole.zero_point is not None
        assert split.zero_point.tobytes() == whole.zero_point.tobytes()
    else:  # a symmetric grid: no zero points in any span
        assert split.zero_point is None and whole.zero_point is None


def test_a_small_layer_is_rounded_in_one_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gptq_module, "cores", lambda: 8)
    assert gptq_module._row_spans(4096, 128) == [(0, 4096)]  # 0.5 M weights
    assert len(gptq_module._row_spans(8210, 1024)) == 8


@pytest.mark.parametrize("k", [40, gptq_factors.LAPACK_MIN_K + 8])  # plain route; LAPACK's
def test_the_factor_of_the_inverse_hessian_is_upper_and_exact(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 4 * k, k)) * rng.uniform(0.1, 10.0, k)  # 2 groups
    h = np.matmul(x.transpose(0, 2, 1), x) / (4 * k)
    u = gptq_factors._upper_factor_of_inverse(h)
    assert np.array_equal(u, np.triu(u)) and (np.diagonal(u, axis1=1, axis2=2) > 0).all()
    identity = np.matmul(np.matmul(u.transpose(0, 2, 1), u), h)  # UᵀU·H = I
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(k), h.shape), atol=1e-8)
    h[1, 0, 0] = -1.0  # not positive definite
    with pytest.raises(np.linalg.LinAlgError):
        gptq_factors._upper_factor_of_inverse(h)


def test_lapack_is_loaded_without_importing_scipy_linalg() -> None:
    """``lapack_module`` loads SciPy's compiled LAPACK alone (the package's import costs 15-25
    times as long), and its functions are those ``scipy.linalg.lapack`` gives, also when the
    package is imported after it."""
    code = (
        "import sys\n"
        "from quantcore.compress.gptq_factors import lapack_module\n"
        "module = lapack_module()\n"
        "alone = 'scipy.linalg' not in sys.modules\n"
        "import scipy.linalg\n"
        "from scipy.linalg import lapack\n"
        "print(alone, module.dtrtri is lapack.dtrtri, module.dpotrf is lapack.dpotrf,\n"
        "      scipy.linalg._flapack.dtrtri is module.dtrtri)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).parents[3])  # fmt: skip
    assert found.stdout.split() == ["True"] * 4
