"""Batched onnxruntime evaluation of a float model and its quantized counterpart.

Both models see the same batches, streamed from the ``.npz`` (see ``dataset.py``), so memory
holds one batch of inputs and outputs at a time whatever the size of the set. A model whose
batch dimension is fixed to ``b`` is run in batches of exactly ``b`` (``b = 1``: sample by
sample); a last partial batch is padded by repeating its last sample and the padded rows'
outputs are dropped.

The scores output (first float output of rank 2) gives top-1/top-5 and agreement; every float
output gives an output SQNR (see ``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from quantcore.errors import InvalidDatasetError, InvalidModelError
from quantcore.evaluate.dataset import EvalSet, scores_output
from quantcore.evaluate.metrics import AccuracyReport, Tally


def session(model: bytes | Path, *, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with onnxruntime's default graph optimisations; ``threads`` caps the
    intra- and inter-op thread pools (None: onnxruntime's default, one per core)."""
    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InvalidModelError(f"onnxruntime cannot load the model: {exc}") from None


def _scores_name(model: bytes | Path) -> str | None:
    proto = (
        onnx.load_from_string(model)
        if isinstance(model, bytes)
        else onnx.load(str(model), load_external_data=False)
    )
    found = scores_output(proto)
    return found[0] if found else None


def evaluate(
    float_model: bytes | Path,
    quantized_model: bytes | Path,
    evalset: EvalSet,
    *,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
    threads: int | None = None,
) -> AccuracyReport:
    """Run both models over ``evalset`` and compare them (API.md's ``accuracy`` block).

    ``batch_size`` applies to models with a symbolic batch dimension; ``progress`` receives
    the share of samples done, in (0, 1], after each batch; ``threads`` caps onnxruntime's
    thread pools (a worker that runs several jobs at once sets it).
    """
    if batch_size < 1:
        raise InvalidDatasetError(f"{batch_size=} must be at least 1")
    fixed = evalset.fixed_batch
    step = fixed if fixed is not None else batch_size
    ref = session(float_model, threads=threads)
    quant = session(quantized_model, threads=threads)
    outputs = [o.name for o in ref.get_outputs()]
    float_outputs = [o.name for o in ref.get_outputs() if o.type == "tensor(float)"]
    scores = _scores_name(float_model)
    tally = Tally()
    for feeds, labels in evalset.batches(step):
        n = next(iter(feeds.values())).shape[0]
        if fixed is not None and n < fixed:
            feeds = {k: _pad(v, fixed) for k, v in feeds.items()}
        a = dict(zip(outputs, _run(ref, outputs, feeds), strict=True))
        b = dict(zip(outputs, _run(quant, outputs, feeds), strict=True))
        if scores is not None:
            if labels is not None:
                _check_label_range(labels, a[scores].shape[1])
            tally.add_scores(a[scores][:n], b[scores][:n], labels)
        for name in float_outputs:
            tally.add_output(name, a[name][:n], b[name][:n])
        tally.samples += n
        if progress is not None:
            progress(tally.samples / evalset.samples)
    return tally.report()


def _run(sess: ort.InferenceSession, outputs: list[str], feeds: dict[str, np.ndarray]) -> list:
    try:
        return sess.run(outputs, feeds)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
        raise InvalidDatasetError(f"the model rejected a batch of the dataset: {exc}") from None


def _pad(block: np.ndarray, size: int) -> np.ndarray:
    """Repeat the last row so that ``block`` has ``size`` rows."""
    reps = np.repeat(block[-1:], size - block.shape[0], axis=0)
    return np.concatenate([block, reps], axis=0)


def _check_label_range(labels: np.ndarray, classes: int) -> None:
    high = int(labels.max()) if labels.size else 0
    if high >= classes:
        raise InvalidDatasetError(
            f"labels: {high} is out of range for a model with {classes} classes "
            f"(labels must be in [0, {classes - 1}])"
        )
