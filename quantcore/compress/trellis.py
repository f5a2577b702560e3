"""Trellis-coded quantization (TCQ): the spec's ``"rdoq": "trellis"``, with a rate ``target``.

Scalar RDOQ (``quantcore.compress.rdoq``) moves single codes toward zero. TCQ, the dependent
quantization of MPEG NNR's DeepCABAC and of VVC, goes further: two quantizers of step ``2Δ``,
offset by ``Δ`` from each other, are switched weight by weight by a state machine on the
parity of each index (32 states, the machine of stream ``MACHINE_VERSION``; DeepCABAC's 8,
``SMALL_MACHINE_VERSION``'s, on tiny tensors; ``quantcore.compress.trellis_kernel``), and a
Viterbi search picks the whole path of levels
that minimises ``Σ (w - ŵ)² + λ · bits``. The levels sit on the grid of
step ``Δ`` (what ``model.onnx`` stores: uniform codes ``m`` with scale ``Δ``), the indices
``k`` have the spread of a step-``2Δ`` quantizer's, and the package's streams v7 and v8
(``quantcore.coding.trellis_coder``) code ``k`` under the table of its state's quantizer. At
equal weight SQNR, VVC's 4 states took 2.4-3.5% off the entropy of our scalar RDOQ codes on
five real models (``bench.nnr.tcq_probe``); 8 states reach 0.10-0.16 dB more at the same rate
(nudenet, 15-40 dB: 1.6% of the rate at 1.6 bits a weight, 0.3% at 5.3), for 1.5 times
the search's time; 32 states another 0.14-0.17 dB (nudenet and ocr-det at 2.3-6.7 bits a
weight: 0.35-1.25% of the rate), for 2-4 times the 8-state search's time. Tensors of at most
``adaptive.TRELLIS_TINY_CODES`` weights keep 8 states: their packages' tableless stream (v9) is
defined on that machine, and saves them more than the wider machine would.

``bits`` is each index's cost in its quantizer (``-log2`` of its frequency), estimated from
the tensor's own path: the search runs ``PASSES`` times, each with the counts of the last
(the first at no rate). ``LAMBDA`` is λ in ``Δ²`` per bit: the high-rate slope of the
distortion-rate curve, 2·ln 2·D with D about a quarter of Δ² for TCQ, is near 0.4. Measured
against the 0.12 used before (bits given the quantizer and classes at equal weight SQNR,
8 states, the 12 largest tensors): −1.8 to −4.3% at 10.5 dB on ocr-rec, orientation and
magika, −1.6% at 14.5 dB on nudenet, −0.4 to −1.8% at 17.5 dB, −0.1 to −0.4% from 22 dB;
0.6 was worse than 0.4 at 10.5 dB, and within 0.1% of it above 22 dB. The path runs
through the whole tensor in C order, a ``BLOCK`` of weights at a time (each block continues
from the state the last one ended in), so memory is the tensor's codes and a block's back
pointers.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import numpy as np

from quantcore.compress.results import TensorResult
from quantcore.quantizers.codes import AffineDecoder, QuantizedTensor, decode
from quantcore.quantizers.stats import code_counts, levels_used, sqnr_db

LAMBDA = 0.4
PASSES = 3
BLOCK = 1 << 16
MACHINE_VERSION = 12  # the package stream whose state machine the search follows (32 states)
SMALL_MACHINE_VERSION = 7  # ... on tiny tensors (8 states)


def machine_for(count: int) -> int:
    """The stream version whose machine the search follows on a tensor of ``count``
    weights."""
    from quantcore.coding import adaptive

    return SMALL_MACHINE_VERSION if count <= adaptive.TRELLIS_TINY_CODES else MACHINE_VERSION


def _kernel() -> ModuleType:
    from quantcore.compress import trellis_kernel  # numba: loaded when a spec asks for TCQ

    return trellis_kernel


def _bits(counts: np.ndarray) -> np.ndarray:
    """-log2 p(k) per quantizer (rows); an index never seen costs two bits more than one
    seen once."""
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1).astype(np.float64)
    seen = counts > 0
    return np.where(seen, np.log2(totals) - np.log2(np.maximum(counts, 1)), np.log2(totals) + 2)


def conditional_bits(counts: np.ndarray) -> float:
    """Σ over the quantizers of their indices' order-0 entropy times their number: what a
    coder with the quantizer as context spends (tables aside)."""
    total = 0.0
    for row in counts:
        c = row[row > 0].astype(np.float64)
        if c.size:
            n = c.sum()
            total += float(n * np.log2(n) - np.dot(c, np.log2(c)))
    return total


@dataclasses.dataclass(frozen=True, kw_only=True)
class Path:
    levels: np.ndarray  # int32, the tensor's shape flattened
    counts: np.ndarray  # (2, 2 · offset + 1): each index's count in its quantizer
    offset: int


def trellis_levels(
    weights: np.ndarray, step: float, m_max: int, machine_version: int | None = None
) -> Path:
    """The TCQ levels of ``weights`` on the grid of ``step`` (``|level| <= m_max``), on the
    path of the state machine of stream ``machine_version`` (5: VVC's 4 states; 7: 8; 12:
    32; by default ``machine_for`` the tensor's size)."""
    from quantcore.coding import trellis_coder  # its kernels: numba, as ours

    kernel = _kernel()
    flat = np.ascontiguousarray(weights, np.float32).reshape(-1)
    if machine_version is None:
        machine_version = machine_for(flat.size)
    transitions, quantizers = trellis_coder.machine(machine_version)
    if quantizers.size > 64 or (np.bincount(transitions.ravel()) != 2).any():
        raise ValueError(f"stream v{machine_version}'s machine is not one the search follows: "
                         "at most 64 states, each with two edges in")  # fmt: skip
    offset = m_max // 2 + 2
    bits = np.zeros((2, 2 * offset + 1))
    levels = np.zeros(flat.size, np.int32)
    counts = np.zeros((2, 2 * offset + 1), np.int64)
    inv = 1.0 / step if step > 0 else 0.0
    edges = kernel.edges_in(transitions, quantizers)
    vector = kernel.is_for(transitions, quantizers)  # its vector step
    for _ in range(PASSES):
        counts[:] = 0
        kernel.quantize_path(flat, inv, LAMBDA, bits, offset, m_max, transitions, quantizers,
                             edges, BLOCK, levels, counts, vector)  # fmt: skip
        bits = _bits(counts)
    return Path(levels=levels, counts=counts, offset=offset)


def trellis_result(result: TensorResult, weights: np.ndarray) -> TensorResult:
    """``result`` (uniform midtread codes on one scale, offset 0) with its codes replaced by
    TCQ levels on the same grid and range, and its row's measured fields recomputed
    (``entropy_bits``: the indices' entropy given their quantizer, what stream v7 reaches)."""
    quantized = result.quantized
    decoder = quantized.decoder
    scale = np.asarray(getattr(decoder, "scale", 0.0), np.float64)
    offset = np.asarray(getattr(decoder, "offset", 1.0), np.float64)
    if not isinstance(decoder, AffineDecoder) or scale.ndim or offset.ndim or float(offset):
        return dataclasses.replace(
            result, notes=(*result.notes, "trellis: needs one scale and no offset; rounded")
        )
    m_max = min(-quantized.code_min, quantized.code_max)
    path = trellis_levels(weights, float(scale), m_max)
    codes = path.levels.reshape(quantized.codes.shape).astype(quantized.codes.dtype)
    dequantized = decode(codes, decoder)
    counts = code_counts(codes)
    w64 = np.asarray(weights, np.float64).ravel()
    noise = float(np.sum(np.square(w64 - dequantized.ravel())))
    n = max(w64.size, 1)
    report = dataclasses.replace(
        result.report,
        sqnr_db=sqnr_db(float(np.dot(w64, w64)) / n, noise / n),
        entropy_bits=conditional_bits(path.counts) / n,
        levels_used=levels_used(counts),
    )
    order0 = float(result.report.entropy_bits)
    note = (f"trellis: TCQ levels, {report.entropy_bits:.3f} bits a weight given the "
            f"quantizer (scalar codes {order0:.3f})")  # fmt: skip
    return dataclasses.replace(
        result,
        quantized=QuantizedTensor(codes=codes, code_min=quantized.code_min,
                                  code_max=quantized.code_max, decoder=decoder,
                                  dequantized=dequantized),
        report=report, counts=counts, notes=(*result.notes, note),
    )  # fmt: skip


def measure_sample(
    values: np.ndarray, step: float, m_max: int, count: int | None = None
) -> tuple[float, float]:
    """Σ squared error and Σ bits (given the quantizer) of TCQ on ``values`` (float64), a
    sample of a tensor of ``count`` weights (by default, the whole of it): on its machine."""
    path = trellis_levels(values, step, m_max, machine_for(values.size if count is None
                                                           else count))  # fmt: skip
    error = values - path.levels * step
    return float(np.dot(error, error)), conditional_bits(path.counts)

