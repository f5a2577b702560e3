"""What trellis-coded quantization would save over our scalar codes, before building it.

DeepCABAC's lead at high rates (``bench.bench_nnr``: 1-6% at 15 dB of weight SQNR and more) is
mostly its dependent quantization: two scalar quantizers, ``Q0`` = {2kΔ} and ``Q1`` =
{(2k - sgn k)Δ}, switched by a 4-state machine driven by the parity of each code (VVC's
``trans = [[0, 2], [2, 0], [1, 3], [3, 1]]``, states 0-1 use Q0), the codes chosen by a
Viterbi search over distortion + λ·rate. This probe quantizes every tensor our policy picks
both ways at a common step and compares bytes at equal pooled weight SQNR:

- scalar: our ``target`` + ``rdoq`` quantizer (midtread, RDOQ dead zone), order-0 entropy;
- trellis: the codes ``k`` at the order-0 entropy of each quantizer's codes (``H(k | Q)``,
  what a coder with the quantizer as context reaches), λ = ``LAMBDA``·Δ², the rate model
  re-estimated ``PASSES`` times.

Entropy only, no container: ``python -m bench.nnr.tcq_probe --models magika,nudenet``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from bench.nnr.measure import EVERY_WEIGHT
from bench.realmodels.fetch import fetch
from quantcore.compress.pipeline import select_tensors
from quantcore.compress.rdoq import RDOQ_MU, rdoq_codes
from quantcore.formats.load import load_model
from quantcore.spec import QuantSpec

TRANS = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64)
LAMBDA = 0.12  # step² per bit (0.06 and 0.25 gave within 0.2% of it on magika)
PASSES = 3


@njit(cache=True)
def _viterbi(x, lam, bits0, bits1, off):  # pragma: no cover - compiled
    """The codes and each code's state for ``x`` (in units of Δ), minimising squared error
    plus ``lam`` times the bits of ``bits0`` / ``bits1`` (indexed by ``k + off``)."""
    n = x.size
    inf = 1e300
    cost = np.full(4, inf)
    cost[0] = 0.0
    back_k = np.zeros((n, 4), np.int32)
    back_s = np.zeros((n, 4), np.int8)
    for i in range(n):
        new = np.full(4, inf)
        for s in range(4):
            if cost[s] >= inf:
                continue
            q1 = s >= 2
            sign = 1 if x[i] >= 0 else -1
            base = math.floor((abs(x[i]) + 1) / 2) if q1 else math.floor(x[i] / 2)
            for j in range(-1, 4):
                k = 0 if j == 3 else (sign * (base + j) if q1 else base + j)
                rec = 2 * k - (0 if k == 0 else (1 if k > 0 else -1)) if q1 else 2 * k
                idx = k + off
                if idx < 0 or idx >= bits0.size:
                    continue
                c = cost[s] + (x[i] - rec) ** 2 + lam * (bits1[idx] if q1 else bits0[idx])
                t = TRANS[s, k & 1]
                if c < new[t]:
                    new[t] = c
                    back_k[i, t] = k
                    back_s[i, t] = s
        cost = new
    s = int(np.argmin(cost))
    ks = np.zeros(n, np.int64)
    states = np.zeros(n, np.int64)
    for i in range(n - 1, -1, -1):
        ks[i] = back_k[i, s]
        s = back_s[i, s]
        states[i] = s
    return ks, states


def _bits(codes: np.ndarray) -> float:
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() * codes.size)


def _table(codes: np.ndarray, off: int) -> np.ndarray:
    counts = np.bincount(codes + off, minlength=2 * off + 1).astype(np.float64)
    total = max(counts.sum(), 1.0)
    return np.where(counts > 0, np.log2(total) - np.log2(np.maximum(counts, 1)),
                    np.log2(total) + 2)  # fmt: skip


def trellis(tensors: Sequence[np.ndarray], delta: float) -> tuple[float, float]:
    """(pooled SQNR dB, bytes at H(k | Q)) with the trellis at step ``delta``."""
    signal = noise = bits = 0.0
    for w in tensors:
        x = w / delta
        off = int(np.abs(x).max() / 2) + 4
        b0 = b1 = np.full(2 * off + 1, 4.0)
        for _ in range(PASSES):
            ks, states = _viterbi(x, LAMBDA, b0, b1, off)
            q1 = states >= 2
            b0, b1 = _table(ks[~q1], off), _table(ks[q1], off)
        rec = np.where(q1, 2 * ks - np.sign(ks), 2 * ks) * delta
        signal += float(w @ w)
        noise += float((w - rec) @ (w - rec))
        bits += _bits(ks[~q1]) + _bits(ks[q1])
    return 10 * math.log10(signal / noise), bits / 8


def scalar(tensors: Sequence[np.ndarray], step: float) -> tuple[float, float]:
    """(pooled SQNR dB, bytes at order-0 entropy) of midtread codes with RDOQ at ``step``."""
    signal = noise = bits = 0.0
    for w in tensors:
        t = w / step
        top = int(np.abs(t).max()) + 2
        codes = rdoq_codes(t, np.copysign(np.floor(np.abs(t) + 0.5), t), 0.0, -top, top, RDOQ_MU)
        signal += float(w @ w)
        noise += float((w - codes * step) @ (w - codes * step))
        bits += _bits(codes)
    return 10 * math.log10(signal / noise), bits / 8


def probe(name: str, fractions: Sequence[float]) -> None:
    model = load_model(fetch(name))
    names = select_tensors(model, QuantSpec.from_dict(EVERY_WEIGHT)).quantize
    tensors = [np.asarray(model.array(n), np.float64).ravel() for n in names]
    rms = math.sqrt(sum(float(w @ w) for w in tensors) / sum(w.size for w in tensors))
    curve = sorted(scalar(tensors, f * rms) for f in np.geomspace(0.005, 1.5, 16))
    sqnrs = np.array([s for s, _ in curve])
    sizes = np.log([b for _, b in curve])
    for f in fractions:
        sqnr, size = trellis(tensors, f * rms / 2)
        ref = math.exp(float(np.interp(sqnr, sqnrs, sizes)))
        print(
            f"{name:<12} {sqnr:6.2f} dB  trellis {size / 1e3:8.1f} kB  scalar+rdoq "
            f"{ref / 1e3:8.1f} kB  ratio {size / ref:.3f}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="magika,nudenet")
    parser.add_argument(
        "--steps",
        default="0.05,0.1,0.2,0.35",
        help="trellis steps as fractions of the pooled RMS (×2: Δ is half)",
    )
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        probe(name, [float(f) for f in args.steps.split(",")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
