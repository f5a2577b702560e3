"""The quantization spec: what callers send, validated, with every default filled in.

``QuantSpec.from_dict`` is the one place where a caller's JSON becomes a spec; it raises
``InvalidSpecError`` naming the field and the value. ``QuantSpec.to_dict`` gives back the spec
"as applied" (defaults filled in), which is what reports show. Two levels: ``QuantizerSpec``,
how one tensor (or channel) is quantized (method, bits, support, ...); ``QuantSpec``, that plus
what applies to a whole model: granularity, which tensors are quantized (``include``,
``exclude``, ``min_elements``, ``keep_small``), per-tensor ``overrides``, entropy coding, and a
rate or distortion ``target`` in place of bits (validated in ``quantcore.target``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from quantcore.checks import (
    MAX_PATTERNS,
    boolean,
    compile_pattern,
    enum_value,
    finite_number,
    patterns,
    search,
    whole_number,
)
from quantcore.errors import InvalidSpecError
from quantcore.spec_defaults import (
    BLOCKED,
    DEFAULT_SUPPORT,
    GROUP_DEFAULT_SUPPORT,
    unnamed_support,
)
from quantcore.spec_names import (
    GPTQ_CALIBRATIONS,
    Calibration,
    Granularity,
    Method,
    Rounding,
    Support,
)
from quantcore.target import TARGET_FIELDS, RateTarget, target_dict, target_fields

ERROR_FEEDBACK = (Granularity.GROUP, Granularity.AUTO)  # granularities GPTQ runs at
MIN_BITS = 1
MAX_BITS = 16
MAX_MU = 2.0**24


@dataclass(frozen=True, kw_only=True)
class FieldRange:
    """The accepted range of a numeric spec field (what ``GET /v1/quantizers`` publishes)."""

    minimum: float
    maximum: float
    exclusive_minimum: bool = False


# One table for validation and for clients; ``bits`` is MIN_BITS..MAX_BITS.
RANGES: dict[str, FieldRange] = {
    "bits": FieldRange(minimum=MIN_BITS, maximum=MAX_BITS),
    "support_value": FieldRange(minimum=0.0, maximum=1e6, exclusive_minimum=True),
    "deadzone_ratio": FieldRange(minimum=0.0, maximum=1.0),
    "mu": FieldRange(minimum=0.0, maximum=MAX_MU, exclusive_minimum=True),
    "exponent_bits": FieldRange(minimum=1, maximum=8),
    "mantissa_bits": FieldRange(minimum=0, maximum=10),
    "min_elements": FieldRange(minimum=0, maximum=2**62),
    "keep_small": FieldRange(minimum=0.0, maximum=0.5),
    "group_size": FieldRange(minimum=16, maximum=1024),
}

# Group granularity: weights per scale along the reduction axis (a power of two).
DEFAULT_GROUP_SIZE = 32
DEFAULT_KEEP_SMALL = 0.01  # the smallest weights' share in float (formats.small_weights)


def _ranged_int(name: str, field_name: str, value: Any) -> int:
    r = RANGES[field_name]
    return whole_number(name, value, int(r.minimum), int(r.maximum))


def _ranged_float(name: str, field_name: str, value: Any) -> float:
    r = RANGES[field_name]
    return finite_number(name, value, r.minimum, r.maximum, lo_open=r.exclusive_minimum)


@dataclass(frozen=True, kw_only=True)
class QuantizerSpec:
    """How one tensor is quantized.

    ``support`` is ``None`` until resolved: ``resolved()`` fills in the method's default.
    For ``method="float"`` the format is ``1 + exponent_bits + mantissa_bits`` bits and
    ``bits`` is set to that.
    """

    method: Method = Method.UNIFORM
    bits: int = 8
    rounding: Rounding = Rounding.MIDRISE
    support: Support | None = None
    support_value: float | None = None
    normalize: bool = True
    deadzone_ratio: float = 0.4
    mu: float = 255.0
    exponent_bits: int = 4
    mantissa_bits: int = 3

    @property
    def levels(self) -> int:
        """N, the number of representation levels the codes can address (2**bits)."""
        return 1 << self.bits

    def resolved(self) -> QuantizerSpec:
        """The spec with the method's default support and, for floats, bits = 1 + E + M."""
        support = self.support or DEFAULT_SUPPORT[self.method]
        bits = self.bits
        if self.method is Method.FLOAT:
            bits = 1 + self.exponent_bits + self.mantissa_bits
        return dataclasses.replace(self, support=support, bits=bits)


QUANTIZER_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizerSpec))


def _quantizer_from_dict(data: dict[str, Any], base: QuantizerSpec, where: str) -> QuantizerSpec:
    """Validate the quantizer fields of ``data`` on top of ``base``."""
    values: dict[str, Any] = {}
    if "method" in data:
        values["method"] = enum_value(Method, f"{where}method", data["method"])
    if "bits" in data:
        values["bits"] = _ranged_int(f"{where}bits", "bits", data["bits"])
    if "rounding" in data:
        values["rounding"] = enum_value(Rounding, f"{where}rounding", data["rounding"])
    if data.get("support") is not None:
        values["support"] = enum_value(Support, f"{where}support", data["support"])
    if data.get("support_value") is not None:
        values["support_value"] = _ranged_float(
            f"{where}support_value", "support_value", data["support_value"]
        )
    if "normalize" in data:
        values["normalize"] = boolean(f"{where}normalize", data["normalize"])
    if "deadzone_ratio" in data:
        values["deadzone_ratio"] = _ranged_float(
            f"{where}deadzone_ratio", "deadzone_ratio", data["deadzone_ratio"]
        )
    if "mu" in data:
        values["mu"] = _ranged_float(f"{where}mu", "mu", data["mu"])
    if "exponent_bits" in data:
        values["exponent_bits"] = _ranged_int(
            f"{where}exponent_bits", "exponent_bits", data["exponent_bits"]
        )
    if "mantissa_bits" in data:
        values["mantissa_bits"] = _ranged_int(
            f"{where}mantissa_bits", "mantissa_bits", data["mantissa_bits"]
        )
    spec = dataclasses.replace(base, **values).resolved()
    _check_combination(spec, where)
    return spec


def _check_combination(spec: QuantizerSpec, where: str) -> None:
    if spec.method is Method.FLOAT and spec.bits > MAX_BITS:
        raise InvalidSpecError(
            f"{where}exponent_bits={spec.exponent_bits} and "
            f"{where}mantissa_bits={spec.mantissa_bits} give a {spec.bits}-bit float; "
            f"1 + exponent_bits + mantissa_bits must be at most {MAX_BITS}"
        )
    if spec.support is Support.VALUE and spec.support_value is None:
        raise InvalidSpecError(f"{where}support='value' needs {where}support_value (a number > 0)")
    if spec.support is Support.PERCENTILE:
        if spec.support_value is None:
            raise InvalidSpecError(
                f"{where}support='percentile' needs {where}support_value "
                "(a percentile in (0, 100], e.g. 99.9)"
            )
        if spec.support_value > 100.0:
            raise InvalidSpecError(
                f"{where}support_value={spec.support_value} must be at most 100 "
                "when support='percentile'"
            )
    if spec.method is Method.UNIFORM and spec.rounding is Rounding.MIDTREAD and spec.bits < 2:
        raise InvalidSpecError(
            f"{where}bits={spec.bits} is too few for a midtread quantizer: it needs at least 2 "
            "(levels -1, 0, +1)"
        )
    if spec.method is Method.DEADZONE and spec.bits < 2:
        raise InvalidSpecError(
            f"{where}bits={spec.bits} is too few for a dead-zone quantizer: it needs at least 2"
        )


@dataclass(frozen=True, kw_only=True)
class Override:
    """Quantizer fields that replace the spec's for tensors whose name matches ``match``."""

    match: str
    quantizer: QuantizerSpec
    fields: tuple[str, ...]

    def matches(self, name: str) -> bool:
        return search(self.match, name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.match}
        for name in self.fields:
            out[name] = _plain(getattr(self.quantizer, name))
        return out


@dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """A whole job's spec. Build it with ``from_dict``; read it back with ``to_dict``."""

    quantizer: QuantizerSpec = field(
        default_factory=lambda: QuantizerSpec(support=GROUP_DEFAULT_SUPPORT).resolved()
    )
    granularity: Granularity = Granularity.AUTO
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_elements: int = 0
    keep_small: float = DEFAULT_KEEP_SMALL
    overrides: tuple[Override, ...] = ()
    entropy_coding: bool = True
    # Granularity "group" only: weights per group, and whether a uniform quantizer gets an
    # integer zero point per group (asymmetric) or is symmetric about zero.
    group_size: int = DEFAULT_GROUP_SIZE
    zero_point: bool = True
    calibration: Calibration = Calibration.AUTO
    target: RateTarget | None = None  # quantcore.target: a goal instead of bits
    rdoq: bool = False
    trellis: bool = False  # rdoq="trellis": trellis-coded quantization (with a target)
    rdoq_auto: bool = False  # rdoq="auto": trellis or scalar, whichever codes smaller

    KNOWN_FIELDS = frozenset(
        {*QUANTIZER_FIELDS, "granularity", "include", "exclude", "min_elements", "keep_small",
         "overrides", "entropy_coding", "group_size", "zero_point", "calibration", *TARGET_FIELDS}
    )

    @classmethod
    def from_dict(cls, data: Any) -> QuantSpec:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidSpecError(f"spec must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - cls.KNOWN_FIELDS)
        if unknown:
            raise InvalidSpecError(
                f"spec has unknown field(s): {', '.join(unknown)}; "
                f"known fields: {', '.join(sorted(cls.KNOWN_FIELDS))}"
            )
        granularity = Granularity.AUTO
        if "granularity" in data:
            granularity = enum_value(Granularity, "granularity", data["granularity"])
        targeted = target_fields(data, data.get("granularity") and granularity.value)
        granularity = Granularity.LAYER if "target" in targeted else granularity
        # Blocks keep their whole range unless the caller names a support (see AUTO_*).
        blocked = granularity in BLOCKED
        base = QuantizerSpec(support=GROUP_DEFAULT_SUPPORT) if blocked else QuantizerSpec()
        quantizer = _quantizer_from_dict(data, base, "")
        named_support = data.get("support") is not None
        if not named_support:
            rule = unnamed_support(quantizer.method, quantizer.bits, granularity)
            quantizer = dataclasses.replace(quantizer, support=rule)
        values: dict[str, Any] = {"quantizer": quantizer, "granularity": granularity}
        if "include" in data:
            values["include"] = patterns("include", data["include"])
        if "exclude" in data:
            values["exclude"] = patterns("exclude", data["exclude"])
        if "min_elements" in data:
            values["min_elements"] = _ranged_int("min_elements", "min_elements",
                                                 data["min_elements"])
        if "keep_small" in data:
            values["keep_small"] = _ranged_float("keep_small", "keep_small", data["keep_small"])
        if "entropy_coding" in data:
            values["entropy_coding"] = boolean("entropy_coding", data["entropy_coding"])
        if "group_size" in data:
            values["group_size"] = _group_size(data["group_size"])
        if "zero_point" in data:
            values["zero_point"] = boolean("zero_point", data["zero_point"])
        if "overrides" in data:
            values["overrides"] = _overrides(data["overrides"], quantizer,
                                             granularity=granularity,
                                             named_support=named_support)
        if "calibration" in data:
            values["calibration"] = _calibration(data["calibration"], granularity)
        return cls(**values, **targeted)

    def quantizer_for(self, name: str) -> QuantizerSpec:
        """The quantizer for tensor ``name``: the last matching override wins."""
        spec = self.quantizer
        for override in self.overrides:
            if override.matches(name):
                spec = override.quantizer
        return spec

    def to_dict(self) -> dict[str, Any]:
        out = {name: _plain(getattr(self.quantizer, name)) for name in QUANTIZER_FIELDS}
        out.update(
            granularity=self.granularity.value,
            include=list(self.include),
            exclude=list(self.exclude),
            min_elements=self.min_elements,
            keep_small=self.keep_small,
            overrides=[o.to_dict() for o in self.overrides],
            entropy_coding=self.entropy_coding,
            group_size=self.group_size,
            zero_point=self.zero_point,
            calibration=self.calibration.value,
            **target_dict(self.target, self.rdoq, self.trellis, self.rdoq_auto),
        )
        return out


def _calibration(value: Any, granularity: Granularity) -> Calibration:
    chosen = enum_value(Calibration, "calibration", value)
    if chosen in GPTQ_CALIBRATIONS and granularity not in ERROR_FEEDBACK:
        raise InvalidSpecError(f"calibration={chosen.value!r} needs granularity 'group' or "
                               f"'auto' (got {granularity.value!r}): GPTQ runs along its blocks")
    return chosen


def _group_size(value: Any) -> int:
    size = _ranged_int("group_size", "group_size", value)
    if size & (size - 1):
        raise InvalidSpecError(f"group_size={value!r} must be a power of two (16, 32, ..., 1024)")
    return size


def _overrides(
    value: Any, base: QuantizerSpec, *, granularity: Granularity, named_support: bool
) -> tuple[Override, ...]:
    if not isinstance(value, list):
        raise InvalidSpecError(f"overrides={value!r} must be a list of objects")
    if len(value) > MAX_PATTERNS:
        raise InvalidSpecError(
            f"overrides has {len(value)} entries; at most {MAX_PATTERNS} are accepted"
        )
    result = []
    for i, item in enumerate(value):
        where = f"overrides[{i}]."
        if not isinstance(item, dict) or not isinstance(item.get("match"), str):
            raise InvalidSpecError(
                f"overrides[{i}]={item!r} must be an object with a 'match' regular expression "
                "(RE2 syntax)"
            )
        unknown = sorted(set(item) - {"match", *QUANTIZER_FIELDS})
        if unknown:
            raise InvalidSpecError(
                f"overrides[{i}] has unknown field(s): {', '.join(unknown)}; an override may "
                f"set: match, {', '.join(QUANTIZER_FIELDS)}"
            )
        compile_pattern(f"{where}match", item["match"])
        fields_set = tuple(k for k in QUANTIZER_FIELDS if k in item)
        if not fields_set:
            raise InvalidSpecError(f"overrides[{i}] changes nothing: add e.g. 'bits'")
        # An override that changes the method starts from that method's default support
        # (blocks: their whole range, as for the spec itself).
        start = base
        if "method" in item and "support" not in item:
            blocked = granularity in BLOCKED
            start = dataclasses.replace(base, support=GROUP_DEFAULT_SUPPORT if blocked else None)
        quantizer = _quantizer_from_dict(item, start, where)
        # A support nobody named follows the rule for the override's own bits; the applied
        # spec then names it (read back, it is named).
        if not named_support and item.get("support") is None:
            rule = unnamed_support(quantizer.method, quantizer.bits, granularity)
            if rule is not quantizer.support:
                quantizer = dataclasses.replace(quantizer, support=rule)
                fields_set = (*fields_set, "support")
        result.append(Override(match=item["match"], quantizer=quantizer, fields=fields_set))
    return tuple(result)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
