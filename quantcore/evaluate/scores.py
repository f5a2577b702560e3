"""Accuracy measures of a quantized model against its float original, accumulated by batch.

- top-k accuracy: the share of samples whose label is among the k highest scores, with
  ``k = min(5, classes)`` for "top-5" (a model with fewer than five classes scores 1.0). Ties
  between scores are broken by ``np.argpartition``/``np.argmax`` order (lowest index first for
  top-1).
- agreement: the share of samples whose top-1 class is the same for both models; it needs no
  labels.
- output SQNR, per float output: ``10·log10(Σ f² / Σ (f − q)²)`` over every element of every
  sample (f the float model's output, q the quantized one's), summed in float64. Identical
  outputs give ``+inf`` (null in JSON); an all-zero float output with some error, or
  quantized outputs that are NaN or infinite where the float ones are finite, give ``-inf``
  (null in JSON as well); float outputs that are not finite give NaN (null).

Every tally is exact integer counting or float64 sums, so the result does not depend on the
batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOP5 = 5


@dataclass(frozen=True, kw_only=True)
class TopK:
    top1: float
    top5: float

    def to_dict(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5}


OutputSqnr = float | dict[str, float]


@dataclass(frozen=True, kw_only=True)
class AccuracyReport:
    """The report's ``accuracy`` block (docs/api.md).

    ``fp32``, ``quantized`` and ``top1_drop`` (fp32 top-1 minus quantized top-1, a fraction)
    are None without labels; these and ``agreement`` are None when the model has no scores
    output (a float output of rank 2, ``(batch, classes)``). ``output_sqnr_db`` is a number
    for a model with one float output and ``{output name: dB}`` for several.
    """

    samples: int
    fp32: TopK | None
    quantized: TopK | None
    top1_drop: float | None
    agreement: float | None
    output_sqnr_db: OutputSqnr
    # What the report's ``fidelity`` block reads (not part of ``accuracy``): the SQNR pooled
    # over every float output, and the top-1 agreement over the last axis of the outputs that
    # look like class scores (``class_outputs``; None when none does).
    pooled_sqnr_db: float = math.nan
    class_agreement: float | None = None
    class_outputs: tuple[str, ...] = ()
    # Output values that are NaN or infinite: the float model's own (then nothing can be
    # measured), and the quantized model's where the float one's are finite (a broken model:
    # its noise counts as infinite, its SQNR -inf).
    float_nonfinite: int = 0
    quantized_nonfinite: int = 0

    def fidelity(self, inputs: str) -> dict[str, Any]:
        """The report's ``fidelity`` block for these scores; ``inputs`` says where the inputs
        came from (``"dataset"`` or ``"synthetic"``)."""
        return {
            "inputs": inputs,
            "samples": self.samples,
            "output_sqnr_db": _finite(self.pooled_sqnr_db),
            "agreement": self.class_agreement,
            "class_outputs": list(self.class_outputs),
        }

    def to_dict(self) -> dict[str, Any]:
        sqnr: Any
        if isinstance(self.output_sqnr_db, dict):
            sqnr = {k: _finite(v) for k, v in self.output_sqnr_db.items()}
        else:
            sqnr = _finite(self.output_sqnr_db)
        return {
            "samples": self.samples,
            "fp32": self.fp32.to_dict() if self.fp32 else None,
            "quantized": self.quantized.to_dict() if self.quantized else None,
            "top1_drop": self.top1_drop,
            "agreement": self.agreement,
            "output_sqnr_db": sqnr,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def sqnr_db(signal: float, noise: float) -> float:
    """``10·log10(signal / noise)`` with the degenerate cases of the module docstring."""
    if noise == 0.0:
        return math.inf
    ratio = signal / noise
    if math.isnan(ratio):  # the float outputs themselves are not finite
        return math.nan
    if ratio <= 0.0:  # no signal, or infinite noise (outputs that are not finite)
        return -math.inf
    return 10.0 * math.log10(ratio)


def top1(scores: np.ndarray) -> np.ndarray:
    """The top-1 class of each row of ``scores`` (shape ``(n, classes)``)."""
    return np.argmax(scores, axis=1)


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among their ``k`` highest scores."""
    classes = scores.shape[1]
    if k >= classes:
        return int(labels.shape[0])
    # Label is in the top k iff fewer than k scores beat it (ties counted in its favour).
    own = np.take_along_axis(scores, labels[:, None], axis=1)
    better = np.count_nonzero(scores > own, axis=1)
    return int(np.count_nonzero(better < k))


@dataclass(kw_only=True)
class Tally:
    """Running counts over the batches of one evaluation (mutable, internal to the runner)."""

    samples: int = 0
    labelled: bool = False
    fp32_top1: int = 0
    fp32_top5: int = 0
    quant_top1: int = 0
    quant_top5: int = 0
    agree: int = 0
    scored: bool = False
    signal: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    class_outputs: tuple[str, ...] = ()
    class_same: int = 0
    class_total: int = 0
    float_nonfinite: int = 0
    quantized_nonfinite: int = 0

    def add_classes(self, fp32: np.ndarray, quantized: np.ndarray) -> None:
        """Count the positions whose argmax over the last axis is the same for both models."""
        if fp32.ndim == 0 or fp32.shape[-1] < 2:
            return
        a, b = np.argmax(fp32, axis=-1), np.argmax(quantized, axis=-1)
        self.class_same += int(np.count_nonzero(a == b))
        self.class_total += int(a.size)

    def add_scores(
        self, fp32: np.ndarray, quantized: np.ndarray, labels: np.ndarray | None
    ) -> None:
        """Count one batch of class scores (shape ``(n, classes)``) and optional labels."""
        self.scored = True
        a, b = top1(fp32), top1(quantized)
        self.agree += int(np.count_nonzero(a == b))
        if labels is not None:
            self.labelled = True
            self.fp32_top1 += int(np.count_nonzero(a == labels))
            self.quant_top1 += int(np.count_nonzero(b == labels))
            self.fp32_top5 += topk_hits(fp32, labels, TOP5)
            self.quant_top5 += topk_hits(quantized, labels, TOP5)

    def add_output(self, name: str, fp32: np.ndarray, quantized: np.ndarray) -> None:
        """Accumulate one batch of a float output for its SQNR (sums in float64); a noise sum
        that is not finite (NaN or inf outputs, or overflow) counts as infinite."""
        f = fp32.astype(np.float64, copy=False).ravel()
        q = quantized.astype(np.float64, copy=False).ravel()
        with np.errstate(invalid="ignore", over="ignore"):
            d = f - q
            noise = float(d @ d)
        signal = float(f @ f)
        if not (math.isfinite(signal) and math.isfinite(noise)):  # else every value is finite
            finite = np.isfinite(f)
            self.float_nonfinite += int(f.size - np.count_nonzero(finite))
            self.quantized_nonfinite += int(np.count_nonzero(finite & ~np.isfinite(q)))
        self.signal[name] = self.signal.get(name, 0.0) + signal
        self.noise[name] = self.noise.get(name, 0.0) + (noise if math.isfinite(noise) else math.inf)

    def report(self) -> AccuracyReport:
        n = max(self.samples, 1)
        fp32 = quant = drop = None
        if self.labelled:
            fp32 = TopK(top1=self.fp32_top1 / n, top5=self.fp32_top5 / n)
            quant = TopK(top1=self.quant_top1 / n, top5=self.quant_top5 / n)
            drop = (self.fp32_top1 - self.quant_top1) / n
        per_output = {k: sqnr_db(self.signal[k], self.noise[k]) for k in self.signal}
        sqnr: OutputSqnr
        sqnr = next(iter(per_output.values())) if len(per_output) == 1 else per_output
        pooled = sqnr_db(sum(self.signal.values()), sum(self.noise.values()))
        classes = self.class_same / self.class_total if self.class_total else None
        return AccuracyReport(
            samples=self.samples,
            fp32=fp32,
            quantized=quant,
            top1_drop=drop,
            agreement=self.agree / n if self.scored else None,
            output_sqnr_db=sqnr,
            pooled_sqnr_db=pooled if self.signal else math.nan,
            class_agreement=classes,
            class_outputs=self.class_outputs,
            float_nonfinite=self.float_nonfinite,
            quantized_nonfinite=self.quantized_nonfinite,
        )
