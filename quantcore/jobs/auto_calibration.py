"""Spec ``calibration="auto"`` (the default): what a job calibrates with when not told.

At 6 bits and more, a graph's uniform codes in blocks (granularity ``auto`` or ``group``) are
rounded by data-free GPTQ on flat inputs (``flat``, ``quantcore.jobs.flat_gptq``). Measured
on six Conv models of bench/realmodels at 8 bits, output SQNR averaged over two sets of real
inputs: an OCR recognizer, whose layers read channels held near-constant at values a
thousand times their neighbours', went from 20.6 to 34.2 dB (argmax agreement 98.8% to
99.7%), the others moved by −3.1 to +3.9 dB and all stayed above 30 dB. At 6 bits, on the
same two input sets: +2.1 dB on average, the recognizer +8.1/+2.5 (16.3 → 24.4 and 15.7 →
18.2 dB; plain, the lowest of the six on either set), an OCR classifier +11.3/+2.6, an
orientation CNN +2.1/+10.9, a YOLO detector −2.9/−2.3 (38.4 → 35.5, 39.1 → 36.9) and a
CNN-LSTM reader −3.4/−3.5 (28.6 → 25.2, 25.6 → 22.2, its argmax agreement 1.0 → 0.985 and
0.974 → 0.979): the models it costs stay well above the ones it lifts. At 5 bits it lost up
to 12 dB on the orientation CNN, at 4 bits 2.0 dB on the detector and 6 dB on the classifier;
those are rounded plainly.

A model whose inputs are all token ids (or masks: no float input) has nothing to hold flat;
up to 4 bits it gets ``synthetic``: GPTQ on inputs made up from the graph, whose token ids
look up the model's own embedding rows, so that its layers see inputs of about the real
statistics (float noise in place of an image or audio does not: calibrated on it, the Conv
models lost, README "Calibration on the real models"). Measured on the two such models of
bench/realmodels, output SQNR pooled over four sets of real inputs (64 samples), plain
rounding -> ``synthetic`` (RTN int4 block-32 for reference): a byte-level file classifier at 3
bits 24.0 -> 24.8 dB (RTN 24.8), at 4 bits 31.3 -> 38.2 (RTN 34.3; 34.1-38.2 over five draws
of the synthetic inputs); a MiniLM sentence encoder 9.1 -> 9.9 (RTN 9.1), 15.1 -> 15.6 (RTN
15.2). Above 4 bits the classifier gained nothing (5 bits 44.1 -> 43.8, 6 bits 46.6 -> 46.1,
8 bits 55.6 -> 50.1) while the encoder gained 0.2-0.7 dB: token models round plainly there.
GPTQ on full Hessians costs: the classifier's 4-bit job 0.3 -> 2.8 s, the encoder's (17 M
parameters) 2.4 -> 5.3 s, a generated 54 M-parameter transformer's 9.3 -> 42.6 s (with three
dampings); over ``SYNTHETIC_MAX_PARAMS`` the default rounds plainly (``synthetic`` can still
be asked for).

Everything else resolves to ``none``: a weights-only upload (no graph to run), a
granularity without blocks, a rate ``target`` or ``rdoq`` (their own rounding), codebook
methods (GPTQ rounds uniform codes only), and models over ``JobLimits.fidelity_max_params``
(running the float model on the flat inputs would load it whole). A model that has no float
input or cannot run on the flat inputs is rounded plainly too, as ``flat`` does, but without a
warning: nobody asked for it.
"""

from __future__ import annotations

import dataclasses

from quantcore.limits import JobLimits
from quantcore.spec import ERROR_FEEDBACK, Calibration, Method, QuantSpec

# The lowest base bit width that gets flat-input GPTQ, the highest that gets GPTQ on synthetic
# token inputs (see above).
FLAT_MIN_BITS = 6
SYNTHETIC_MAX_BITS = 4
# The largest model the default calibrates on synthetic tokens (its cost, above).
SYNTHETIC_MAX_PARAMS = 32_000_000


def resolve_calibration(
    spec: QuantSpec, *, has_graph: bool, parameters: int, limits: JobLimits,
    token_inputs: bool = False,
) -> tuple[QuantSpec, str | None]:
    """``spec`` with ``calibration="auto"`` replaced by what it means for this model, and
    why (None when the caller chose the calibration). ``token_inputs``: the graph has no
    float input (``SyntheticSet.has_float_input``)."""
    if spec.calibration is not Calibration.AUTO:
        return spec, None
    chosen, why = Calibration.NONE, _why_not(spec, has_graph, parameters, limits, token_inputs)
    if why is None:
        bits = spec.quantizer.bits
        chosen = Calibration.SYNTHETIC if token_inputs else Calibration.FLAT
        why = (f"auto: GPTQ on synthetic token inputs at {bits} bits (the model's inputs are "
               "token ids, which look up its own embeddings)" if token_inputs else
               f"auto: data-free GPTQ on flat inputs at {bits} bits (from {FLAT_MIN_BITS} "
               "bits)")  # fmt: skip
    return dataclasses.replace(spec, calibration=chosen), why


def _why_not(
    spec: QuantSpec, has_graph: bool, parameters: int, limits: JobLimits, token_inputs: bool
) -> str | None:
    base = spec.quantizer
    if not has_graph:
        return "auto: weights only, no graph to calibrate on"
    if spec.target is not None or spec.rdoq:
        return "auto: a rate target or rdoq chooses its own rounding"
    if spec.granularity not in ERROR_FEEDBACK:
        return f"auto: granularity {spec.granularity.value!r} has no blocks to round by GPTQ"
    if base.method is not Method.UNIFORM:
        return f"auto: {base.method.value} codes are rounded plainly"
    if base.bits < FLAT_MIN_BITS and not token_inputs:
        return (f"auto: rounded plainly below {FLAT_MIN_BITS} bits (flat-input GPTQ lost "
                "there on most real models)")  # fmt: skip
    if base.bits > SYNTHETIC_MAX_BITS and token_inputs:
        return (f"auto: rounded plainly above {SYNTHETIC_MAX_BITS} bits (the inputs are token "
                "ids: nothing to hold flat, and GPTQ on synthetic tokens gained nothing "
                "there)")  # fmt: skip
    if token_inputs and parameters > SYNTHETIC_MAX_PARAMS:
        return (f"auto: {parameters:,} parameters are over the {SYNTHETIC_MAX_PARAMS:,} that are "
                "calibrated on synthetic token inputs by default (GPTQ's time grows with the "
                "model); rounded plainly")  # fmt: skip
    if parameters > limits.fidelity_max_params:
        return (f"auto: {parameters:,} parameters are over the {limits.fidelity_max_params:,} "
                "that are run in onnxruntime without a dataset")  # fmt: skip
    return None
