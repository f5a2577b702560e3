"""The float model's side of the fidelity check on synthetic inputs, which needs nothing of the
quantization: inputs the float model accepts, and its outputs on them.

A quantize job runs ``prepare`` on a thread of its own as soon as the model is read, so that
the float model's session, the search for inputs and its runs overlap the quantization
(onnxruntime releases the GIL while it builds a session and while it runs); the check then
builds and runs the quantized model only. Called directly, ``prepare`` does the same work in
line. The float model gets one session, not one for the search and one for the evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from quantcore.evaluate.runner import ReferenceCache, keep_reference, output_roles, session
from quantcore.evaluate.synthetic import LENGTH, SPATIAL, SyntheticSet, synthetic_set
from quantcore.formats.onnx_reader import read_graph

# Sizes tried in turn for symbolic image axes until the float model accepts the inputs;
# then sequence lengths (an audio model's window: silero-vad takes 256 or 512 samples), with
# unnamed free axes first given the batch's size (a recurrent state), then not.
SPATIAL_TRIES = (64, 32, 48, 96, 224)
LENGTH_TRIES = (32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True, kw_only=True)
class FloatSide:
    """Synthetic inputs and the float model's outputs on them (``reference``, as an
    evaluation would have filled it); ``inputs`` None: none was found, ``reason`` says why."""

    inputs: SyntheticSet | None
    reason: str
    reference: ReferenceCache


def _search(
    proto: onnx.ModelProto, sess: ort.InferenceSession
) -> tuple[SyntheticSet, list[np.ndarray]] | str:
    """A synthetic set the float model runs on and the session's outputs on its first batch
    (the evaluation's first, which need not be run again), or why none was found."""
    outputs = [o.name for o in sess.get_outputs()]
    error = ""
    for candidate in _candidates(proto):
        feeds, _ = next(iter(candidate.batches(candidate.batch)))
        try:
            found = sess.run(outputs, feeds)
        except Exception as exc:  # onnxruntime's Fail/InvalidArgument/RuntimeException
            error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            continue
        return candidate, found
    return f"the model rejected inputs synthesised from its graph: {error}"


def _candidates(proto: onnx.ModelProto) -> Iterator[SyntheticSet]:
    """The synthetic sets to try, in order, each shape of inputs once."""
    tried: set[tuple[tuple[int, ...], ...]] = set()
    tries = [(spatial, LENGTH, False) for spatial in SPATIAL_TRIES] + [
        (SPATIAL, length, anonymous) for anonymous in (True, False) for length in LENGTH_TRIES
    ]
    for spatial, length, anonymous in tries:
        candidate = synthetic_set(proto, spatial=spatial, length=length, anonymous_batch=anonymous)
        shapes = tuple(i.shape for i in candidate.inputs)
        if shapes not in tried:
            tried.add(shapes)
            yield candidate


def prepare(float_model: Path, *, batch_size: int, threads: int | None = None) -> FloatSide:
    """Find synthetic inputs for ``float_model`` and keep its outputs on them, for an
    evaluation at ``batch_size`` (``quantcore.evaluate.runner.evaluate``'s ``reference``)."""
    proto = read_graph(float_model)
    sess = session(float_model, threads=threads)
    found = _search(proto, sess)
    reference = ReferenceCache()
    if isinstance(found, str):
        return FloatSide(inputs=None, reason=found, reference=reference)
    inputs, first = found
    keep_reference(reference, sess, output_roles(proto), inputs, batch_size, first=first)
    return FloatSide(inputs=inputs, reason="", reference=reference)
