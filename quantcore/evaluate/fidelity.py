"""The fidelity check of every quantize job: how far the quantized model's outputs moved.

``report["fidelity"]`` (JSON):

- ``inputs``: ``"dataset"`` (the caller's evaluation set: the numbers are those of the
  ``accuracy`` evaluation, not a second run), ``"synthetic"`` (made up from the graph's
  input types and shapes, see ``synthetic.py``; ``input_shapes`` gives one batch's shapes) or
  null when nothing could be run, with ``reason``;
- ``samples``; ``output_sqnr_db``: pooled over every float output (``10·log10(Σf²/Σ(f−q)²)``);
  ``agreement``: the share of positions whose argmax over the last axis is the same, over the
  outputs that look like class scores (``class_outputs``; null when none does);
- ``threshold_db``: the limit under which the job warns, and ``layers`` (null unless it
  warned): the layers that cost most, measured one by one (``attribution.py``);
- ``seconds``: time the job spent on the check beyond the evaluation a dataset already needed
  (on synthetic inputs, the float model's side runs while the model is quantized, see
  ``float_side.py``, and only the wait for it counts);
- ``in_sample`` (only when calibration ran): true, the set's samples also calibrated the
  quantization, so the scores are in-sample.

``warnings`` (the report's list) gets one line when ``output_sqnr_db`` is under the threshold
or the quantized model's outputs are NaN or infinite where the float model's are not (the
block's SQNR is then null), naming the costliest layers; and one when the float model's own
outputs are not finite, so nothing could be measured. The check's own runs (synthetic
inputs, per-layer runs) stop adding measurements once ``budget_s`` has passed; a synthetic
evaluation is a few batches of ``synthetic.BATCH`` samples, so it is short whatever the
model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.compress.pipeline import CodedWeight
from quantcore.evaluate.attribution import layer_costs
from quantcore.evaluate.dataset import EvalSet
from quantcore.evaluate.float_side import FloatSide, prepare
from quantcore.evaluate.runner import _pad, evaluate
from quantcore.evaluate.scores import AccuracyReport
from quantcore.evaluate.synthetic import SyntheticSet

TOP_LAYERS = 5
# Noise is not the model's data: measured on the real models of bench/realmodels at 8 bits,
# synthetic inputs put an OCR detector at 12.9 dB and a recognizer at 18.0 where their real
# inputs give 31.1 and 34.0 (a byte classifier the other way: 70.7 against 51.8).
SYNTHETIC_CAVEAT = (
    " Synthetic inputs can misstate the output SQNR on real data by 15 dB or more either way "
    "(an OCR detector: 12.9 dB synthetic, 31.1 on documents): give an evaluation set "
    "(dataset_id) to measure it on the model's own inputs."
)
ATTRIBUTION_BATCH = 8


@dataclass(frozen=True, kw_only=True)
class FidelityCheck:
    block: dict[str, Any]
    warnings: tuple[str, ...]


def unavailable(reason: str, threshold_db: float) -> FidelityCheck:
    """The block of a job whose models cannot be run (weights-only input)."""
    return FidelityCheck(
        block={"inputs": None, "samples": 0, "output_sqnr_db": None, "agreement": None,
               "class_outputs": [], "threshold_db": threshold_db, "layers": None,
               "seconds": 0.0, "reason": reason},
        warnings=(),
    )  # fmt: skip


def first_batch(evalset: EvalSet | SyntheticSet) -> dict[str, np.ndarray]:
    """A batch of at most ``ATTRIBUTION_BATCH`` samples (padded to a fixed batch size)."""
    fixed = evalset.fixed_batch
    step = fixed if fixed is not None else ATTRIBUTION_BATCH
    feeds, _ = next(iter(evalset.batches(step)))
    if fixed is not None:
        feeds = {k: _pad(v, fixed) if v.ndim and v.shape[0] < fixed else v
                 for k, v in feeds.items()}  # fmt: skip
    return feeds


def check_fidelity(
    float_model: Path,
    quantized_model: Path,
    weights: Sequence[CodedWeight],
    *,
    threshold_db: float,
    budget_s: float,
    evalset: EvalSet | None = None,
    scores: AccuracyReport | None = None,
    batch_size: int = 256,
    threads: int | None = None,
    float_side: Future[FloatSide] | None = None,
) -> FidelityCheck:
    """The fidelity block and warnings (module docstring). With ``evalset``, ``scores`` is
    the evaluation already made on it (its numbers are reused). ``float_side``: the float
    model's side of a synthetic check, prepared while the model was quantized
    (``float_side.prepare``; made here when not given)."""
    start = time.perf_counter()
    deadline = start + budget_s
    inputs: EvalSet | SyntheticSet
    if evalset is not None and scores is not None:
        inputs, label = evalset, "dataset"
        block = scores.fidelity(label)
    else:
        side = (float_side.result() if float_side is not None
                else prepare(float_model, batch_size=batch_size, threads=threads))  # fmt: skip
        if side.inputs is None:
            return unavailable(side.reason, threshold_db)
        inputs, label = side.inputs, "synthetic"
        scores = evaluate(float_model, quantized_model, inputs, batch_size=batch_size,
                          threads=threads, reference=side.reference)  # fmt: skip
        block = {**scores.fidelity(label), "input_shapes": inputs.describe()}
    block.update(threshold_db=threshold_db, layers=None)
    warnings: list[str] = []
    # The raw pooled value: the block's is null when it is not finite, and -inf (outputs
    # that are NaN or infinite where the float model's are not) must warn most of all.
    sqnr = scores.pooled_sqnr_db
    if scores.float_nonfinite:
        warnings.append(
            f"the float model's own outputs hold {scores.float_nonfinite} NaN or infinite "
            f"values on {label} inputs, so how far quantization moved them cannot be measured"
        )
    elif sqnr < threshold_db:
        costs = layer_costs(float_model, weights, first_batch(inputs), deadline=deadline,
                            threads=threads)  # fmt: skip
        block["layers"] = costs.block(TOP_LAYERS)
        named = ", ".join(f"{c.name} ({_alone(c.output_sqnr_db)})"
                          for c in costs.costs[:TOP_LAYERS])  # fmt: skip
        partial = "" if costs.measured == costs.total else (
            f"; {costs.measured} of {costs.total} layers measured within the time budget")
        what = f"output SQNR {sqnr:.1f} dB on {label} inputs is under {threshold_db:g} dB"
        if scores.quantized_nonfinite:
            what = (f"the quantized model's outputs hold {scores.quantized_nonfinite} NaN or "
                    f"infinite values on {label} inputs where the float model's are finite")
        warnings.append(
            f"{what}; the layers that cost most (each quantized alone): {named or 'none measured'}"
            f"{partial}. Leaving them in float (spec 'exclude') or giving them more bits "
            f"(spec 'overrides') helps most.{SYNTHETIC_CAVEAT if label == 'synthetic' else ''}"
        )
    block["seconds"] = round(time.perf_counter() - start, 3)
    return FidelityCheck(block=block, warnings=tuple(warnings))


def _alone(sqnr_db: float) -> str:
    """A layer's score in the warning: -inf is outputs that are NaN or infinite (or lost)."""
    return f"{sqnr_db:.1f} dB alone" if sqnr_db > -math.inf else "outputs not finite alone"
