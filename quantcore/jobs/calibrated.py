"""What calibration gives a quantize job: the layers' statistics, the report's block, warnings.

Kept apart from ``quantcore.jobs.calibrate`` (which loads onnxruntime) so that a job that does
not calibrate can still say why without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quantcore.compress.hessian import LayerStats
from quantcore.spec_names import GPTQ_CALIBRATIONS, Calibration


@dataclass(kw_only=True)
class Calibrated:
    method: Calibration
    stats: dict[str, LayerStats] = field(default_factory=dict)
    block: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def gptq_stats(self) -> dict[str, LayerStats] | None:
        return self.stats if self.method in GPTQ_CALIBRATIONS else None


def not_run(method: Calibration, reason: str) -> Calibrated:
    """A calibration that did not run: ``method``'s empty block with the ``reason``, which
    ``warnings`` repeats (the caller asked for it)."""
    block: dict[str, Any] = {
        "method": method.value, "inputs": None, "samples": 0, "layers": 0, "of": 0,
        "seconds": 0.0, "bias": [], "skipped": [], "reason": reason,
    }  # fmt: skip
    return Calibrated(method=Calibration.NONE, block=block,
                      warnings=[f"calibration {method.value!r} was not run: {reason}"])


def not_chosen(why: str) -> Calibrated:
    """The block of a job whose ``calibration="auto"`` resolved to plain rounding (nobody
    asked for a calibration: no warning)."""
    found = not_run(Calibration.NONE, why)
    found.block["auto"] = why
    found.warnings.clear()
    return found
