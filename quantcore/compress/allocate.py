"""Rate–distortion allocation: the step sizes that meet a spec's ``target`` (``quantcore.target``).

The objective is the pooled squared error ``Σ (w - ŵ)²`` over every quantized weight against
the total rate of the entropy-coded codes. At high rate an entropy-coded uniform quantizer of
step Δ costs ``h(w) - log2 Δ`` bits and ``Δ²/12`` error per weight, whatever the tensor's
spread, so the equal-slope (reverse water-filling) optimum gives every tensor the same Δ: a
wide tensor gets more levels, not a coarser step. At low rate the dead zone around zero makes
the true curves bend, so the Laplacian closed form (``quantcore.design.theory``, each tensor a
Laplacian of its own σ) only seeds the search; the judge is measured: the codes are computed
(with RDOQ when asked) and their pooled distortion or order-0 entropy evaluated, and the common
Δ bisected until the target holds.

Each tensor then gets a uniform midtread quantizer (zero exact) of that step, centred at zero,
with just enough bits that nothing is clipped (at most 16; past that the tails clip and a note
says so). Large models are judged on a sample (``SAMPLE_LIMIT`` weights in all, drawn evenly
per tensor with a fixed seed, plus each tensor's extremes); the report gives what the full
tensors achieved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from quantcore.compress.rdoq import RDOQ_MU, rdoq_codes
from quantcore.compress.trellis import measure_sample as trellis_measure
from quantcore.design.theory import laplacian_midtread_distortion
from quantcore.formats.load import Model
from quantcore.spec import MAX_BITS, Method, QuantizerSpec, Rounding, Support
from quantcore.target import RateTarget

X = TypeVar("X")
Y = TypeVar("Y")


class Mapper(Protocol):
    """``map`` over one iterable, results in order: the builtin, or a thread pool's ``map``
    (the measurements release the GIL)."""

    def __call__(self, fn: Callable[[X], Y], items: Iterable[X], /) -> Iterator[Y]: ...


SAMPLE_LIMIT = 1 << 22
MAX_STEPS = 12  # measurements after the bracket
X_TOL = 1e-5  # in log Δ: the step to 0.001%
MIN_BITS = 2
BLOCK = 1 << 20  # weights summed at a time


@dataclass(frozen=True, kw_only=True)
class TensorSample:
    """What the allocation needs of one tensor: a sample of it and its size and extremes."""

    values: np.ndarray  # float64
    count: int
    max_abs: float
    mean_square: float


def sample_tensor(weights: np.ndarray, share: float, seed: int) -> TensorSample:
    """About ``share`` of ``weights`` (all of them at 1), with their exact size, largest
    magnitude and mean square (in float64, a block at a time: no float64 copy of a tensor)."""
    flat = np.asarray(weights).reshape(-1)
    count = flat.size
    take = min(count, max(1, math.ceil(count * share)))
    if take >= count:
        values = flat.astype(np.float64)
    else:
        rng = np.random.default_rng([seed, count])
        values = flat[rng.integers(0, count, size=take)].astype(np.float64)
    squares = 0.0
    for start in range(0, count, BLOCK):
        block = flat[start : start + BLOCK].astype(np.float64)
        squares += float(np.dot(block, block))
    max_abs = float(np.max(np.abs(flat))) if count else 0.0
    return TensorSample(values=values, count=count, max_abs=max_abs,
                        mean_square=squares / max(count, 1))


def _round(t: np.ndarray) -> np.ndarray:
    """Midtread codes: rounding half away from zero, as ``quantizers.uniform`` does."""
    return np.copysign(np.floor(np.abs(t) + 0.5), t)


def tensor_bits(max_abs: float, step: float) -> int:
    """Bits of a midtread quantizer of ``step`` whose top level covers ``max_abs``."""
    top = math.floor(max_abs / step + 0.5) if step > 0 else 0
    return min(MAX_BITS, max(MIN_BITS, math.ceil(math.log2(2 * (top + 1)))))


@dataclass(frozen=True, kw_only=True)
class Measured:
    noise: float  # Σ (w - ŵ)², scaled from the sample to the tensor
    bits: float  # Σ entropy · count


def _entropy(codes: np.ndarray) -> float:
    counts = np.bincount((codes - codes.min()).astype(np.int64).ravel()).astype(np.float64)
    p = counts[counts > 0] / codes.size
    return max(0.0, float(-np.dot(p, np.log2(p))))


def measure(sample: TensorSample, step: float, rdoq: bool, trellis: bool = False) -> Measured:
    """Noise and code bits of ``sample`` at ``step`` (scaled to the whole tensor); with
    ``trellis``, of TCQ levels on the grid of ``step`` (bits: given the quantizer)."""
    top = (1 << (tensor_bits(sample.max_abs, step) - 1)) - 1
    scale = sample.count / sample.values.size
    if trellis:
        noise, bits = trellis_measure(sample.values, step, top, sample.count)
        return Measured(noise=noise * scale, bits=bits * scale)
    t = sample.values / step
    codes = np.clip(_round(t), -top, top)
    if rdoq:
        codes = rdoq_codes(t, codes, 0.0, -top, top, RDOQ_MU)
    error = sample.values - codes * step
    return Measured(noise=float(np.dot(error, error)) * scale,
                    bits=_entropy(codes) * sample.count)


def model_step(samples: Mapping[str, TensorSample], noise_target: float) -> float:
    """The common step at which the Laplacian closed form (each tensor a Laplacian of its own
    σ, no clipping) gives ``noise_target`` in all; bisection in log Δ."""
    sigma = np.array([math.sqrt(s.mean_square) for s in samples.values()])
    counts = np.array([s.count for s in samples.values()], np.float64)
    keep = sigma > 0

    def noise(step: float) -> float:
        levels = 1 << 16
        dist = laplacian_midtread_distortion(step * (levels - 1) / 2, levels, sigma[keep])
        return float(np.dot(counts[keep], np.asarray(dist, np.float64)))

    lo, hi = math.log(float(sigma[keep].min()) * 1e-6), math.log(float(sigma[keep].max()) * 8)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if noise(math.exp(mid)) <= noise_target else (lo, mid)
    return math.exp(lo)


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """The common step, each tensor's quantizer, and what the search predicted."""

    step: float
    rdoq: bool
    target: RateTarget
    quantizers: dict[str, QuantizerSpec]
    predicted_sqnr_db: float
    predicted_bits_per_weight: float
    model_step: float  # the Laplacian closed form's step (the search's seed)
    notes: tuple[str, ...] = field(default=())
    trellis: bool = False
    choice: dict[str, Any] | None = None  # rdoq="auto": what each mode coded (rdoq_choice)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(), "rdoq": self.rdoq, "trellis": self.trellis,
            "step": self.step,
            "model_step": self.model_step,
            "predicted": {"weight_sqnr_db": self.predicted_sqnr_db,
                          "bits_per_weight": self.predicted_bits_per_weight},
            "notes": list(self.notes),
            **({"rdoq_choice": self.choice} if self.choice is not None else {}),
        }  # fmt: skip


def _boundary(g: Callable[[float], float], x0: float, slope: float, x_min: float) -> float:
    """The largest (SQNR goal) or smallest (rate goal) x with ``g(x) >= 0``, to ``X_TOL``:
    a bracket grown from ``x0`` along the expected ``slope``, then Illinois regula falsi
    (a handful of measurements, each a pass over the weights). The bracket stops at
    ``x_min``, and that is the answer when the sign has not changed by then."""
    a = max(x0, x_min)
    fa = g(a)
    width = max(abs(fa / slope), 0.05)
    for _ in range(40):
        b = max(a - math.copysign(width, fa / slope) if fa != 0 else a + 0.05, x_min)
        fb = g(b)
        if (fa >= 0) != (fb >= 0):
            break
        if b == x_min:
            return x_min
        a, fa, width = b, fb, width * 2
    else:
        return a if fa >= 0 else b
    side = 0
    for _ in range(MAX_STEPS):
        if abs(b - a) < X_TOL:
            break
        c = b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if not min(a, b) < c < max(a, b):
            c = 0.5 * (a + b)
        fc = g(c)
        if (fc >= 0) == (fb >= 0):
            b, fb = c, fc
            if side == -1:
                fa /= 2
            side = -1
        else:
            a, fa = c, fc
            if side == 1:
                fb /= 2
            side = 1
    return a if fa >= 0 else b


def _quantizer(sample: TensorSample, step: float) -> QuantizerSpec:
    bits = tensor_bits(sample.max_abs, step)
    rms = math.sqrt(sample.mean_square)
    # normalize=False: the unit is the RMS, and a midtread's step is 2·xmax/(N-1) units.
    xmax = step * ((1 << bits) - 1) / 2 / rms if rms > 0 else 1.0
    return QuantizerSpec(method=Method.UNIFORM, bits=bits, rounding=Rounding.MIDTREAD,
                         support=Support.VALUE, support_value=min(xmax, 1e6), normalize=False)


def model_samples(model: Model, names: Sequence[str]) -> dict[str, TensorSample]:
    """A sample of each tensor ``names`` of ``model`` (``SAMPLE_LIMIT`` weights in all), the
    tensors read one at a time."""
    sizes = {t.name: t.size for t in model.tensors}
    share = min(1.0, SAMPLE_LIMIT / max(sum(sizes[n] for n in names), 1))
    return {n: sample_tensor(model.array(n), share, i) for i, n in enumerate(names)}


def allocate(
    samples: Mapping[str, TensorSample], target: RateTarget, *, rdoq: bool, trellis: bool = False,
    map_samples: Mapper = map,
) -> Allocation:
    """The largest common step meeting ``target`` (see the module docstring); each step tried
    is measured on the samples through ``map_samples`` (a thread pool's: the trellis search
    on the samples was most of a trellis job's serial time)."""
    signal = sum(s.mean_square * s.count for s in samples.values())
    total = max(sum(s.count for s in samples.values()), 1)
    if signal <= 0.0:  # every weight is zero: any step codes them exactly, at no rate
        quantizers = {name: _quantizer(s, 1.0) for name, s in samples.items()}
        return Allocation(step=1.0, rdoq=rdoq, target=target, quantizers=quantizers,
                          predicted_sqnr_db=math.inf, predicted_bits_per_weight=0.0,
                          model_step=1.0, notes=("every weight is zero",), trellis=trellis)

    judged: dict[float, tuple[float, float]] = {}  # the search ends on a step it measured

    def judge(step: float) -> tuple[float, float]:
        if step not in judged:
            parts = list(map_samples(lambda s: measure(s, step, rdoq, trellis), samples.values()))
            noise = sum(p.noise for p in parts)
            sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
            judged[step] = sqnr, sum(p.bits for p in parts) / total
        return judged[step]

    # g(x) >= 0 where Δ = e^x meets the target; g falls as x grows for an SQNR goal (6 dB a
    # doubling at high rate) and rises for a rate goal (one bit a doubling).
    g: Callable[[float], float]
    if target.weight_sqnr_db is not None:
        goal = target.weight_sqnr_db
        seed = model_step(samples, signal / 10 ** (goal / 10))
        g = lambda x: judge(math.exp(x))[0] - goal  # noqa: E731
        slope = -6.02 / math.log(2)
    else:
        goal = float(target.bits_per_weight or 0.0)
        rms = math.sqrt(signal / total)
        # High-rate Laplacian entropy: log2(2e·b/Δ) bits with b = σ/√2.
        seed = 2 * math.e * rms / math.sqrt(2) / 2**goal
        g = lambda x: goal - judge(math.exp(x))[1]  # noqa: E731
        slope = 1.0 / math.log(2)
    # Below this step the widest tensor's codes would need more than MAX_BITS: its tails
    # clip, and the error grows again as the step shrinks (no target is met down there).
    floor = max(s.max_abs for s in samples.values()) / ((1 << (MAX_BITS - 1)) - 1)
    step = math.exp(_boundary(g, math.log(seed), slope, math.log(floor)))
    sqnr, bpw = judge(step)
    quantizers = {name: _quantizer(s, step) for name, s in samples.items()}
    notes: tuple[str, ...] = ()
    if target.weight_sqnr_db is not None and sqnr < target.weight_sqnr_db:
        notes = (f"weight_sqnr_db={target.weight_sqnr_db:g} is out of reach: {sqnr:.1f} dB at "
                 f"the finest common step whose codes fit in {MAX_BITS} bits",)
    elif target.bits_per_weight is not None and bpw < target.bits_per_weight - 0.05:
        notes = (f"bits_per_weight={target.bits_per_weight:g} is more than the codes take at "
                 f"the finest common step whose codes fit in {MAX_BITS} bits: {bpw:.2f}",)
    return Allocation(step=step, rdoq=rdoq, target=target, quantizers=quantizers,
                      predicted_sqnr_db=sqnr, predicted_bits_per_weight=bpw,
                      model_step=seed, notes=notes, trellis=trellis)
