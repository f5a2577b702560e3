"""Spec ``calibration="flat"``: data-free GPTQ against the layers' inputs on flat inputs.

Some models hold a few input channels of a layer at a large near-constant value (a bias
after a saturated activation, a pooled squeeze-excite input) beside channels a thousand times
smaller: measured on a real OCR recognizer, one 1x1 convolution's input has a channel fixed
near 19 while the median channel's RMS is 0.017. Each weight reading such a channel turns
its rounding error into an output error hundreds of times larger than its neighbours', on
every input; with many such layers no single tensor is at fault, more bits barely help and
finer blocks do not.

The float model runs on ``LEVELS`` flat inputs (``quantcore.evaluate.flat``): a few samples
whose layer inputs show those channels (and the padding's borders) as they are on any input.
Each Conv/MatMul/Gemm weight is then rounded by GPTQ against that ``XᵀX``, block by block
within the group format's blocks, with one light damping
(``quantcore.compress.gptq.FLAT_DAMP``), which moves each huge channel's rounding error onto
the small channels' weights; a layer keeps plain rounding where that does not lower its
error on the flat inputs. No evaluation set is needed, and no bias correction follows (the
flat inputs' mean is not the real inputs'). Measured on the real models of bench/realmodels
(README, "Real models").

A model that cannot run on the flat inputs (or has no float input to hold flat) is rounded
plainly; the reason, with onnxruntime's error, goes to the report's ``warnings``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from quantcore.evaluate.capture import Capture, capture_stats
from quantcore.evaluate.flat import flat_set
from quantcore.formats.onnx_reader import OnnxModel
from quantcore.limits import JobLimits
from quantcore.spec import Granularity, QuantSpec
from quantcore.spec_defaults import auto_group_size

MAX_ERROR_CHARS = 300


def largest_blocks(spec: QuantSpec, names: Iterable[str]) -> dict[str, int]:
    """The largest block each weight can get under ``spec`` (auto's finer first-layer blocks
    divide it): GPTQ on flat inputs reads only ``H``'s diagonal blocks of that size."""
    if spec.granularity is Granularity.GROUP:
        return dict.fromkeys(names, spec.group_size)
    return {n: auto_group_size(spec.quantizer_for(n).bits) for n in names}


def capture_flat(
    model: OnnxModel, model_path: Path, weights: dict[str, tuple[str, tuple[int, ...]]],
    spec: QuantSpec, limits: JobLimits,
) -> Capture | str:
    """The flat inputs' statistics of ``weights``' layers (marked ``flat``), or why they
    could not be captured."""
    try:
        inputs = flat_set(model.proto)
        if not inputs.has_float_input:  # token ids alone: nothing to hold flat
            return "the model has no float input to hold flat; rounded plainly"
        found = capture_stats(model_path, weights, inputs, max_samples=inputs.samples,
                              max_k=limits.calibration_max_k,
                              blocks=largest_blocks(spec, weights))  # fmt: skip
    except Exception as error:  # any failure to run falls back to plain rounding
        text = " ".join(str(error).split())[:MAX_ERROR_CHARS]
        return (f"the model could not run on flat inputs ({type(error).__name__}: {text}); "
                "rounded plainly")  # fmt: skip
    for stats in found.stats.values():
        stats.flat = True
    return found
