"""A rate or distortion goal in place of a bit width: the spec's ``target`` and ``rdoq``.

``{"target": {"weight_sqnr_db": X}}`` asks for the smallest package whose pooled weight SQNR
(``10 log10(Σ w² / Σ (w - ŵ)²)`` over every quantized tensor) is at least X dB;
``{"target": {"bits_per_weight": R}}`` for the lowest distortion whose codes take at most R
bits per quantized weight (their order-0 entropy, which the package's coder reaches within
0.1%). ``quantcore.compress.allocate`` meets it with one step size shared by every tensor (the
pooled-MSE optimum) and uniform midtread codes; ``"rdoq": true`` picks each code to minimise
distortion plus λ·rate (``quantcore.compress.rdoq``), in target mode or with ``bits``;
``"rdoq": "trellis"`` (with a target only) picks the whole path of codes that way, by
trellis-coded quantization (``quantcore.compress.trellis``); ``"rdoq": "auto"`` (with a target
only) measures both and keeps whichever codes the model smaller
(``quantcore.compress.rdoq_choice``).

Validation lives here, apart from ``quantcore.spec``, so that the two change separately; the
spec calls ``target_fields`` and ``target_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantcore.checks import finite_number
from quantcore.errors import InvalidSpecError
from quantcore.spec_names import GPTQ_CALIBRATIONS

TARGET_FIELDS = frozenset({"target", "rdoq"})
TRELLIS = "trellis"  # the value of ``rdoq`` that asks for trellis-coded quantization
AUTO = "auto"  # the value of ``rdoq`` that asks for the smaller of trellis and scalar RDOQ
# Accepted ranges: below 1 dB or 0.05 bits nothing is left of the weights; past 96 dB or 15
# bits the codes would need more than the 16 bits a container holds.
SQNR_RANGE = (1.0, 96.0)
BPW_RANGE = (0.05, 15.0)
# Fields a target replaces or rules out (it chooses bits, support and granularity itself),
# with the values a spec as applied lists for them (QuantSpec.to_dict at granularity layer),
# which are accepted so that an applied spec validates again.
APPLIED_DEFAULTS: dict[str, Any] = {
    "bits": 8, "support": "jayant", "support_value": None, "overrides": [],
    "rounding": "midrise", "normalize": True, "exponent_bits": 4, "mantissa_bits": 3,
    "mu": 255.0, "deadzone_ratio": 0.4, "group_size": 32, "zero_point": True,
}


@dataclass(frozen=True, kw_only=True)
class RateTarget:
    """Exactly one of the two goals is set."""

    weight_sqnr_db: float | None = None
    bits_per_weight: float | None = None

    def to_dict(self) -> dict[str, float]:
        if self.weight_sqnr_db is not None:
            return {"weight_sqnr_db": self.weight_sqnr_db}
        assert self.bits_per_weight is not None
        return {"bits_per_weight": self.bits_per_weight}


def parse_target(value: Any) -> RateTarget:
    """``{"weight_sqnr_db": X}`` or ``{"bits_per_weight": R}``, in range."""
    known = ("weight_sqnr_db", "bits_per_weight")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in known:
        raise InvalidSpecError(
            f"target={value!r} must be an object with exactly one of {', '.join(known)}, "
            'e.g. {"weight_sqnr_db": 30} or {"bits_per_weight": 3.5}'
        )
    (key, number), = value.items()
    if key == "weight_sqnr_db":
        lo, hi = SQNR_RANGE
        return RateTarget(weight_sqnr_db=finite_number(f"target.{key}", number, lo, hi))
    lo, hi = BPW_RANGE
    return RateTarget(bits_per_weight=finite_number(f"target.{key}", number, lo, hi))


def target_fields(data: dict[str, Any], granularity: str | None) -> dict[str, Any]:
    """The ``target`` and ``rdoq`` values of a spec's JSON, checked against the rest of it.

    ``granularity`` is what the caller named (None: not named). A target sets the bits, the
    support and the granularity (one quantizer per tensor) itself, so naming them too is an
    error; ``rdoq`` needs uniform codes with one affine scale (granularity layer, channel or
    model), since a dead zone moves codes that a block's zero point or a codebook would
    reinterpret."""
    values: dict[str, Any] = {}
    choice = data.get("rdoq")
    if choice in (TRELLIS, AUTO):
        values.update(rdoq=True, trellis=choice == TRELLIS, rdoq_auto=choice == AUTO)
        if data.get("target") is None:
            raise InvalidSpecError(
                f'rdoq="{choice}" needs a target (its step is chosen for the goal: '
                '{"target": {"weight_sqnr_db": X}}); with bits, use rdoq=true'
            )
    elif "rdoq" in data:
        if not isinstance(choice, bool):
            raise InvalidSpecError(
                f"rdoq={choice!r} must be true, false, 'trellis' or 'auto'")
        values["rdoq"] = choice
    method = data.get("method", "uniform")
    if data.get("target") is not None:
        target = parse_target(data["target"])
        clash = [f for f, v in APPLIED_DEFAULTS.items() if f in data and data[f] != v]
        if clash:
            raise InvalidSpecError(
                f"target chooses the quantizer itself: leave out {', '.join(clash)} "
                "(or drop target and give bits)"
            )
        if granularity not in (None, "layer"):
            raise InvalidSpecError(
                f"target needs granularity 'layer' (one step size per tensor), got "
                f"{granularity!r}"
            )
        if method != "uniform":
            raise InvalidSpecError(f"target needs method 'uniform', got {method!r}")
        if data.get("calibration", "none") in {c.value for c in GPTQ_CALIBRATIONS}:
            raise InvalidSpecError(
                f"target cannot be combined with calibration={data['calibration']!r}")
        values["target"] = target
    elif values.get("rdoq"):
        if method != "uniform":
            raise InvalidSpecError(f"rdoq needs method 'uniform', got {method!r}")
        if granularity not in ("layer", "channel", "model"):
            raise InvalidSpecError(
                "rdoq needs granularity 'layer', 'channel' or 'model' (or a target); got "
                f"{granularity or 'auto'!r}, whose blocks' zero points it cannot move"
            )
    return values


def target_dict(
    target: RateTarget | None, rdoq: bool, trellis: bool = False, auto: bool = False
) -> dict[str, Any]:
    """What ``QuantSpec.to_dict`` adds: nothing for a spec without either (reports unchanged)."""
    out: dict[str, Any] = {}
    if target is not None:
        out["target"] = target.to_dict()
    if rdoq:
        out["rdoq"] = AUTO if auto else TRELLIS if trellis else True
    return out
