"""Spec ``calibration="auto"``: which calibration a job resolves it to, and why."""

from __future__ import annotations

import pytest

from quantcore.jobs.auto_calibration import (
    FLAT_MIN_BITS,
    SYNTHETIC_MAX_BITS,
    SYNTHETIC_MAX_PARAMS,
    resolve_calibration,
)
from quantcore.limits import JobLimits
from quantcore.spec import Calibration, QuantSpec

LIMITS = JobLimits()


def _resolve(spec: dict, *, has_graph: bool = True, parameters: int = 10**6,
             token_inputs: bool = False):  # fmt: skip
    return resolve_calibration(QuantSpec.from_dict(spec), has_graph=has_graph,
                               parameters=parameters, limits=LIMITS,
                               token_inputs=token_inputs)  # fmt: skip


@pytest.mark.parametrize("granularity", ["auto", "group"])
def test_blocks_of_uniform_codes_from_6_bits_get_flat(granularity: str) -> None:
    spec, why = _resolve({"bits": FLAT_MIN_BITS, "granularity": granularity})
    assert spec.calibration is Calibration.FLAT and why is not None and "flat inputs" in why
    spec, why = _resolve({"bits": FLAT_MIN_BITS - 1, "granularity": granularity})
    assert spec.calibration is Calibration.NONE and why is not None and "below 6 bits" in why


@pytest.mark.parametrize("granularity", ["auto", "group"])
def test_token_models_up_to_4_bits_get_synthetic(granularity: str) -> None:
    spec, why = _resolve({"bits": SYNTHETIC_MAX_BITS, "granularity": granularity},
                         token_inputs=True)  # fmt: skip
    assert spec.calibration is Calibration.SYNTHETIC and why is not None and "token" in why
    for bits in (SYNTHETIC_MAX_BITS + 1, FLAT_MIN_BITS):
        spec, why = _resolve({"bits": bits, "granularity": granularity}, token_inputs=True)
        assert spec.calibration is Calibration.NONE and why is not None and "token ids" in why


@pytest.mark.parametrize(
    ("spec", "kw", "fragment"),
    [
        ({"bits": 8}, {"has_graph": False}, "weights only"),
        ({"bits": 8, "granularity": "channel"}, {}, "granularity 'channel'"),
        ({"target": {"weight_sqnr_db": 30}}, {}, "rate target or rdoq"),
        ({"bits": 8, "method": "mulaw"}, {}, "mulaw codes"),
        ({"bits": 8}, {"parameters": LIMITS.fidelity_max_params + 1}, "parameters are over"),
        ({"bits": 4}, {"token_inputs": True, "has_graph": False}, "weights only"),
        ({"bits": 4, "method": "mulaw"}, {"token_inputs": True}, "mulaw codes"),
        ({"bits": 4}, {"token_inputs": True, "parameters": SYNTHETIC_MAX_PARAMS + 1},
         "calibrated on synthetic token inputs by default"),
    ],
)
def test_everything_else_rounds_plainly(spec: dict, kw: dict, fragment: str) -> None:
    resolved, why = _resolve(spec, **kw)
    assert resolved.calibration is Calibration.NONE
    assert why is not None and fragment in why, why


def test_a_chosen_calibration_is_kept() -> None:
    for value in ("none", "bias", "gptq", "flat", "synthetic"):
        spec, why = _resolve({"bits": 8, "calibration": value})
        assert spec.calibration.value == value and why is None
