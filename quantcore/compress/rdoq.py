"""Rate–distortion optimised quantization (RDOQ) of uniform codes: an adaptive dead zone.

Plain rounding takes the nearest level. With entropy-coded codes that is not the cheapest
choice for a weight between two levels: the level nearer to zero is usually much more
probable, so it costs fewer bits. For each weight, in step units ``t = (w - offset) / scale``
(so that code ``c`` decodes to exactly ``c``), RDOQ compares the nearest code ``c0`` with
``c1``, its neighbour on the side of zero weight, and keeps the one with the smaller

    (t - c)² + μ · bits(c),      bits(c) = -log2 p(c)

where ``p`` is the tensor's own code frequency (order-0, what the package's coder spends) and
``μ`` the Lagrange multiplier in step² per bit. ``RDOQ_MU`` is the slope of an
entropy-coded uniform quantizer at high rate, ``dD/dR = -2 ln 2 · Δ²/12 = -(ln 2 / 6) Δ²``:
spending λ = μΔ² per bit everywhere is what a common step size implies, so the trade is the
same in every tensor. The frequencies depend on the choice, so it is made ``ITERATIONS``
times, each from the nearest codes with the last pass's frequencies.

Only the codes change: the decoder (scale and offset) stays, so ``model.onnx`` decodes to
exactly the values the report measures.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from quantcore.compress.results import TensorResult
from quantcore.quantizers.codes import AffineDecoder, QuantizedTensor, decode
from quantcore.quantizers.stats import code_counts, code_entropy_bits, levels_used, sqnr_db

RDOQ_MU = math.log(2.0) / 6.0
ITERATIONS = 3


def _bits(codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """-log2 p(c) for c in [lo, hi]; codes never seen cost one bit more than the rarest."""
    counts = np.bincount((codes - lo).ravel(), minlength=hi - lo + 1).astype(np.float64)
    total = counts.sum()
    seen = counts > 0
    bits = np.empty_like(counts)
    bits[seen] = np.log2(total) - np.log2(counts[seen])
    bits[~seen] = np.log2(total) + 1.0
    return bits


def rdoq_codes(
    t: np.ndarray, nearest: np.ndarray, zero: np.ndarray | float, lo: int, hi: int,
    mu: float = RDOQ_MU,
) -> np.ndarray:
    """The RDOQ codes (int32) of ``t`` (in step units), from the ``nearest`` codes, with zero
    weight at ``zero`` (broadcast against ``t``) and codes within ``[lo, hi]``."""
    c0 = nearest.astype(np.int32)
    toward = np.where(c0 > zero, -1, np.where(c0 < zero, 1, 0)).astype(np.int32)
    c1 = c0 + toward
    closer = (toward != 0) & (np.abs(c1 - zero) < np.abs(c0 - zero)) & (c1 >= lo) & (c1 <= hi)
    d0 = np.square(t - c0, dtype=np.float64)
    d1 = np.square(t - c1, dtype=np.float64)
    codes = c0
    for _ in range(ITERATIONS):
        bits = _bits(codes, lo, hi)
        cost0 = d0 + mu * bits[c0 - lo]
        cost1 = d1 + mu * bits[np.clip(c1, lo, hi) - lo]
        codes = np.where(closer & (cost1 < cost0), c1, c0)
    return codes


def _along(values: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    if axis is None or values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def rdoq_result(result: TensorResult, weights: np.ndarray, mu: float = RDOQ_MU) -> TensorResult:
    """``result`` (uniform codes with an affine decoder) with its codes chosen by RDOQ, and its
    report row's measured fields (SQNR, entropy, levels used) recomputed."""
    quantized = result.quantized
    decoder = quantized.decoder
    if not isinstance(decoder, AffineDecoder):
        return dataclasses.replace(result, notes=(*result.notes, "rdoq: not an affine decoder"))
    ndim = weights.ndim
    scale = _along(np.asarray(decoder.scale, np.float64), decoder.axis, ndim)
    offset = _along(np.asarray(decoder.offset, np.float64), decoder.axis, ndim)
    safe = np.where(scale > 0, scale, 1.0)
    t = (np.asarray(weights, np.float64) - offset) / safe
    zero = -offset / safe
    codes = rdoq_codes(t, quantized.codes, zero, quantized.code_min, quantized.code_max, mu)
    codes = np.where(scale > 0, codes, quantized.codes).astype(quantized.codes.dtype)
    dequantized = decode(codes, decoder)
    counts = code_counts(codes)
    w64 = np.asarray(weights, np.float64).ravel()
    noise = float(np.sum(np.square(w64 - dequantized.ravel())))
    report = dataclasses.replace(
        result.report,
        sqnr_db=sqnr_db(float(np.dot(w64, w64)) / w64.size, noise / w64.size),
        entropy_bits=code_entropy_bits(counts),
        levels_used=levels_used(counts),
    )
    moved = int(np.count_nonzero(codes != quantized.codes))
    return dataclasses.replace(
        result,
        quantized=QuantizedTensor(codes=codes, code_min=quantized.code_min,
                                  code_max=quantized.code_max, decoder=decoder,
                                  dequantized=dequantized),
        report=report, counts=counts,
        notes=(*result.notes, f"rdoq: {moved} of {codes.size} codes moved toward zero"),
    )
