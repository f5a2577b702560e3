"""The spec of a ``sweep`` job: a base quantize spec and a grid, expanded into points.

Shape (JSON)::

    {"base": {<a quantize spec>},
     "grid": {"bits": [2, 3], "method": ["uniform", "deadzone"],
              "granularity": ["model", "layer"], "support": ["jayant", "value"],
              "support_value": [1.0, 1.5, 2.0], "rounding": [...], "deadzone_ratio": [...]}}

Every grid field is optional and, when present, a non-empty list without repeats. The points
are the cartesian product of the fields, except that ``support_value`` only combines with
supports that take a value (``value``: a threshold in standard deviations; ``percentile``: a
percentile of |w|). So ``support: ["jayant", "value"]`` with ``support_value: [1, 2, 3]``
gives jayant once and value three times per combination of the other fields. The support a
point uses is the grid's, else the base spec's, else the method's default.

Rejected with ``InvalidSpecError`` before any work: an unknown grid field, an empty or
repeating list, ``support_value`` when no support of the sweep takes a value, a point whose
spec is invalid (the message names the point), two points that resolve to the same spec,
no points, more points than ``JobLimits.max_sweep_points``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from quantcore.errors import InvalidSpecError
from quantcore.limits import JobLimits
from quantcore.spec import QuantSpec, Support

GRID_FIELDS = (
    "bits",
    "method",
    "granularity",
    "support",
    "support_value",
    "rounding",
    "deadzone_ratio",
)
VALUED_SUPPORTS = frozenset({Support.VALUE.value, Support.PERCENTILE.value})


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One grid point: the grid fields it sets, and the whole spec it runs with."""

    values: dict[str, Any]
    spec: QuantSpec


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    base: dict[str, Any]  # the caller's base spec, as sent
    grid: dict[str, list[Any]]
    points: tuple[SweepPoint, ...]

    def stored(self) -> dict[str, Any]:
        """The spec a job stores and a worker parses again: ``parse_sweep`` takes it as it is."""
        return {"base": dict(self.base), "grid": {k: list(v) for k, v in self.grid.items()}}

    def to_dict(self) -> dict[str, Any]:
        """The sweep as sent, with its point count (what the report shows; each row carries
        its spec as applied)."""
        return {**self.stored(), "points": len(self.points)}


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidSpecError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def parse_grid(value: Any) -> dict[str, list[Any]]:
    """Check the grid's fields and lists (not yet the values: the points' specs do that)."""
    grid = _object("grid", value)
    unknown = sorted(set(grid) - set(GRID_FIELDS))
    if unknown:
        raise InvalidSpecError(
            f"grid has unknown field(s): {', '.join(unknown)}; a grid may vary: "
            f"{', '.join(GRID_FIELDS)}"
        )
    out: dict[str, list[Any]] = {}
    for name in GRID_FIELDS:
        if name not in grid:
            continue
        values = grid[name]
        if not isinstance(values, list) or not values:
            raise InvalidSpecError(f"grid.{name}={values!r} must be a non-empty list")
        if len({repr(v) for v in values}) != len(values):
            raise InvalidSpecError(f"grid.{name}={values!r} repeats a value")
        out[name] = values
    return out


def count_points(base: dict[str, Any], grid: dict[str, list[Any]]) -> int:
    """How many points ``expand`` gives, counted without building them (a grid of a few long
    lists has more points than could ever be listed)."""
    supports = grid.get("support", [base.get("support")])
    values = grid.get("support_value")
    per_support = sum(
        len(values) if values is not None and _valued(s) else 1 for s in supports
    )
    others = [len(grid[k]) for k in GRID_FIELDS if k in grid
              and k not in ("support", "support_value")]
    return math.prod(others) * per_support


def _valued(support: Any) -> bool:
    return isinstance(support, str) and support in VALUED_SUPPORTS


def check_count(base: dict[str, Any], grid: dict[str, list[Any]], limits: JobLimits,
                what: str) -> None:
    """``InvalidSpecError`` when the grid has more points than ``limits`` allows, before any
    point is built."""
    n = count_points(base, grid)
    if n > limits.max_sweep_points:
        raise InvalidSpecError(
            f"the {what} has {n} points, more than the limit of "
            f"{limits.max_sweep_points}; split it into several jobs"
        )


def expand(base: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The grid points (each the dict of grid fields it sets), in grid order."""
    supports = grid.get("support", [base.get("support")])
    values = grid.get("support_value")
    if values is not None and not any(_valued(s) for s in supports):
        raise InvalidSpecError(
            f"grid.support_value={values!r} needs a support that takes a value ('value' or "
            f"'percentile') in grid.support or in base.support; the sweep's supports are "
            f"{supports!r}"
        )
    others = [k for k in GRID_FIELDS if k in grid and k not in ("support", "support_value")]
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*(grid[k] for k in others)):
        fixed = dict(zip(others, combo, strict=True))
        for support in supports:
            with_support = dict(fixed)
            if "support" in grid:
                with_support["support"] = support
            if _valued(support) and values is not None:
                points.extend({**with_support, "support_value": v} for v in values)
            else:
                points.append(with_support)
    return points


def parse_sweep(spec: Any, limits: JobLimits) -> SweepSpec:
    """Validate a sweep spec (module docstring) and build every point's ``QuantSpec``."""
    spec = _object("spec", spec)
    unknown = sorted(set(spec) - {"base", "grid"})
    if unknown:
        raise InvalidSpecError(
            f"a sweep spec has unknown field(s): {', '.join(unknown)}; it holds 'base' (a "
            "quantize spec) and 'grid'"
        )
    base = _object("base", spec.get("base", {}))
    grid = parse_grid(spec.get("grid", {}))
    if not grid:
        raise InvalidSpecError(
            f"the sweep has no points: grid must vary at least one of {', '.join(GRID_FIELDS)}"
        )
    check_count(base, grid, limits, "sweep")
    raw = expand(base, grid)
    return SweepSpec(base=base, grid=grid, points=build_points(base, raw, label="grid point"))


def build_points(
    base: dict[str, Any], raw: list[dict[str, Any]], *, label: str
) -> tuple[SweepPoint, ...]:
    """Each expanded point's spec, ``{**base, **values}``, validated; a base ``support_value``
    is left out of a point whose support takes none. ``InvalidSpecError`` names the point
    (``{label} {i} {values}``); two points with the same spec are refused."""
    points = []
    for i, values in enumerate(raw):
        data = {**base, **values}
        if "support" in values and not _valued(values["support"]):
            data.pop("support_value", None)  # a base threshold does not apply to jayant etc.
        try:
            quant = QuantSpec.from_dict(data)
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"{label} {i} {values}: {exc.message}") from None
        points.append(SweepPoint(values=values, spec=quant))
    reject_duplicates(points, label)
    return tuple(points)


def reject_duplicates(points: list[SweepPoint], label: str) -> None:
    """Two points that resolve to the same spec (e.g. ``bits`` with method ``float``, whose
    width is 1 + exponent_bits + mantissa_bits) would measure the same thing twice."""
    seen: dict[str, int] = {}
    for i, point in enumerate(points):
        key = repr(sorted(point.spec.to_dict().items()))
        if key in seen:
            j = seen[key]
            raise InvalidSpecError(
                f"{label}s {j} {points[j].values} and {i} {point.values} give the same spec "
                "(method 'float' takes its width from exponent_bits and mantissa_bits, not "
                "bits; a support_value only applies to supports 'value' and 'percentile'); "
                "remove one of them"
            )
        seen[key] = i
