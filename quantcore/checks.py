"""Checks of caller values that name the field and the value in their error: whole numbers,
finite numbers in a range, enum members, booleans and regular expressions; and the nesting
depth of JSON text, measured before it is parsed.

Regular expressions are RE2's (``google-re2``): matching takes time linear in the name,
whatever the pattern, so a pattern such as ``^(a+)+$`` cannot keep a worker busy. RE2 has no
backreferences and no lookaround; a pattern that uses them is refused with a message that
says so.
"""

from __future__ import annotations

import functools
import math
import re
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import re2

from quantcore.errors import InvalidSpecError

# Caller patterns: how many one list may hold, how long each may be, and the memory RE2 may
# use to compile one (its default).
MAX_PATTERNS = 256
MAX_PATTERN_CHARS = 1000
_RE2_MAX_MEM = 8 << 20


class Pattern(Protocol):
    """A compiled pattern: what RE2's compiled objects offer the callers here."""

    def search(self, text: str) -> Any: ...


def enum_value(enum: type[StrEnum], name: str, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidSpecError(f"{name}={value!r} is not one of: {allowed}") from None


def whole_number(name: str, value: Any, lo: int, hi: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()))
    ):
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
        raise InvalidSpecError(f"{name}={_short(value)} must be a list of regular expressions")
    if len(value) > MAX_PATTERNS:
        raise InvalidSpecError(
            f"{name} has {len(value)} patterns; at most {MAX_PATTERNS} are accepted"
        )
    for pattern in value:
        compile_pattern(name, pattern)
    return tuple(value)


def compile_pattern(name: str, pattern: str) -> Pattern:
    """``pattern`` compiled by RE2, or ``InvalidSpecError`` naming the field."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidSpecError(
            f"{name}: a pattern of {len(pattern)} characters; at most {MAX_PATTERN_CHARS} "
            "are accepted"
        )
    try:
        return regex(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise InvalidSpecError(
            f"{name}: {_short(pattern)} is not a valid regular expression: {reason} "
            "(patterns are RE2 syntax: no backreferences or lookaround)"
        ) from None


@functools.lru_cache(maxsize=1024)
def regex(pattern: str) -> Pattern:
    """The RE2 object of ``pattern`` (cached: specs name the same patterns for every tensor).

    Raises ``re2.error`` for a pattern RE2 refuses; ``compile_pattern`` turns that into the
    caller's error."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    compiled: Pattern = re2.compile(pattern, options)
    return compiled


def search(pattern: str, text: str) -> bool:
    """Whether RE2's ``pattern`` matches anywhere in ``text`` (linear time)."""
    return regex(pattern).search(text) is not None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# A JSON string, or the rest of the text when it is never closed: every match from a quote
# succeeds and consumes what it scanned, so the scan is linear whatever the text.
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(text: bytes | str) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (0 for a scalar), measured
    without parsing it, so that text too deep to parse is refused before it is.

    Strings are skipped (brackets inside them do not count); text that is not JSON gives some
    number, and the parser's own error follows."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return max(0, int(np.cumsum(steps).max()))
