"""The submission form's quantizer fields, from the table ``GET /v1/quantizers`` serves:
each field's label, control, choices, range and default, and a value to start from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.api.schemas import ParameterPublic, QuantizersPublic

LABELS = {
    "method": "Method", "bits": "Bits", "rounding": "Rounding", "support": "Support",
    "support_value": "Support value", "normalize": "Normalize",
    "deadzone_ratio": "Dead-zone ratio", "mu": "Mu", "exponent_bits": "Exponent bits",
    "mantissa_bits": "Mantissa bits", "granularity": "Granularity", "group_size": "Group size",
    "zero_point": "Zero point", "include": "Include", "exclude": "Exclude",
    "min_elements": "Min elements", "keep_small": "Keep small in float (share)",
    "overrides": "Overrides (JSON)",
    "entropy_coding": "Entropy coding",
}


@dataclass(frozen=True, kw_only=True)
class FormField:
    name: str
    label: str
    control: str  # select, checkbox, text, list, json
    choices: list[str]
    hint: str
    methods: list[str]  # the methods that read it; empty: every method
    value: Any  # the value the control starts with (text for text controls)
    default: Any
    numeric: str  # "integer", "number" or ""


def _range_text(p: ParameterPublic) -> str:
    if p.choices:
        return ""
    low, high = p.minimum, p.maximum
    if low is None and high is None:
        return ""
    lo = "" if low is None else f"{low:g}"
    hi = "" if high is None else f"{high:g}"
    if p.exclusive_minimum:
        return f"Above {lo}, at most {hi}." if hi else f"Above {lo}."
    return f"From {lo} to {hi}." if hi else f"At least {lo}."


def _default_text(p: ParameterPublic) -> str:
    if p.name == "support" and p.default is None:
        return "Default: the method's own (see Method)."
    if p.default in (None, [], ""):
        return "Default: none."
    if isinstance(p.default, bool):
        return f"Default: {'on' if p.default else 'off'}."
    return f"Default: {p.default}."


def _control(p: ParameterPublic) -> str:
    if p.choices:
        return "select"
    if p.type == "boolean":
        return "checkbox"
    if p.name == "overrides" or p.type == "object":
        return "json"
    if p.type == "array":
        return "list"
    return "text"


def _text(control: str, value: Any) -> Any:
    if control == "checkbox":
        return bool(value)
    if control == "list":
        return ", ".join(str(v) for v in value or [])
    if control == "json":
        return json.dumps(value) if value else ""
    return "" if value is None else str(value)


def form_fields(catalogue: QuantizersPublic, prefill: dict[str, Any]) -> list[FormField]:
    """One field per spec parameter, starting at ``prefill``'s value or the default."""
    users: dict[str, list[str]] = {}
    for method in catalogue.methods:
        for name in method.parameters:
            users.setdefault(name, []).append(method.name)
    fields = []
    for p in catalogue.parameters:
        control = _control(p)
        value = prefill.get(p.name, p.default)
        hint = " ".join(part for part in (p.description, _range_text(p), _default_text(p))
                        if part)
        fields.append(FormField(
            name=p.name, label=LABELS.get(p.name, p.name.replace("_", " ").capitalize()),
            control=control, choices=list(p.choices or []), hint=hint,
            methods=users.get(p.name, []), value=_text(control, value), default=p.default,
            numeric=p.type if p.type in ("integer", "number") else "",
        ))
    return fields
