"""The spec's ``target`` and ``rdoq``: validation that names what is wrong, and round trips."""

from __future__ import annotations

import pytest

from quantcore.errors import InvalidSpecError
from quantcore.spec import Granularity, QuantSpec
from quantcore.target import APPLIED_DEFAULTS, RateTarget


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"target": {"weight_sqnr_db": 0.5}}, "target.weight_sqnr_db=0.5 must be at least 1.0"),
        ({"target": {"weight_sqnr_db": 120}}, "at most 96.0"),
        ({"target": {"bits_per_weight": 16}}, "target.bits_per_weight=16 must be"),
        ({"target": {"bits_per_weight": "3"}}, "target.bits_per_weight='3'"),
        ({"target": 30}, "target=30 must be an object with exactly one of"),
        ({"target": {"weight_sqnr_db": 30, "bits_per_weight": 3}}, "exactly one of"),
        ({"target": {"sqnr": 30}}, "exactly one of weight_sqnr_db, bits_per_weight"),
        ({"target": {"weight_sqnr_db": 30}, "bits": 4}, "leave out bits"),
        ({"target": {"weight_sqnr_db": 30}, "support": "mse"}, "leave out support"),
        ({"target": {"weight_sqnr_db": 30}, "granularity": "channel"},
         "target needs granularity 'layer'"),
        ({"target": {"weight_sqnr_db": 30}, "method": "mulaw"}, "target needs method 'uniform'"),
        ({"target": {"weight_sqnr_db": 30}, "calibration": "gptq"}, "calibration='gptq'"),
        ({"target": {"weight_sqnr_db": 30}, "calibration": "flat"}, "calibration='flat'"),
        ({"rdoq": True}, "rdoq needs granularity 'layer', 'channel' or 'model'"),
        ({"rdoq": True, "granularity": "layer", "method": "log"}, "rdoq needs method 'uniform'"),
        ({"rdoq": "yes"}, "rdoq='yes' must be true, false, 'trellis' or 'auto'"),
        ({"rdoq": "auto"}, 'rdoq="auto" needs a target'),
        ({"rdoq": "trellis"}, 'rdoq="trellis" needs a target'),
        ({"rdoq": "trellis", "bits": 4, "granularity": "layer"}, 'rdoq="trellis" needs a target'),
    ],
)
def test_bad_targets_are_named(spec: dict, fragment: str) -> None:
    with pytest.raises(InvalidSpecError, match=None) as info:
        QuantSpec.from_dict(spec)
    assert fragment in str(info.value)


def test_target_spec_applies_layer_granularity_and_round_trips() -> None:
    spec = QuantSpec.from_dict({"target": {"bits_per_weight": 3.5}, "rdoq": True})
    assert spec.granularity is Granularity.LAYER
    assert spec.target == RateTarget(bits_per_weight=3.5) and spec.rdoq
    applied = spec.to_dict()
    assert applied["target"] == {"bits_per_weight": 3.5} and applied["rdoq"] is True
    assert QuantSpec.from_dict(applied) == spec


def test_applied_defaults_are_what_a_layer_spec_lists() -> None:
    applied = QuantSpec.from_dict({"granularity": "layer"}).to_dict()
    assert {k: applied[k] for k in APPLIED_DEFAULTS} == APPLIED_DEFAULTS


def test_specs_without_target_list_neither_field() -> None:
    applied = QuantSpec.from_dict({"bits": 4}).to_dict()
    assert "target" not in applied and "rdoq" not in applied
    assert QuantSpec.from_dict({"bits": 4, "granularity": "layer", "rdoq": True}).rdoq


def test_trellis_spec_round_trips() -> None:
    spec = QuantSpec.from_dict({"target": {"weight_sqnr_db": 30}, "rdoq": "trellis"})
    assert spec.rdoq and spec.trellis and spec.granularity is Granularity.LAYER
    applied = spec.to_dict()
    assert applied["rdoq"] == "trellis" and "trellis" not in applied
    assert QuantSpec.from_dict(applied) == spec
    assert not QuantSpec.from_dict({"target": {"weight_sqnr_db": 30}, "rdoq": True}).trellis


def test_auto_spec_round_trips() -> None:
    spec = QuantSpec.from_dict({"target": {"bits_per_weight": 3}, "rdoq": "auto"})
    assert spec.rdoq and spec.rdoq_auto and not spec.trellis
    applied = spec.to_dict()
    assert applied["rdoq"] == "auto" and "rdoq_auto" not in applied
    assert QuantSpec.from_dict(applied) == spec
