"""The spec: callers' JSON in, a validated spec with defaults out, errors that name the value."""

from __future__ import annotations

import pytest

from quantcore.errors import InvalidSpecError
from quantcore.spec import Granularity, Method, QuantSpec, Rounding, Support


def test_empty_spec_gets_every_default_filled_in() -> None:
    spec = QuantSpec.from_dict({})
    applied = spec.to_dict()
    assert applied["method"] == "uniform"
    assert applied["bits"] == 8
    assert applied["support"] == "max_abs"
    assert applied["granularity"] == "auto"
    assert (applied["group_size"], applied["zero_point"]) == (32, True)
    assert applied["rounding"] == "midrise"
    assert applied["entropy_coding"] is True
    assert set(applied) == QuantSpec.KNOWN_FIELDS - {"target", "rdoq"}  # listed when set


def test_api_example_spec_round_trips() -> None:
    example = {
        "method": "uniform", "bits": 3, "granularity": "layer", "support": "jayant",
        "support_value": None, "rounding": "midrise", "normalize": True,
        "deadzone_ratio": 0.4, "mu": 255, "exponent_bits": 4, "mantissa_bits": 3,
        "include": [], "exclude": [], "min_elements": 0,
        "overrides": [{"match": "fc3", "bits": 8}], "entropy_coding": True,
    }
    spec = QuantSpec.from_dict(example)
    assert spec.quantizer.bits == 3
    assert spec.quantizer.support is Support.JAYANT
    assert spec.quantizer_for("layer.fc3.weight").bits == 8
    assert spec.quantizer_for("layer.fc1.weight").bits == 3
    assert QuantSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("bits", 0, "bits=0 must be between 1 and 16"),
        ("bits", 17, "bits=17 must be between 1 and 16"),
        ("bits", 2.5, "bits=2.5 must be a whole number"),
        ("bits", True, "bits=True must be a whole number"),
        ("method", "kmeans", "method='kmeans' is not one of"),
        ("support", "widest", "support='widest' is not one of"),
        ("support_value", -1.0, "support_value=-1.0 must be greater than 0"),
        ("deadzone_ratio", 1.5, "deadzone_ratio=1.5 must be at least 0.0 and at most 1.0"),
        ("mu", 0, "mu=0 must be greater than 0"),
        ("granularity", "tensor", "granularity='tensor' is not one of"),
        ("include", ["("], "include: '(' is not a valid regular expression"),
        ("min_elements", -3, "min_elements=-3 must be between 0"),
        ("entropy_coding", "yes", "entropy_coding='yes' must be true or false"),
        ("colour", "red", "unknown field(s): colour"),
    ],
)
def test_out_of_range_fields_are_named_in_the_error(
    field: str, value: object, fragment: str
) -> None:
    with pytest.raises(InvalidSpecError) as info:
        QuantSpec.from_dict({field: value})
    assert fragment in info.value.message
    assert info.value.code == "invalid_spec"


def test_support_value_is_required_for_value_and_percentile() -> None:
    with pytest.raises(InvalidSpecError, match="support='value' needs support_value"):
        QuantSpec.from_dict({"support": "value"})
    with pytest.raises(InvalidSpecError, match=r"support_value=120\.0 must be at most 100"):
        QuantSpec.from_dict({"support": "percentile", "support_value": 120.0})
    spec = QuantSpec.from_dict({"support": "value", "support_value": 2.5})
    assert spec.quantizer.support_value == 2.5


def test_float_method_takes_its_width_from_exponent_and_mantissa() -> None:
    spec = QuantSpec.from_dict({"method": "float", "exponent_bits": 5, "mantissa_bits": 2})
    assert spec.quantizer.bits == 8
    assert spec.quantizer.support is Support.MAX_ABS
    with pytest.raises(InvalidSpecError, match="1 \\+ exponent_bits \\+ mantissa_bits"):
        QuantSpec.from_dict({"method": "float", "exponent_bits": 8, "mantissa_bits": 10})


def test_each_method_gets_its_own_default_support() -> None:
    layer = {"granularity": "layer"}
    assert QuantSpec.from_dict({"method": "mulaw", **layer}).quantizer.support is Support.MAX_ABS
    assert QuantSpec.from_dict({"method": "deadzone", **layer}).quantizer.support is Support.JAYANT


@pytest.mark.parametrize("granularity", ["group", "auto"])
def test_blocks_keep_their_whole_range_unless_a_support_is_named(granularity: str) -> None:
    spec = QuantSpec.from_dict({"granularity": granularity, "method": "deadzone"})
    assert spec.quantizer.support is Support.MAX_ABS
    named = QuantSpec.from_dict({"granularity": granularity, "support": "mse"})
    assert named.quantizer.support is Support.MSE


@pytest.mark.parametrize("granularity", ["group", "auto"])
def test_uniform_blocks_up_to_three_bits_take_the_least_error_clip(granularity: str) -> None:
    def support(data: dict[str, object], name: str = "x") -> Support | None:
        spec = QuantSpec.from_dict({"granularity": granularity, **data})
        assert QuantSpec.from_dict(spec.to_dict()) == spec  # the applied spec says the same
        return spec.quantizer_for(name).support

    assert support({"bits": 3}) is support({"bits": 2}) is Support.MSE
    assert support({"bits": 4}) is support({"bits": 3, "method": "mulaw"}) is Support.MAX_ABS
    assert support({"bits": 3, "support": "max_abs"}) is Support.MAX_ABS
    # Overrides follow the rule for their own bits, unless the caller named a support.
    assert support({"bits": 8, "overrides": [{"match": "x", "bits": 3}]}) is Support.MSE
    assert support({"bits": 3, "overrides": [{"match": "x", "bits": 8}]}) is Support.MAX_ABS
    named = {"bits": 8, "support": "max_abs", "overrides": [{"match": "x", "bits": 3}]}
    assert support(named) is Support.MAX_ABS
    assert QuantSpec.from_dict({"bits": 3, "granularity": "channel"}).quantizer.support is (
        Support.JAYANT)


@pytest.mark.parametrize(("method", "from_bits"), [("uniform", 5), ("deadzone", 4)])
def test_channels_keep_their_whole_range_from_a_few_bits(method: str, from_bits: int) -> None:
    def support(data: dict[str, object], name: str = "x") -> Support | None:
        spec = QuantSpec.from_dict({"granularity": "channel", "method": method, **data})
        assert QuantSpec.from_dict(spec.to_dict()) == spec  # the applied spec says the same
        return spec.quantizer_for(name).support

    assert support({"bits": from_bits}) is support({"bits": 8}) is Support.MAX_ABS
    assert support({"bits": from_bits - 1}) is Support.JAYANT
    assert support({"bits": 8, "support": "jayant"}) is Support.JAYANT
    # Overrides follow the rule for their own bits, unless the caller named a support.
    low = from_bits - 1
    assert support({"bits": 8, "overrides": [{"match": "x", "bits": low}]}) is Support.JAYANT
    assert support({"bits": low, "overrides": [{"match": "x", "bits": 8}]}) is Support.MAX_ABS
    assert support({"bits": 8, "overrides": [{"match": "y", "bits": low}]}) is Support.MAX_ABS
    assert support({"bits": 8, "overrides": [{"match": "x", "method": "log"}]}) is (
        Support.MAX_ABS)
    # Per layer the papers' design stays.
    layer = QuantSpec.from_dict({"granularity": "layer", "method": method, "bits": 8})
    assert layer.quantizer.support is Support.JAYANT


@pytest.mark.parametrize(
    ("value", "message"),
    [(48, "power of two"), (8, "between 16 and 1024"), (2048, "between 16 and 1024"),
     (32.5, "whole number"), ("32", "whole number")],
)
def test_group_size_is_a_power_of_two_in_range(value: object, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        QuantSpec.from_dict({"granularity": "group", "group_size": value})


def test_override_changing_method_starts_from_that_methods_default_support() -> None:
    spec = QuantSpec.from_dict(
        {"bits": 3, "overrides": [{"match": "^conv", "method": "mulaw", "mu": 100}]}
    )
    conv = spec.quantizer_for("conv1.weight")
    assert conv.method is Method.MULAW
    assert conv.support is Support.MAX_ABS
    assert conv.bits == 3
    assert conv.mu == 100.0


def test_last_matching_override_wins() -> None:
    spec = QuantSpec.from_dict(
        {"overrides": [{"match": "fc", "bits": 4}, {"match": "fc2", "bits": 6}]}
    )
    assert spec.quantizer_for("fc1").bits == 4
    assert spec.quantizer_for("fc2").bits == 6


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ("fc", "overrides='fc' must be a list"),
        ([{"bits": 4}], "must be an object with a 'match'"),
        ([{"match": "fc"}], "overrides[0] changes nothing"),
        ([{"match": "fc", "bits": 40}], "overrides[0].bits=40 must be between 1 and 16"),
        ([{"match": "fc", "granularity": "model"}], "overrides[0] has unknown field(s)"),
        ([{"match": "[", "bits": 4}], "overrides[0].match: '[' is not a valid"),
    ],
)
def test_bad_overrides_are_named_by_index(overrides: object, fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        QuantSpec.from_dict({"overrides": overrides})
    assert fragment in info.value.message


def test_combinations_that_cannot_work_are_refused() -> None:
    with pytest.raises(InvalidSpecError, match="midtread"):
        QuantSpec.from_dict({"bits": 1, "rounding": "midtread"})
    with pytest.raises(InvalidSpecError, match="dead-zone"):
        QuantSpec.from_dict({"bits": 1, "method": "deadzone"})


def test_spec_must_be_an_object() -> None:
    with pytest.raises(InvalidSpecError, match="spec must be a JSON object, got list"):
        QuantSpec.from_dict([1, 2])


def test_enums_parse_from_their_values() -> None:
    spec = QuantSpec.from_dict({"granularity": "channel", "rounding": "midtread", "bits": 4})
    assert spec.granularity is Granularity.CHANNEL
    assert spec.quantizer.rounding is Rounding.MIDTREAD
    assert spec.quantizer.levels == 16


@pytest.mark.parametrize("field", ["bits", "min_elements", "exponent_bits", "group_size"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e400])
def test_non_finite_whole_numbers_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(InvalidSpecError, match=f"{field}=.* must be a whole number"):
        QuantSpec.from_dict({field: value})


@pytest.mark.parametrize(
    ("value", "ok"), [(2**62, True), (2**62 + 1, False), (10**400, False), (4.0, True)]
)
def test_min_elements_boundary(value: object, ok: bool) -> None:
    if ok:
        assert QuantSpec.from_dict({"min_elements": value}).min_elements == value
    else:
        with pytest.raises(InvalidSpecError, match="must be between 0 and"):
            QuantSpec.from_dict({"min_elements": value})


def test_patterns_are_re2_and_match_in_linear_time() -> None:
    """The pattern that backtracks for minutes in Python's re answers at once."""
    import time

    spec = QuantSpec.from_dict({
        "include": ["^(a+)+$"], "overrides": [{"match": "^(a+)+$", "bits": 4}],
    })
    hostile = "a" * 34 + "!"
    started = time.perf_counter()
    for _ in range(100):
        assert spec.quantizer_for(hostile).bits == spec.quantizer.bits
    assert time.perf_counter() - started < 1.0
    assert spec.quantizer_for("aaaa").bits == 4


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"include": ["(a)\\1"]}, "is not a valid regular expression"),
        ({"exclude": ["(?<=x)y"]}, "no backreferences or lookaround"),
        ({"overrides": [{"match": "(?=x)", "bits": 4}]}, "overrides[0].match"),
        ({"include": ["a" * 1001]}, "at most 1000 are accepted"),
        ({"include": ["a"] * 257}, "at most 256 are accepted"),
        ({"overrides": [{"match": "a", "bits": 4}] * 257}, "at most 256 are accepted"),
    ],
)
def test_patterns_re2_refuses_are_named(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        QuantSpec.from_dict(spec)
    assert fragment in info.value.message


def test_pattern_limits_boundary_is_accepted() -> None:
    spec = QuantSpec.from_dict({"include": ["a" * 1000] + ["b"] * 255})
    assert len(spec.include) == 256


def test_calibration_is_validated_and_applied() -> None:
    assert QuantSpec.from_dict({}).to_dict()["calibration"] == "auto"
    assert QuantSpec.from_dict({"calibration": "auto", "granularity": "layer"}).calibration
    for value in ("auto", "none", "bias", "gptq", "flat"):
        assert QuantSpec.from_dict({"calibration": value}).to_dict()["calibration"] == value
    assert QuantSpec.from_dict({"calibration": "bias", "granularity": "channel"}).calibration
    with pytest.raises(InvalidSpecError, match="calibration"):
        QuantSpec.from_dict({"calibration": "awq"})
    with pytest.raises(InvalidSpecError, match="calibration='gptq' needs granularity"):
        QuantSpec.from_dict({"calibration": "gptq", "granularity": "channel"})
    with pytest.raises(InvalidSpecError, match="calibration='flat' needs granularity 'group'"):
        QuantSpec.from_dict({"calibration": "flat", "granularity": "layer"})
    assert QuantSpec.from_dict({"calibration": "flat", "granularity": "group"}).calibration
