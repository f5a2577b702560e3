"""``/v1/quantizers``: the methods, their parameters, ranges and defaults.

Everything is read from the core's spec types (``Method`` and the other enums, ``RANGES``,
``DEFAULT_SUPPORT`` and the defaults of ``QuantizerSpec`` and ``QuantSpec``), so this answer
cannot drift from what validation accepts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import StrEnum
from functools import cache
from typing import Any

from fastapi import APIRouter

from quantcore import DEFAULT_SUPPORT, RANGES, Method, QuantizerSpec, QuantSpec
from service.api.deps import PrincipalDep
from service.api.routers.common import errors
from service.api.schemas import MethodPublic, ParameterPublic, QuantizersPublic

router = APIRouter(prefix="/v1/quantizers", tags=["quantizers"])

_METHOD_TEXT = {
    Method.UNIFORM: "Uniform quantizer (midrise or midtread) over the support region.",
    Method.DEADZONE: "Dead-zone uniform quantizer; deadzone_ratio is its sigma.",
    Method.MULAW: "mu-law companded quantizer.",
    Method.LOG: "Exponential (logarithmic) levels, correlation-maximising design.",
    Method.FLOAT: "Minifloat: sign bit, exponent_bits and mantissa_bits; "
    "bits = 1 + exponent_bits + mantissa_bits.",
}
_COMMON = ("support", "support_value", "normalize")
_METHOD_PARAMS = {
    Method.UNIFORM: ("bits", "rounding", *_COMMON),
    Method.DEADZONE: ("bits", "deadzone_ratio", *_COMMON),
    Method.MULAW: ("bits", "mu", *_COMMON),
    Method.LOG: ("bits", *_COMMON),
    Method.FLOAT: ("exponent_bits", "mantissa_bits", *_COMMON),
}
_TEXT = {
    "method": "Quantizer family.",
    "bits": "Bits per weight (2**bits levels).",
    "rounding": "Uniform quantizer's levels: midrise (no zero level) or midtread.",
    "support": "Support-region threshold rule (in standard deviations after normalisation); "
    "null takes the method's default support per layer; blocks (group, auto) keep their "
    "whole range (max_abs; uniform at 3 bits or fewer: mse), and so do channels for uniform "
    "from 5 bits and deadzone from 4.",
    "support_value": "The threshold for support='value', the percentile for 'percentile'.",
    "normalize": "Quantize the weights divided by their standard deviation.",
    "deadzone_ratio": "Width of the dead zone relative to the step.",
    "mu": "Companding constant of the mu-law quantizer.",
    "exponent_bits": "Exponent bits of the minifloat.",
    "mantissa_bits": "Mantissa bits of the minifloat.",
    "granularity": "One quantizer per model, per tensor (layer), per output channel, or per "
    "group of group_size weights along the weight's reduction axis; auto (the default) takes "
    "groups of 128 at 7 bits and more, 32 below, each keeping its whole range (up to 3 bits, "
    "uniform: each group's clip of least squared error, support mse).",
    "group_size": "Weights per group (a power of two) for granularity 'group'.",
    "zero_point": "Group granularity, uniform method: an integer zero point per group "
    "(asymmetric) rather than a grid symmetric about zero.",
    "include": "RE2 regular expressions (no backreferences or lookaround), at most 256; only "
               "matching tensor names are quantized (all if empty).",
    "exclude": "RE2 regular expressions, at most 256; matching tensor names are left in float.",
    "min_elements": "Tensors with fewer elements are left in float.",
    "keep_small": "The smallest weights stay in float, smallest first, while the bytes they "
    "add stay within this share of the quantized weights' bytes (0: every selected weight is "
    "quantized; not applied with include or a target, nor to a tensor an override names): "
    "they cost a model's output far more than their bytes.",
    "overrides": "[{match: RE2 regex, <quantizer fields>}], at most 256: the last match wins "
                 "for a tensor.",
    "entropy_coding": "Entropy-code the package's codes.",
    "target": "Instead of bits: {\"weight_sqnr_db\": X} (1-96) for the smallest package whose "
    "pooled weight SQNR is at least X, or {\"bits_per_weight\": R} (0.05-15) for the least "
    "distortion at R bits of codes per weight; one step size shared by every tensor "
    "(granularity layer, uniform midtread codes).",
    "rdoq": "Choose each uniform code for distortion plus rate (an adaptive dead zone): with "
    "a target, or with granularity layer, channel or model. \"trellis\" instead of true (with "
    "a target only): trellis-coded quantization, the whole path of codes chosen that way "
    "(about 1.5-3% smaller packages at the same weight SQNR where codes take 2 bits or more, "
    "larger below; model.onnx's codes take one bit more). \"auto\" (with a target only): "
    "both measured, the smaller applied (allocation.rdoq_choice).",
    "calibration": "auto (default): for a graph's uniform codes in blocks, flat at 6 bits and "
    "more when the model has a float input, synthetic up to 4 bits when its inputs are token "
    "ids, none otherwise (the report's calibration.auto says why). With an evaluation set: "
    "bias (shift each Conv/MatMul/Gemm output by the mean its quantization error adds) or gptq "
    "(GPTQ error feedback, then bias); none without. flat: data-free GPTQ against the layer "
    "inputs of flat inputs; synthetic: data-free GPTQ on inputs made up from the graph (no "
    "evaluation set needed for either).",
}


def _enum_of(hint: Any) -> type[StrEnum] | None:
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, StrEnum):
            return c
    return None


def _type_name(hint: Any, default: Any) -> str:
    if _enum_of(hint) is not None or hint is str:
        return "string"
    args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    if any(dataclasses.is_dataclass(a) for a in args):
        return "object"
    if bool in args:
        return "boolean"
    if int in args:
        return "integer"
    if float in args:
        return "number"
    return "array" if isinstance(default, tuple) or typing.get_origin(hint) is tuple else "string"


def _parameter(name: str, hint: Any, default: Any) -> ParameterPublic:
    enum = _enum_of(hint)
    value_range = RANGES.get(name)
    if isinstance(default, StrEnum):
        default = default.value
    elif isinstance(default, tuple):
        default = list(default)
    return ParameterPublic(
        name=name,
        type=_type_name(hint, default),  # type: ignore[arg-type]
        default=default,
        minimum=value_range.minimum if value_range else None,
        maximum=value_range.maximum if value_range else None,
        exclusive_minimum=value_range.exclusive_minimum if value_range else False,
        choices=[m.value for m in enum] if enum else None,
        description=_TEXT.get(name, ""),
    )


@cache
def describe() -> QuantizersPublic:
    parameters = []
    quantizer_hints = typing.get_type_hints(QuantizerSpec)
    for f in dataclasses.fields(QuantizerSpec):
        parameters.append(_parameter(f.name, quantizer_hints[f.name], f.default))
    spec_hints = typing.get_type_hints(QuantSpec)
    for f in dataclasses.fields(QuantSpec):
        if f.name not in QuantSpec.KNOWN_FIELDS:  # the quantizer's own, and derived fields
            continue
        default = f.default if f.default is not dataclasses.MISSING else ()
        parameters.append(_parameter(f.name, spec_hints[f.name], default))
    methods = [
        MethodPublic(name=m.value, description=_METHOD_TEXT[m],
                     default_support=DEFAULT_SUPPORT[m].value,
                     parameters=list(_METHOD_PARAMS[m]))
        for m in Method
    ]
    return QuantizersPublic(methods=methods, parameters=parameters,
                            defaults=QuantSpec().to_dict())


@router.get("", response_model=QuantizersPublic, responses=errors(401, 429),
            summary="Quantization methods, parameters, ranges and defaults")
def get_quantizers(_: PrincipalDep) -> QuantizersPublic:
    return describe()
