"""Parsing the JSON a caller sends (a request body, a multipart ``spec`` field) so that no
text makes a 500: the depth is measured before parsing (``quantcore.json_depth``), the
non-standard constants ``NaN``, ``Infinity`` and ``-Infinity`` are refused, as are numbers
that overflow to infinity (``1e400``) or have more digits than any field takes, and a NUL
character anywhere (PostgreSQL's text cannot hold it) is refused naming where it is.
"""

from __future__ import annotations

import json
from typing import Any

from quantcore import json_depth
from service.errors import BadRequestError, ServiceError

MAX_NUMBER_DIGITS = 40


class _NotJson(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"the number {text[:50]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NotJson(f"a number of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def _nul_at(value: Any, where: str) -> str | None:
    """Where a NUL character is in ``value`` (a path such as ``spec.include[0]``), if any."""
    if isinstance(value, str):
        return where or "the top" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\x00" in key:
                return f"a key of {where or 'the top'}"
            found = _nul_at(item, path)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_at(item, f"{where}[{i}]")
            if found:
                return found
    return None


def parse_json(
    data: bytes | str,
    *,
    what: str,
    max_depth: int,
    error: type[ServiceError] = BadRequestError,
    code: str | None = None,
) -> Any:
    """``data`` parsed, or ``error`` (400 ``bad_request`` unless told) naming ``what`` was
    sent and what is wrong with it."""
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{what} nests {depth} levels deep; at most {max_depth} are accepted",
                    code=code, details={"depth": depth, "limit_depth": max_depth})
    try:
        value = json.loads(data, parse_constant=_constant, parse_float=_float,
                           parse_int=_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise error(f"{what} is not valid JSON: {exc}", code=code) from None
    where = _nul_at(value, "")
    if where is not None:
        raise error(f"{what} holds a NUL character (\\u0000) at {where}; text cannot hold it",
                    code=code, details={"at": where})
    return value
