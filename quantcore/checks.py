"""Checks of caller values that name the field and the value in their error: whole numbers,
finite numbers in a range, enum members, booleans and regular expressions."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any

from quantcore.errors import InvalidSpecError


def enum_value(enum: type[StrEnum], name: str, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidSpecError(f"{name}={value!r} is not one of: {allowed}") from None


def whole_number(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidSpecError(f"{name}={value!r} must be a whole number")
    if not lo <= int(value) <= hi:
        raise InvalidSpecError(f"{name}={value!r} must be between {lo} and {hi}")
    return int(value)


def finite_number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpecError(f"{name}={value!r} must be a finite number")
    v = float(value)
    if (v <= lo if lo_open else v < lo) or v > hi:
        lo_text = f"greater than {lo}" if lo_open else f"at least {lo}"
        raise InvalidSpecError(f"{name}={value!r} must be {lo_text} and at most {hi}")
    return v


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpecError(f"{name}={value!r} must be true or false")
    return value


def patterns(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidSpecError(f"{name}={value!r} must be a list of regular expressions")
    for pattern in value:
        compile_pattern(name, pattern)
    return tuple(value)


def compile_pattern(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidSpecError(
            f"{name}: {pattern!r} is not a valid regular expression: {exc}"
        ) from None
