"""Sweep specs: how the grid expands into points, and the errors before any work."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcore import JobLimits
from quantcore.errors import InvalidSpecError
from quantcore.explore.grid import parse_sweep
from quantcore.explore.search import parse_search

LIMITS = JobLimits()


def test_cartesian_product_pairs_support_values_only_with_valued_supports():
    sweep = parse_sweep(
        {
            "base": {"method": "uniform", "granularity": "model"},
            "grid": {"bits": [2, 3], "support": ["jayant", "value"], "support_value": [1, 2, 3]},
        },
        LIMITS,
    )
    assert len(sweep.points) == 2 * (1 + 3)
    assert [p.values for p in sweep.points[:4]] == [
        {"bits": 2, "support": "jayant"},
        {"bits": 2, "support": "value", "support_value": 1},
        {"bits": 2, "support": "value", "support_value": 2},
        {"bits": 2, "support": "value", "support_value": 3},
    ]
    jayant = sweep.points[0].spec
    assert jayant.quantizer.support == "jayant" and jayant.quantizer.support_value is None
    assert jayant.granularity == "model"  # the base applies to every point
    assert sweep.points[-1].spec.quantizer.bits == 3
    assert sweep.points[-1].spec.quantizer.support_value == 3.0
    assert sweep.to_dict()["points"] == 8


def test_support_values_alone_use_the_base_support():
    sweep = parse_sweep(
        {"base": {"support": "percentile"}, "grid": {"support_value": [99, 99.9]}}, LIMITS
    )
    assert [p.spec.quantizer.support_value for p in sweep.points] == [99.0, 99.9]


def test_methods_get_their_default_support_unless_the_base_names_one():
    base = {"bits": 4, "granularity": "layer"}
    sweep = parse_sweep({"base": base, "grid": {"method": ["uniform", "mulaw"]}}, LIMITS)
    assert [p.spec.quantizer.support for p in sweep.points] == ["jayant", "max_abs"]
    # Blocks keep their whole range whatever the method.
    base = {"bits": 4}
    sweep = parse_sweep({"base": base, "grid": {"method": ["uniform", "deadzone"]}}, LIMITS)
    assert [p.spec.quantizer.support for p in sweep.points] == ["max_abs", "max_abs"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"base": {}, "grid": {}}, "the sweep has no points"),
        ({"base": {}, "grid": {"bits": []}}, "grid.bits=[] must be a non-empty list"),
        ({"base": {}, "grid": {"bits": [2, 2]}}, "grid.bits=[2, 2] repeats a value"),
        ({"base": {}, "grid": {"colour": ["red"]}}, "grid has unknown field(s): colour"),
        ({"base": {}, "grid": {"support_value": [1.0]}}, "needs a support that takes a value"),
        (
            {"base": {}, "grid": {"support": ["jayant", "hui"], "support_value": [1.0]}},
            "needs a support that takes a value",
        ),
        ({"base": {}, "grid": {"bits": [2, 17]}}, "grid point 1 {'bits': 17}: bits=17 must be"),
        (
            {"base": {}, "grid": {"support": ["percentile"], "support_value": [50, 120]}},
            "grid point 1",
        ),
        ({"base": {"mu": -1}, "grid": {"bits": [2]}}, "mu=-1 must be greater than 0"),
        ({"base": {}, "grid": {"bits": [2]}, "extra": 1}, "unknown field(s): extra"),
        ({"base": [], "grid": {"bits": [2]}}, "base must be a JSON object"),
        (
            {
                "base": {},
                "grid": {
                    "bits": list(range(1, 17)),
                    "method": ["uniform", "log", "float", "mulaw", "deadzone"],
                },
            },
            "80 points, more than the limit of 64",
        ),
    ],
)
def test_bad_sweeps_are_refused_with_a_message_naming_the_problem(spec, message):
    with pytest.raises(InvalidSpecError) as err:
        parse_sweep(spec, LIMITS)
    assert message in err.value.message


def test_the_limit_comes_from_the_job_limits():
    spec = {"base": {}, "grid": {"bits": [2, 3, 4]}}
    assert len(parse_sweep(spec, JobLimits(max_sweep_points=3)).points) == 3
    with pytest.raises(InvalidSpecError, match="3 points, more than the limit of 2"):
        parse_sweep(spec, JobLimits(max_sweep_points=2))


def test_points_that_resolve_to_the_same_spec_are_refused():
    with pytest.raises(InvalidSpecError, match=r"grid points 1 .* and 3 .* give the same spec"):
        parse_sweep({"grid": {"method": ["uniform", "float"], "bits": [3, 4]}}, LIMITS)
    with pytest.raises(InvalidSpecError, match=r"candidates 0 .* and 1 .* give the same spec"):
        parse_search({"candidates": {"bits": [3, 4], "method": ["float"]}}, LIMITS)


@given(
    bits=st.lists(st.integers(2, 8), min_size=1, max_size=3, unique=True),
    supports=st.lists(
        st.sampled_from(["jayant", "hui", "wmax", "value", "percentile"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    values=st.lists(st.sampled_from([1.0, 2.5, 50.0, 99.9]), min_size=1, max_size=3, unique=True),
)
def test_point_count_follows_the_expansion_rule(bits, supports, values):
    grid = {"bits": bits, "support": supports}
    if any(s in ("value", "percentile") for s in supports):
        grid["support_value"] = values
    sweep = parse_sweep({"grid": grid}, JobLimits(max_sweep_points=1000))
    per_bits = sum(len(values) if s in ("value", "percentile") else 1 for s in supports)
    assert len(sweep.points) == len(bits) * per_bits
    for point in sweep.points:
        quantizer = point.spec.quantizer
        takes_value = quantizer.support in ("value", "percentile")
        assert (quantizer.support_value is not None) == takes_value


def test_search_candidates_follow_the_sweep_rule_for_a_base_threshold():
    base = {"support": "value", "support_value": 2.0}
    sweep = parse_sweep({"base": base, "grid": {"support": ["jayant", "value"]}}, LIMITS)
    search = parse_search({"base": base, "candidates": {"support": ["jayant", "value"]}}, LIMITS)
    for points in (sweep.points, search.points):
        assert [p.spec.quantizer.support_value for p in points] == [None, 2.0]
