"""``search`` jobs: the smallest package whose accuracy drop stays within a budget.

Spec (JSON)::

    {"base": {<a quantize spec>},
     "max_top1_drop": 0.01,
     "candidates": {"bits": [2, 3, 4, 5, 6, 7, 8], "method": ["uniform", "deadzone"]},
     "mixed_precision": true}

- ``max_top1_drop`` (default 0.01, seed 004's table 6): the largest accepted drop, a fraction
  in [0, 1]. With labels it bounds the top-1 drop (fp32 top-1 minus quantized top-1). Without
  labels it bounds the disagreement, 1 − agreement (the share of samples whose top-1 class
  changes): the top-1 drop can never exceed the disagreement, so the budget holds either way.
- ``candidates``: a grid with the fields and expansion rules of a sweep
  (``quantcore.explore.grid``); default ``{"bits": [2, ..., 8]}``.
- ``mixed_precision`` (default true): after the uniform phase, try lowering single layers.

The search needs an evaluation set (the job is refused without one).

The path, every step of which the report lists:

1. Uniform phase: every candidate is quantized and evaluated; the smallest package within the
   budget is the starting point. When none is, the candidate with the smallest drop is chosen
   and ``met_budget`` is false.
2. Sensitivity: from the current configuration, each layer is lowered alone by one bit (a
   spec override matching exactly its name) and the drop measured.
3. Greedy mixed precision: the layers whose lowering alone stayed within the budget are
   lowered in order of increasing sensitivity (ties: the larger saving first), each kept
   only if the whole model stays within the budget. A layer whose lowering broke the budget
   (in step 2 or 3) is not tried again.
4. Steps 2 and 3 repeat from the new configuration (layers can go down several bits) until a
   round lowers nothing or no layer can go lower (1 bit).

Steps 2 to 4 are skipped for method ``float``, whose width comes from its exponent and
mantissa bits.

The chosen configuration is the smallest package among all steps within the budget. The number
of evaluations is capped at ``JobLimits.max_sweep_points``; the search stops there and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quantcore.errors import InvalidSpecError
from quantcore.explore.grid import SweepPoint, build_points, check_count, expand, parse_grid
from quantcore.explore.sweep import Measurement
from quantcore.limits import JobLimits
from quantcore.spec import MIN_BITS, Method, QuantSpec

DEFAULT_BUDGET = 0.01
DEFAULT_CANDIDATES: dict[str, list[Any]] = {"bits": [2, 3, 4, 5, 6, 7, 8]}


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    base: dict[str, Any]
    max_top1_drop: float
    candidates: dict[str, list[Any]]
    points: tuple[SweepPoint, ...]
    mixed_precision: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "max_top1_drop": self.max_top1_drop,
            "candidates": {k: list(v) for k, v in self.candidates.items()},
            "mixed_precision": self.mixed_precision,
        }


def parse_search(spec: Any, limits: JobLimits) -> SearchSpec:
    """Validate a search spec (module docstring); raises ``InvalidSpecError``."""
    if not isinstance(spec, dict):
        raise InvalidSpecError(f"spec must be a JSON object, got {type(spec).__name__}")
    known = {"base", "max_top1_drop", "candidates", "mixed_precision"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise InvalidSpecError(
            f"a search spec has unknown field(s): {', '.join(unknown)}; known fields: "
            f"{', '.join(sorted(known))}"
        )
    base = spec.get("base", {})
    if not isinstance(base, dict):
        raise InvalidSpecError(f"base must be a JSON object, got {type(base).__name__}")
    budget = spec.get("max_top1_drop", DEFAULT_BUDGET)
    if (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not 0.0 <= float(budget) <= 1.0
    ):
        raise InvalidSpecError(
            f"max_top1_drop={budget!r} must be a fraction between 0 and 1 (0.01 is one percent)"
        )
    mixed = spec.get("mixed_precision", True)
    if not isinstance(mixed, bool):
        raise InvalidSpecError(f"mixed_precision={mixed!r} must be true or false")
    candidates = parse_grid(spec.get("candidates", DEFAULT_CANDIDATES))
    if not candidates:
        raise InvalidSpecError("candidates has no points: give it at least one list, e.g. bits")
    check_count(base, candidates, limits, "search's candidates")
    raw = expand(base, candidates)
    points = build_points(base, raw, label="candidate")
    return SearchSpec(
        base=base,
        max_top1_drop=float(budget),
        candidates=candidates,
        points=points,
        mixed_precision=mixed,
    )


@dataclass(frozen=True, kw_only=True)
class Step:
    """One evaluation on the search's path."""

    action: str
    values: dict[str, Any]  # the grid values or the overrides this step applies
    measurement: Measurement
    drop: float
    within_budget: bool


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    criterion: str  # "top1" or "agreement"
    steps: tuple[Step, ...]
    chosen: int  # index into steps
    met_budget: bool
    stopped_at_limit: bool

    @property
    def chosen_step(self) -> Step:
        return self.steps[self.chosen]


Measure = Callable[[QuantSpec], Measurement]


def drop_of(measurement: Measurement) -> tuple[str, float]:
    """The drop the budget bounds: top-1 drop with labels, else 1 − agreement."""
    acc = measurement.accuracy
    if acc is None:
        raise InvalidSpecError("a search needs an evaluation set (dataset) to measure accuracy")
    if acc.top1_drop is not None:
        return "top1", acc.top1_drop
    if acc.agreement is None:
        raise InvalidSpecError(
            "a search needs class scores (a float output of shape (batch, classes)) to measure "
            "accuracy or agreement"
        )
    return "agreement", 1.0 - acc.agreement


def search(
    spec: SearchSpec,
    measure: Measure,
    limits: JobLimits,
    progress: Callable[[float], None] | None = None,
) -> SearchResult:
    """Run the search's path (module docstring) with ``measure`` evaluating one spec."""
    steps: list[Step] = []
    budget = spec.max_top1_drop
    cap = limits.max_sweep_points
    criterion = "top1"

    def run(action: str, values: dict[str, Any], quant: QuantSpec) -> Step:
        nonlocal criterion
        measurement = measure(quant)
        criterion, drop = drop_of(measurement)
        step = Step(
            action=action,
            values=values,
            measurement=measurement,
            drop=drop,
            within_budget=drop <= budget,
        )
        steps.append(step)
        if progress is not None:
            progress(_fraction(len(steps), len(spec.points), cap))
        return step

    for point in spec.points:
        run("candidate", point.values, point.spec)
    within = [i for i, s in enumerate(steps) if s.within_budget]
    met_budget = bool(within)
    stopped = False
    if not met_budget:
        chosen = min(range(len(steps)), key=lambda i: (steps[i].drop, _size(steps[i])))
    else:
        start = min(within, key=lambda i: _size(steps[i]))
        if spec.mixed_precision:
            stopped = _mixed_precision(spec, steps[start], run, cap, len(steps))
        within = [i for i, s in enumerate(steps) if s.within_budget]
        chosen = min(within, key=lambda i: (_size(steps[i]), steps[i].drop))
    return SearchResult(
        criterion=criterion,
        steps=tuple(steps),
        chosen=chosen,
        met_budget=met_budget,
        stopped_at_limit=stopped,
    )


def _fraction(done: int, candidates: int, cap: int) -> float:
    """Progress: the candidates fill the first half; the mixed-precision steps, whose number
    is not known in advance, approach the cap's share of the rest."""
    if done <= candidates:
        return 0.5 * done / max(candidates, 1)
    return 0.5 + 0.5 * min((done - candidates) / max(cap - candidates, 1), 1.0)


def _size(step: Step) -> int:
    return step.measurement.package_bytes


def _with_bits(quant: QuantSpec, bits: dict[str, int]) -> tuple[QuantSpec, dict[str, Any]]:
    """``quant`` with each layer of ``bits`` whose width differs from the spec's set to it by
    an exact-name override; also the step's description (``{"layer_bits": {...}}``)."""
    changed = {n: b for n, b in bits.items() if b != quant.quantizer.bits}
    applied = quant.to_dict()
    by_width: dict[int, list[str]] = {}
    for name, width in sorted(changed.items()):
        by_width.setdefault(width, []).append(name)
    applied["overrides"] = list(applied["overrides"]) + [
        {"match": "^(?:" + "|".join(re.escape(n) for n in names) + ")$", "bits": width}
        for width, names in sorted(by_width.items(), reverse=True)
    ]
    return QuantSpec.from_dict(applied), {"layer_bits": changed}


def _mixed_precision(
    spec: SearchSpec, start: Step, run: Callable[..., Step], cap: int, used: int
) -> bool:
    """Steps 2 and 3 of the module docstring, in rounds; returns True when the cap stopped it."""
    quant = start.measurement.spec
    if quant.quantizer.method is Method.FLOAT:
        return False  # a minifloat's width is set by its exponent and mantissa bits
    width = quant.quantizer.bits
    bits = {layer.name: layer.bits for layer in start.measurement.layers if layer.bits == width}
    # Layers whose lowering broke the budget, alone or on top of the others: other layers only
    # go down from here, so they are not tried again.
    frozen: set[str] = set()
    current = start
    while True:
        probes: list[tuple[float, int, str, Step]] = []
        for name in sorted(bits):
            if name in frozen or bits[name] - 1 < MIN_BITS:
                continue
            if used >= cap:
                return True
            trial, values = _with_bits(quant, {**bits, name: bits[name] - 1})
            step = run(f"sensitivity of {name} at {bits[name] - 1} bits", values, trial)
            used += 1
            if step.within_budget:
                saving = _size(current) - _size(step)
                probes.append((step.drop, -saving, name, step))  # names are unique
            else:
                frozen.add(name)
        if not probes:
            return False
        for i, (_, _, name, probe) in enumerate(sorted(probes)):
            lowered = {**bits, name: bits[name] - 1}
            if i == 0:  # its probe already measured exactly this configuration
                current = probe
            else:
                if used >= cap:
                    return True
                trial, values = _with_bits(quant, lowered)
                step = run(f"lower {name} to {lowered[name]} bits", values, trial)
                used += 1
                if not step.within_budget:
                    frozen.add(name)
                    continue
                current = step
            bits = lowered
