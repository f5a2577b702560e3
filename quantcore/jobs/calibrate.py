"""Calibration of a quantize job (spec ``calibration``): GPTQ and bias correction.

- ``bias``: the inputs' mean of every Conv/MatMul/Gemm layer whose weight is quantized is
  captured (``quantcore.evaluate.capture``); after quantization each layer's output is
  shifted by ``-ΔW·E[x]`` per channel (``quantcore.compress.bias_shift.output_shift``, written by
  ``quantcore.formats.bias``), so the quantized layer's output mean is the float one's on the
  calibration inputs.
- ``gptq``: the inputs' Hessian ``XᵀX`` is captured too, each such weight is rounded by GPTQ
  in the group quantizer's format (kept only where it lowers the layer's output error on
  those inputs), then the bias is corrected as above.
- ``flat``: GPTQ as above on the inputs' Hessian over flat inputs instead of a dataset
  (data-free, ``quantcore.jobs.flat_gptq``), without bias correction.
- ``synthetic``: GPTQ as above on ``SYNTHETIC_SAMPLES`` samples of inputs made up from the
  graph (``quantcore.evaluate.synthetic``; another seed than the fidelity check's, so the
  check does not score the samples the weights were fitted to), without bias correction.
  Data-free; meant for models whose inputs are token ids, which look up the model's own
  embedding rows (``quantcore.jobs.auto_calibration``).

Inputs (``bias``, ``gptq``): the job's evaluation set (at most
``JobLimits.calibration_samples`` samples of it). Without one, calibration is not run: inputs
made up from the graph do not have a float input's real statistics (measured on the real
models of bench/realmodels, see ``bench/realmodels/calibration.py``), and the report says so
in ``warnings``.

The report's ``calibration`` block: ``method``, ``inputs`` (``"dataset"``, ``"flat"``,
``"synthetic"`` or null),
``samples``, ``layers`` (weights calibrated) ``of`` (weights quantized), ``seconds`` (capture
of the inputs; GPTQ's own time is in ``quantize_s``), ``bias`` (how each shift was written)
and ``skipped`` (``{name, reason}`` of quantized weights left uncalibrated).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.compress.bias_shift import output_shift
from quantcore.compress.pipeline import QuantizedModel, select_tensors
from quantcore.evaluate.capture import capture_stats
from quantcore.evaluate.dataset import EvalSet
from quantcore.evaluate.synthetic import SyntheticSet, synthetic_set
from quantcore.formats.bias import shift_outputs
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.formats.onnx_writer import WrittenModel
from quantcore.jobs.calibrated import Calibrated, not_run
from quantcore.limits import JobLimits
from quantcore.spec import Calibration, QuantSpec
from quantcore.spec_names import DATA_FREE_CALIBRATIONS

MAX_SKIPPED_ROWS = 50
# ``synthetic``'s inputs: not the fidelity check's seed (``synthetic.SEED``), and 64 samples:
# with 12, a byte-level classifier's output SQNR moved by up to 10 dB from one seed to the
# next; with 64, within 34-38 dB (plain rounding: 31.3). A free batch axis takes them in
# batches of 16 (the capture's time is mostly per batch: half of it at batches of 4).
SYNTHETIC_SEED = 1
SYNTHETIC_SAMPLES = 64
SYNTHETIC_BATCH = 16
# One damping, still checked against plain rounding on the held-out half: choosing among
# ``gptq.DAMPS`` on synthetic samples gave the same output SQNR (magika 38.2 dB at 4 bits
# either way, minilm 15.55 against 15.52) for twice GPTQ's time.
SYNTHETIC_DAMPS = (0.1,)


def synthetic_inputs(model: OnnxModel) -> SyntheticSet:
    found = dataclasses.replace(synthetic_set(model.proto), seed=SYNTHETIC_SEED)
    batch = SYNTHETIC_BATCH if found.free_batch else (found.fixed_batch or 1)
    return found.rebatched(batch, -(-SYNTHETIC_SAMPLES // batch))


def capture(
    model: Any, model_path: Path, spec: QuantSpec, evalset: EvalSet | None, limits: JobLimits,
    auto: str | None = None,
) -> Calibrated | None:
    """The calibration inputs' statistics for ``spec`` (None when calibration is off).
    ``auto``: why ``calibration="auto"`` chose this method (in the block as ``auto``); a
    method nobody asked for that cannot run says so in the block, not in ``warnings``."""
    found = _capture(model, model_path, spec, evalset, limits)
    if found is not None and auto is not None:
        reason = found.block.get("reason")
        found.block["auto"] = auto if not reason else f"{auto}; not run: {reason}"
        found.warnings.clear()
    return found


def _capture(
    model: Any, model_path: Path, spec: QuantSpec, evalset: EvalSet | None, limits: JobLimits
) -> Calibrated | None:
    method = spec.calibration
    if method is Calibration.NONE:
        return None
    if not isinstance(model, OnnxModel):
        return not_run(method, f"{model_path.name} holds weights only: no graph to run")
    if evalset is None and method not in DATA_FREE_CALIBRATIONS:
        return not_run(method, "no evaluation set was given to calibrate on (inputs made up "
                        "from the graph mislead it: see the calibration block's reason)")
    selected = select_tensors(model, spec).quantize
    weights: dict[str, tuple[str, tuple[int, ...]]] = {}
    skipped: dict[str, str] = {}
    for name in selected:
        source = model.sources[name]
        if source.graph_path != "graph":
            skipped[name] = "inside a subgraph: rounded plainly (no calibration)"
            continue
        weights[name] = (source.value_name, tuple(int(d) for d in source.tensor.dims))
    start = time.perf_counter()
    if method is Calibration.FLAT:  # data-free: an evaluation set is only evaluated on
        from quantcore.jobs.flat_gptq import capture_flat

        flat = capture_flat(model, model_path, weights, spec, limits)
        if isinstance(flat, str):
            return not_run(method, flat)
        found = flat
    else:
        synthetic = method is Calibration.SYNTHETIC  # data-free too
        inputs = synthetic_inputs(model) if synthetic else evalset
        assert inputs is not None  # checked above
        found = capture_stats(
            model_path, weights, inputs, max_samples=limits.calibration_samples,
            max_k=limits.calibration_max_k, hessian=method is not Calibration.BIAS,
        )  # fmt: skip
        if synthetic:
            for stats in found.stats.values():
                stats.damps = SYNTHETIC_DAMPS
    skipped.update(found.notes)
    block = {
        "method": method.value, "samples": found.samples,
        "inputs": method.value if method in DATA_FREE_CALIBRATIONS else "dataset",
        "layers": len(found.stats), "of": len(selected),
        "seconds": round(time.perf_counter() - start, 3), "bias": [],
        "skipped": [{"name": n, "reason": r} for n, r in list(skipped.items())[:MAX_SKIPPED_ROWS]],
    }  # fmt: skip
    return Calibrated(method=method, stats=found.stats, block=block)


def correct_bias(calibrated: Calibrated, qmodel: QuantizedModel, written: WrittenModel) -> None:
    """Shift each calibrated layer's output by ``-ΔW·E[x]`` in ``written`` (before the
    source model is closed: the float weights are read from it)."""
    model = qmodel.source
    # Made-up inputs' mean is not the real inputs' (measured: a byte-level classifier lost 1.2
    # dB at 4 bits with the shift on synthetic inputs).
    made_up = calibrated.method in DATA_FREE_CALIBRATIONS
    if not calibrated.stats or made_up or not isinstance(model, OnnxModel):
        return
    coded = qmodel.coded
    shifts: dict[str, np.ndarray] = {}
    for name, stats in calibrated.stats.items():
        if name not in coded:
            continue
        original = model.array(name)
        shift, kept = output_shift(stats, original, coded[name].dequantized())
        g = stats.geometry
        shape = (g.rows, *([1] * len(g.kernel))) if g.op == "Conv" else (g.rows,)
        dtype = original.dtype if original.dtype.kind == "f" else np.dtype(np.float32)
        shifts[model.sources[name].value_name] = shift.astype(dtype).reshape(shape)
        coded[name].layer.setdefault("notes", []).append(
            f"bias corrected: output mean shifted by up to {float(np.abs(shift).max()):.3g} on "
            f"{kept} of {g.rows} channels (the others' mean error differs between halves of "
            "the calibration samples)")
    calibrated.block["bias"] = shift_outputs(written.proto, shifts)
